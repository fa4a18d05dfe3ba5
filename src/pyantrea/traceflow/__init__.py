"""Traceflow and reachability: walk packets from end to end through the nodes' real flows (issue 4)."""

from pyantrea.traceflow.engine import Engine, TraceflowError
from pyantrea.traceflow.model import HostStep, Outcome, Packet, PassStep, Path

__all__ = ["Engine", "HostStep", "Outcome", "Packet", "PassStep", "Path", "TraceflowError"]
