"""One exception hierarchy. Every message names the object and the problem, for a user to read."""

from __future__ import annotations

import sys
from typing import TextIO


class PyantreaError(Exception):
    """Base of every error pyantrea reports to a user."""


class ManifestError(PyantreaError):
    """A cluster folder is invalid. Carries every problem found, each naming file, document and object."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NotFoundError(PyantreaError):
    """A named object (Pod, Node, Service, table...) does not exist."""


class InvalidArgument(PyantreaError):
    """A command-line or API argument is malformed."""


class OVSError(PyantreaError):
    """An OVS tool failed. The message has the command and what OVS said."""


class CNIError(PyantreaError):
    """A CNI failure with its spec error code (CNI spec 1.0, "Error" section)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(f"CNI error {code}: {msg}" + (f" ({details})" if details else ""))


def report(e: PyantreaError, out: TextIO | None = None, what: str = "in the cluster folder") -> int:
    """Print an error for a user (every problem of a ManifestError on its own line); returns exit code 1."""
    out = out or sys.stderr
    if isinstance(e, ManifestError):
        print(f"Error: {len(e.problems)} problem(s) {what}:", file=out)
        for p in e.problems:
            print(f"  {p}", file=out)
    else:
        print(f"Error: {e}", file=out)
    return 1
