"""One exception hierarchy. Every message names the object and the problem, for a user to read."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from typing import TextIO

EXIT_SIGPIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


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


def run_cli(body: Callable[[], int], what: str = "in the cluster folder") -> int:
    """Run a command line's body; the one place the three CLIs (pyantrea, antctl, pyantrea lab)
    turn errors into exit statuses: a PyantreaError is reported (exit 1); a stdout whose reader
    has gone (`antctl ... | head -1`) ends the command quietly with 141, as SIGPIPE would, with
    no traceback and no "Exception ignored" at exit."""
    try:
        try:
            code = body()
        except SystemExit:  # argparse's --help and usage errors
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
        return code
    except PyantreaError as e:
        return report(e, what=what)
    except BrokenPipeError as e:
        if not _stdout_closed():
            print(f"Error: {e}", file=sys.stderr)  # a socket's, not stdout's: a real error
            return 1
        _discard_stdout()
        return EXIT_SIGPIPE


def _stdout_closed() -> bool:
    """stdout is a pipe or socket whose reader has gone (poll says POLLERR / POLLHUP)."""
    try:
        p = select.poll()
        p.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))
    except (OSError, ValueError):
        return True


def _discard_stdout() -> None:
    """Point stdout's fd at /dev/null, so that what is still buffered goes nowhere at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
