"""Server memory under a long mixed load: RSS must stay within 10 % of its warmed-up size.

All workloads run at once against one faultsvc (reads, admin batches, and
writes to a few instances), while the resident set of the server's processes
is sampled. The baseline is the RSS once the first tenth of the run is over
(pools filled, caches warm); the server is flat when no later sample exceeds
the baseline by more than LIMIT_PERCENT.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import h2load, seed, servers
from bench.databases import Backend
from bench.h2load import Load
from bench.workloads import Workload, build

LIMIT_PERCENT = 10.0
SAMPLE_EVERY_S = 5.0
WRITERS = 4
LOADS = {
    "GetLatestFault": Load(2, 4),
    "BatchGetLatestFaults 1000 FULL": Load(1, 1),
    "ListFaults first page": Load(1, 2),
    "RecordFault": Load(WRITERS, 2),
}


def run(
    backends: Sequence[Backend],
    data: seed.Seed,
    seconds: float,
    workers: int,
    workdir: Path,
    run_id: str,
) -> list[dict[str, Any]]:
    workloads = [w for w in build(data, run_id, WRITERS) if w.name in LOADS]
    return [soak_one(backend, workloads, seconds, workers, workdir) for backend in backends]


def soak_one(
    backend: Backend, workloads: Sequence[Workload], seconds: float, workers: int, workdir: Path
) -> dict[str, Any]:
    print(f"soaking faultsvc on {backend.name}, {workers} worker(s), for {seconds:.0f} s")
    server = servers.start_faultsvc(f"soak-{backend.name}", backend.url, workers, workdir)
    try:
        sizes = {}
        for workload in workloads:
            metadata = [("x-roles", "admin")] if workload.admin else []
            response = servers.call(server.target, workload.path, workload.requests[0], metadata)
            sizes[workload.name] = len(response)
        running = [
            (
                workload,
                h2load.start(
                    server.target,
                    workload.path,
                    workload.bodies(WRITERS if workload.writes else 1),
                    LOADS[workload.name],
                    duration_s=seconds,
                    warmup_s=0,
                    headers=workload.headers,
                    workdir=workdir,
                ),
            )
            for workload in workloads
        ]
        began = time.monotonic()
        samples: list[tuple[float, float]] = []
        while any(process.poll() is None for _, run in running for process, *_ in run.processes):
            server.check_running()
            samples.append((time.monotonic() - began, server.rss_bytes() / 2**20))
            time.sleep(SAMPLE_EVERY_S)
        calls = 0
        for workload, run in running:
            measurement = run.wait()
            slack = 12 if workload.writes else 0
            size = sizes[workload.name]
            h2load.check(measurement, (size - slack, size + slack), LOADS[workload.name])
            calls += measurement.responses_seen
    finally:
        server.stop()
    return verdict(backend.name, seconds, samples, calls)


def verdict(
    target: str, seconds: float, samples: Sequence[tuple[float, float]], calls: int
) -> dict[str, Any]:
    warmed = [rss for at, rss in samples if at >= seconds / 10]
    if not warmed:
        raise RuntimeError("the soak ended before its warm-up did; run it longer")
    baseline, highest, final = warmed[0], max(warmed), warmed[-1]
    growth = (highest / baseline - 1) * 100
    return {
        "target": target,
        "seconds": seconds,
        "calls": calls,
        "baseline_rss_mb": round(baseline, 1),
        "max_rss_mb": round(highest, 1),
        "final_rss_mb": round(final, 1),
        "growth_percent": round(growth, 1),
        "limit_percent": LIMIT_PERCENT,
        "flat": growth <= LIMIT_PERCENT,
        "samples": [[round(at, 1), round(rss, 1)] for at, rss in samples],
    }
