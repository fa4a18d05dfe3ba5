"""The last module of the suite: `lab down` removes everything the lab (and the tests) created, and
nothing of another lab (a user's pa-* lab stays up)."""

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
    # other labs (a user's pa-*): their underlay namespaces live as long as they do
    others = [n for n in os.listdir("/var/run/netns") if n.endswith("underlay") and not n.startswith(lab.prefix)]
    lab.lab("down")
    assert [r.pid for r in refs if r.alive()] == []
    assert lab_netns(lab.prefix) == []
    assert [n for n in others if not Path("/var/run/netns", n).exists()] == []  # not ours: left alone
    assert not Path("/etc/netns").exists() or [n for n in os.listdir("/etc/netns") if n.startswith(lab.prefix)] == []
    assert not lab.root.exists()
    assert lab.lab("down").returncode == 0
    p = lab.lab("status", check=False)
    assert p.returncode != 0 and "no lab is up" in p.stderr
