"""Shared unit-test helpers: a cluster written as Kubernetes YAML, loaded the way `--cluster DIR` is."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pyantrea.k8s.complete import load_cluster
from pyantrea.offline import OfflineCluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Callable[..., OfflineCluster]:
    """make_cluster(yaml_text, ...) -> OfflineCluster.

    Each argument is the text of one YAML file (multi-document allowed); the files are written into a
    fresh folder under tmp_path and loaded with `load_cluster` (design §3 cluster folder).
    """
    counter = itertools.count()

    def make(*files: str) -> OfflineCluster:
        d = tmp_path / f"cluster{next(counter)}"
        d.mkdir()
        for i, text in enumerate(files):
            (d / f"{i:02d}.yaml").write_text(textwrap.dedent(text).strip("\n") + "\n")
        return OfflineCluster(load_cluster(d))

    return make
