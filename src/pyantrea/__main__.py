import sys

from pyantrea.cli import main

sys.exit(main())
