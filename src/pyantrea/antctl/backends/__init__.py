"""antctl's backends: the same questions (`Backend`) answered offline (`OfflineBackend`, a cluster
folder) or live (`live.LabBackend`, the running lab's controller and agents)."""

from pyantrea.antctl.backends.base import (
    Backend,
    ClusterQueries,
    OfflineBackend,
    TraceResult,
    backend_for,
    flow_json,
    hop_flow,
)

__all__ = ["Backend", "ClusterQueries", "OfflineBackend", "TraceResult", "backend_for", "flow_json", "hop_flow"]
