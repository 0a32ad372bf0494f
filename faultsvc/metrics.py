"""Prometheus metrics of one server process, and the HTTP endpoint that exposes them.

With several workers, each process writes its samples to a shared directory
(prometheus-client's multiprocess mode) and the parent process serves the sum.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus-client reads it at import: set it before workers import this module.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Sources are caller-chosen strings: only names that look like component names
# become label values, and only this many, so a caller cannot grow the series.
SOURCE_LABEL = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
MAX_SOURCES = 64


class Metrics:
    """The service's metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.rpcs = Counter(
            "faultsvc_rpc_requests",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.rpc_seconds = Histogram(
            "faultsvc_rpc_duration_seconds",
            "Time to handle an RPC, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "faultsvc_batch_size",
            "Calls served by one database round trip (group commit, coalesced reads)",
            ["batcher"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_wait_seconds = Histogram(
            "faultsvc_batch_wait_seconds",
            "How long the oldest call of a batch waited for its round trip to start",
            ["batcher"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pool_in_use = Gauge(
            "faultsvc_database_connections_in_use",
            "Database connections checked out of the pool",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.faults_recorded = Counter(
            "faultsvc_faults_recorded",
            "Faults acknowledged to their reporters, by reporting component",
            ["source"],
            registry=registry,
        )
        self._sources: set[str] = set()

    def observe_batch(self, batcher: str, size: int, waited: float) -> None:
        self.batch_size.labels(batcher).observe(size)
        self.batch_wait_seconds.labels(batcher).observe(waited)

    def count_recorded(self, sources: Iterable[str]) -> None:
        for source in sources:
            self.faults_recorded.labels(self._source_label(source)).inc()

    def _source_label(self, source: str) -> str:
        if source in self._sources:
            return source
        if len(self._sources) < MAX_SOURCES and SOURCE_LABEL.fullmatch(source):
            self._sources.add(source)
            return source
        return "other"


def serve_metrics(listen: str, registry: CollectorRegistry) -> None:
    """Serves /metrics on `listen` (HOST:PORT) from a daemon thread of this process."""
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)


def multiprocess_registry() -> CollectorRegistry:
    """The sum of the samples every worker wrote to the multiprocess directory."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
