"""Prometheus metrics (issue 13): one registry per process, served as `GET /metrics` on the
component's own socket, in the Prometheus text format, with the names Antrea documents
(docs/prometheus-integration.md).

Metrics are `prometheus_client` objects (Counter, Gauge, Histogram) in a `CollectorRegistry` that
belongs to the component (never the client's global one), so that several agents and controllers
can live in one process (tests) without sharing values. Values that are state (flow counts, Pods,
policies) are read when scraped (`StateCollector`); events (flow operations, CNI requests, syncs)
are counted as they happen.

One deviation from `prometheus_client`'s exposition: it appends `_total` to every counter's name
(its `_created` series are switched off: Antrea has none). Antrea's counters carry no suffix (`antrea_agent_ovs_flow_ops_count`,
`antrea_controller_network_policy_processed`), as the Go client exposes them; `exposition` renders
the registry with `generate_latest` and gives the counters Antrea's names back, so that queries and
dashboards written for Antrea work unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "MS_BUCKETS", "Metrics", "StateCollector",
           "exposition", "gauge"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latencies in milliseconds: Antrea's histograms are in ms; the client's default buckets are seconds-sized.
disable_created_metrics()  # no `_created` series (Antrea's Go client has none)
MS_BUCKETS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def gauge(name: str, doc: str, labels: Iterable[str] = (),
          samples: Iterable[tuple[tuple[str, ...], float]] = ()) -> GaugeMetricFamily:
    """A gauge family with its samples ((label values, value) pairs)."""
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, v in samples:
        g.add_metric(list(values), v)
    return g


class StateCollector(Collector):
    """Gauges read from the component's state at each scrape; a failing reader is left out of that
    scrape (a metrics request never fails because, say, OVS is restarting)."""

    def __init__(self, readers: Iterable[Callable[[], Iterable[Metric]]]):
        self.readers = list(readers)

    def collect(self) -> Iterator[Metric]:
        for read in self.readers:
            try:
                families = list(read())
            except Exception:  # noqa: BLE001 - one missing family, not a failed scrape
                continue
            yield from families


@dataclass
class Metrics:
    """A component's registry (with the process metrics Antrea lists: process_cpu_seconds_total,
    process_resident_memory_bytes, process_open_fds, ...)."""

    registry: CollectorRegistry
    counters: set[str]

    @classmethod
    def new(cls) -> "Metrics":
        reg = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=reg)
        return cls(reg, set())

    def counter(self, name: str, doc: str, labels: Iterable[str] = (), total: bool = False) -> Counter:
        """A counter exposed as `name` (Antrea's counters), or with `total` as `name_total` (the
        Kubernetes libraries' counters, e.g. apiserver_watch_events_total)."""
        if not total:
            self.counters.add(name)
        return Counter(name, doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, labels: Iterable[str] = (),
                  buckets: Iterable[float] = MS_BUCKETS) -> Histogram:
        return Histogram(name, doc, list(labels), registry=self.registry, buckets=list(buckets))

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def add_state(self, *readers: Callable[[], Iterable[Metric]]) -> None:
        self.registry.register(StateCollector(readers))

    def text(self) -> str:
        return exposition(self.registry, self.counters)


def exposition(registry: CollectorRegistry, counters: set[str]) -> str:
    """The registry in the Prometheus text format (0.0.4), the `counters` under Antrea's names (no
    `_total`)."""
    text = generate_latest(registry).decode()
    if not counters:
        return text
    out: list[str] = []
    for line in text.splitlines():
        m = re.match(r"(# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)_total(?=[{ ]|$)", line)
        if m and m.group(2) in counters:
            line = (m.group(1) or "") + m.group(2) + line[m.end():]
        out.append(line)
    return "\n".join(out) + "\n"


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """A scrape as {sample name: {sorted label pairs: value}} (tests, antctl)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            # the client's parser names every counter sample NAME_total; Antrea's counters have no suffix
            name = fam.name if fam.type == "counter" and s.name == fam.name + "_total" and \
                f"\n{fam.name}_total" not in text and not text.startswith(f"{fam.name}_total") else s.name
            out.setdefault(name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(scrape: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: Any) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    want = {(k, str(v)) for k, v in labels.items()}
    return sum(v for ls, v in scrape.get(name, {}).items() if want <= set(ls))
