"""Reading the file of `pyantrea lab apply|delete -f FILE`, before anything is sent: one request
carries it whole, so it must be UTF-8 text of at most the API's body limit (4 MiB)."""

from __future__ import annotations

import os
import stat
import sys

from pyantrea.httpapi import MAX_BODY
from pyantrea.k8s.loader import not_utf8
from pyantrea.lab.netns import LabError

__all__ = ["read_manifest"]

_LIMIT = f"over the {MAX_BODY // (1024 * 1024)} MiB limit of one request"


def read_manifest(file: str) -> str:
    """The text of ``file`` ('-': stdin, named ``<stdin>``). Raises LabError naming the file when it cannot be read,
    is over the limit (a regular file's size is checked before it is read, any other is read at
    most one byte past the limit) or is not UTF-8 (naming the first bad byte and its offset)."""
    name = "<stdin>" if file == "-" else file
    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_BODY + 1)
        else:
            with open(file, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and st.st_size > MAX_BODY:
                    raise LabError(f"{file}: {st.st_size} bytes: {_LIMIT}")
                data = f.read(MAX_BODY + 1)
    except OSError as e:
        raise LabError(f"{name}: {e.strerror or e}") from None
    if len(data) > MAX_BODY:
        raise LabError(f"{name}: more than {MAX_BODY} bytes: {_LIMIT}")
    problem = not_utf8(data)
    if problem is not None:
        raise LabError(f"{name}: {problem}")
    return data.decode("utf-8")
