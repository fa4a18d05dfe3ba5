"""antctl output formats: Antrea's table format (spec §12.1), JSON and YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

MAX_LIST_CELL = 50


def list_cell(items: Sequence[str], max_len: int = MAX_LIST_CELL) -> str:
    """Sorted, comma-joined, cut at `max_len` with a ` + N more...` summary (Antrea's rule)."""
    items = sorted(items)
    out = ""
    for i, item in enumerate(items):
        val = item if i == 0 else "," + item
        if len(out) + len(val) > max_len:
            return out + f" + {len(items) - i} more..."
        out += val
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[str]], sort: bool = True) -> str:
    """Columns padded to the longest cell; columns after the first are prefixed by one space."""
    if not rows:
        return "\n"
    rows = [[c if c != "" else "<NONE>" for c in r] for r in rows]
    if sort:
        rows = sorted(rows, key=lambda r: list(r))
    if len(header) == 1:
        return "\n".join([header[0], *[r[0] for r in rows]]) + "\n"
    cols = list(zip(*([list(header)] + [list(r) for r in rows])))
    widths = []
    for i, col in enumerate(cols):
        widths.append(max(len(c) + (1 if i else 0) for c in col))
    lines = []
    for r in [list(header)] + [list(x) for x in rows]:
        parts = []
        for i, c in enumerate(r):
            cell = c if i == 0 else " " + c
            parts.append(cell.ljust(widths[i]))
        lines.append("".join(parts))
    return "\n".join(lines) + "\n"


def dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
    raise ValueError(fmt)
