"""antctl's backends: the same questions (`Backend`) answered offline (`OfflineBackend`, a cluster
folder) or live (`live.LabBackend`, the running lab's controller and agents)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyantrea.antctl.backends.base import Backend, ClusterQueries, TraceResult, flow_json, hop_flow
from pyantrea.antctl.backends.offline import OfflineBackend

__all__ = ["Backend", "ClusterQueries", "OfflineBackend", "TraceResult", "backend_for", "flow_json", "hop_flow"]


@contextlib.contextmanager
def backend_for(cluster_dir: str | None, lab_dir: str | None = None) -> Iterator[Backend]:
    if cluster_dir:
        b = OfflineBackend(cluster_dir)
        try:
            yield b
        finally:
            b.close()
        return
    from pyantrea.antctl.backends.live import LabBackend  # the live lab

    lb = LabBackend(lab_dir)
    try:
        yield lb
    finally:
        lb.close()
