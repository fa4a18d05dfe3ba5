"""The last module of the suite: `lab down` removes everything the lab (and the tests) created."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .reltools import RelLab, lab_netns


def test_down_leaves_nothing(lab: RelLab) -> None:
    from pyantrea.lab.procs import ProcRef

    state = json.loads((lab.root / "lab.json").read_text())
    refs: list[ProcRef] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            r = ProcRef.from_json(o)
            if r is not None:
                refs.append(r)
            for v in o.values():
                walk(v)

    walk(state)
    assert len(refs) >= 1 + 3 * 3 + 6
    lab.lab("down")
    assert [r.pid for r in refs if r.alive()] == []
    assert lab_netns() == []
    assert not Path("/etc/netns").exists() or [n for n in os.listdir("/etc/netns") if n.startswith("pa-")] == []
    assert not lab.root.exists()
    assert lab.lab("down").returncode == 0
    p = lab.lab("status", check=False)
    assert p.returncode != 0 and "no lab is up" in p.stderr
