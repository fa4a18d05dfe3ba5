"""``python -m pyantrea.lab COMMAND ...`` = ``pyantrea lab COMMAND ...``."""

import sys

from pyantrea.lab.cli import main

sys.exit(main())
