"""The faultsvc benchmark: the real server beside a bare gRPC echo server, both driven by h2load.

    .venv/bin/python -m bench --quick       # smoke test, a few minutes
    .venv/bin/python -m bench               # the full run
    .venv/bin/python -m bench --soak 300    # server memory over a 5-minute run

Each workload runs at each concurrency against the echo server first, then
against faultsvc on each database, back to back, so the echo ceiling of a row
was measured moments before it on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench import commit_ceiling, databases, h2load, report, seed, servers, soak
from bench.databases import Backend
from bench.h2load import Load
from bench.report import ECHO, PER_ROW_COMMIT, Report, Row
from bench.workloads import Workload, build
from faultsvc.v1 import fault_service_pb2 as pb

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MARIADB_URL = "mysql+aiomysql://root@127.0.0.1:3306/faultsvc_bench"
STREAMS_PER_CONNECTION = 4
MAX_WRITER_PROCESSES = 4
# Two RecordFault responses differ only in their timestamps, whose varints
# may differ by a few bytes each.
RECORD_SIZE_SLACK = 12


@dataclass(frozen=True, slots=True)
class Mode:
    """How big a run is."""

    seed_rows: int
    levels: tuple[int, ...]
    workers: tuple[int, ...]
    duration_s: float
    warmup_s: float


FULL = Mode(1_000_000, (1, 16, 64), (1, 2), 10.0, 2.0)
QUICK = Mode(100_000, (1, 64), (1,), 3.0, 1.0)


def load_for(in_flight: int) -> Load:
    """`in_flight` calls over as many connections as it takes at 4 streams each.

    Many clients with a few calls each, as a fleet of services with one
    channel per process would be; enough connections that SO_REUSEPORT can
    spread them over several worker processes.
    """
    streams = min(in_flight, STREAMS_PER_CONNECTION)
    if in_flight % streams:
        raise SystemExit(f"concurrency {in_flight} is not a multiple of {streams}")
    return Load(in_flight // streams, streams)


def processes_for(writes: bool, load: Load) -> int:
    """h2load processes: one per distinct request (RecordFault's instances), else one."""
    if not writes:
        return 1
    return max(
        count for count in range(1, MAX_WRITER_PROCESSES + 1) if load.connections % count == 0
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="small seed, short runs (CI smoke)")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="only the memory soak")
    parser.add_argument("--backends", default="sqlite,mariadb", help="default sqlite,mariadb")
    parser.add_argument("--levels", help="calls in flight, e.g. 1,16,64")
    parser.add_argument("--workers", help="faultsvc processes to compare, e.g. 1,2")
    parser.add_argument("--duration", type=float, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run")
    parser.add_argument("--seed-rows", type=int, help="faults seeded (multiple of 200)")
    parser.add_argument("--mariadb-url", default=DEFAULT_MARIADB_URL, help="its own database")
    parser.add_argument("--uvloop", action="store_true", help="echo server on uvloop")
    parser.add_argument("--skip-ceiling", action="store_true", help="no per-row-commit runs")
    parser.add_argument("--keep", action="store_true", help="keep databases and logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where JSON goes")
    return parser.parse_args(argv)


def mode_from(args: argparse.Namespace) -> Mode:
    base = QUICK if args.quick else FULL
    return Mode(
        seed_rows=args.seed_rows or base.seed_rows,
        levels=_ints(args.levels) or base.levels,
        workers=_ints(args.workers) or base.workers,
        duration_s=args.duration or base.duration_s,
        warmup_s=args.warmup if args.warmup is not None else base.warmup_s,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    mode = mode_from(args)
    h2load.require_h2load()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = args.results / stamp
    workdir.mkdir(parents=True)
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    data = seed.Seed(mode.seed_rows if args.soak is None else QUICK.seed_rows)
    result = Report(meta=machine_facts(command, mode, stamp))

    backends: list[Backend] = []
    try:
        for name in args.backends.split(","):
            print(f"preparing {name}: {data.total_rows:,} faults over {data.instances:,} instances")
            backend = prepare(name.strip(), data, workdir, args.mariadb_url)
            print(f"  seeded in {backend.seed_seconds:.1f} s")
            backends.append(backend)
        result.meta["databases"] = {
            backend.name: {"seed_seconds": round(backend.seed_seconds, 1), **backend.settings}
            for backend in backends
        }
        if args.soak is not None:
            result.soak = soak.run(backends, data, args.soak, mode.workers[0], workdir, stamp)
        else:
            benchmark(result, backends, data, mode, workdir, stamp, uvloop=args.uvloop)
            if not args.skip_ceiling:
                ceilings(result, backends, mode)
    finally:
        for backend in backends:
            if backend.name == "mariadb":
                databases.finish_mariadb(backend, keep=args.keep)
        if not args.keep:
            for leftover in workdir.glob("faultsvc.db*"):
                leftover.unlink()

    print()
    print(result.text())
    for item in result.soak:
        print(report.soak_line(item))
    json_path, markdown_path = result.write(args.results, stamp)
    print(f"\nwrote {json_path} and {markdown_path}")
    if any(not item["flat"] for item in result.soak):
        sys.exit(1)


def prepare(name: str, data: seed.Seed, workdir: Path, mariadb_url: str) -> Backend:
    if name == "sqlite":
        return databases.prepare_sqlite(workdir / "faultsvc.db", data)
    if name == "mariadb":
        return databases.prepare_mariadb(mariadb_url, data)
    raise SystemExit(f"unknown backend {name!r}: sqlite or mariadb")


def benchmark(
    result: Report,
    backends: Sequence[Backend],
    data: seed.Seed,
    mode: Mode,
    workdir: Path,
    stamp: str,
    *,
    uvloop: bool,
) -> None:
    writers = max(processes_for(True, load_for(level)) for level in mode.levels)
    workloads = build(data, stamp, writers)
    echo_responses: dict[str, bytes] = {}
    for workers in mode.workers:
        started: list[tuple[Backend, servers.ServerProcesses]] = []
        echo: servers.ServerProcesses | None = None
        try:
            for backend in backends:
                print(f"starting faultsvc on {backend.name}, {workers} worker(s)")
                server = servers.start_faultsvc(
                    f"faultsvc-{backend.name}-{workers}", backend.url, workers, workdir
                )
                started.append((backend, server))
            sizes = {
                backend.name: capture(server.target, workloads, data) for backend, server in started
            }
            if not echo_responses:
                echo_responses = echo_map(workloads, sizes[backends[0].name])
            echo = servers.start_echo(echo_responses, workers, workdir, uvloop=uvloop)
            for workload in workloads:
                for level in mode.levels:
                    measure_cell(
                        result,
                        workload,
                        level,
                        workers,
                        echo,
                        started,
                        sizes,
                        echo_responses,
                        mode,
                        workdir,
                    )
        finally:
            if echo is not None:
                echo.stop()
            for _, server in started:
                server.stop()


def capture(target: str, workloads: Sequence[Workload], data: seed.Seed) -> dict[str, bytes]:
    """Each workload's response from a server, checked against the seeded data."""
    responses = {}
    for workload in workloads:
        metadata = [("x-roles", "admin")] if workload.admin else []
        try:
            responses[workload.name] = servers.call(
                target, workload.path, workload.requests[0], metadata
            )
        except grpc.RpcError as error:
            raise SystemExit(f"{workload.name} failed before the run: {error}") from error
    check_seeded_answers(responses, data)
    return responses


def check_seeded_answers(responses: dict[str, bytes], data: seed.Seed) -> None:
    """The server reads the seeded rows as the seed defines them (and redacts for non-admins)."""
    index = seed.live_instance(data, 4242)
    expected_id = seed.expected_latest_id(data, index)
    latest = pb.GetLatestFaultResponse.FromString(responses["GetLatestFault"])
    admin = pb.GetLatestFaultResponse.FromString(responses["GetLatestFault admin"])
    if latest.fault.id != expected_id or admin.fault.id != expected_id:
        raise SystemExit(f"GetLatestFault returned {latest.fault.id}, expected {expected_id}")
    if latest.fault.details or not admin.fault.details:
        raise SystemExit("details must reach admins only")
    batch = pb.BatchGetLatestFaultsResponse.FromString(responses["BatchGetLatestFaults 1000"])
    wanted = seed.spread_instances(data, 1000)
    live = [instance for instance in wanted if not seed.is_cleared(int(instance[-12:]))]
    if sorted(fault.instance_id for fault in batch.faults) != sorted(live):
        raise SystemExit(
            f"BatchGetLatestFaults returned {len(batch.faults)} faults, not {len(live)}"
        )
    history = pb.ListFaultsResponse.FromString(responses["ListFaults first page"])
    if len(history.faults) != 50 or not history.next_page_token:
        raise SystemExit(f"ListFaults' first page has {len(history.faults)} faults, expected 50")


def echo_map(workloads: Sequence[Workload], responses: dict[str, bytes]) -> dict[str, bytes]:
    """What the echo server answers: per method path, and per path for admins."""
    mapping = {}
    for workload in workloads:
        key = workload.path + (" admin" if workload.admin else "")
        mapping[key] = responses[workload.name]
    return mapping


def measure_cell(
    result: Report,
    workload: Workload,
    level: int,
    workers: int,
    echo: servers.ServerProcesses,
    started: Sequence[tuple[Backend, servers.ServerProcesses]],
    sizes: dict[str, dict[str, bytes]],
    echo_responses: dict[str, bytes],
    mode: Mode,
    workdir: Path,
) -> None:
    load = load_for(level)
    echo_size = len(echo_responses[workload.path + (" admin" if workload.admin else "")])
    echo_row = drive(echo, ECHO, None, workload, load, workers, echo_size, mode, workdir)
    result.rows.append(echo_row)
    print_row(echo_row)
    for backend, server in started:
        size = len(sizes[backend.name][workload.name])
        row = drive(server, backend.name, backend, workload, load, workers, size, mode, workdir)
        row.echo_qps, row.echo_p50_ms, row.echo_p99_ms = (
            echo_row.qps,
            echo_row.p50_ms,
            echo_row.p99_ms,
        )
        result.rows.append(row)
        print_row(row)


def drive(
    server: servers.ServerProcesses,
    target: str,
    backend: Backend | None,
    workload: Workload,
    load: Load,
    workers: int,
    response_size: int,
    mode: Mode,
    workdir: Path,
) -> Row:
    """One h2load run against one server, checked call by call."""
    processes = processes_for(workload.writes, load)
    prefix = workload.instance_prefix
    counting = backend is not None and workload.writes
    rows_before = backend.count_rows(prefix) if counting and backend else 0
    database_pids = (
        servers.pids_named("mariadbd", "mysqld") if backend and backend.name == "mariadb" else []
    )
    server_cpu = server.cpu_seconds()
    database_cpu = servers.cpu_seconds(database_pids)
    measurement = h2load.run(
        server.target,
        workload.path,
        workload.bodies(processes),
        load,
        duration_s=mode.duration_s,
        warmup_s=mode.warmup_s,
        headers=workload.headers,
        workdir=workdir,
    )
    server_cpu = server.cpu_seconds() - server_cpu
    database_cpu = servers.cpu_seconds(database_pids) - database_cpu
    server.check_running()
    slack = RECORD_SIZE_SLACK if workload.writes else 0
    h2load.check(measurement, (response_size - slack, response_size + slack), load)
    rows_written = None
    if counting and backend:
        rows_written = settled_count(backend, prefix) - rows_before
        check_rows(rows_written, measurement, load)
    seen = max(1, measurement.responses_seen)
    return Row(
        target=target,
        workers=workers,
        workload=workload.name,
        in_flight=load.in_flight,
        connections=load.connections,
        streams=load.streams,
        qps=measurement.qps,
        p50_ms=measurement.percentile_ms(0.50),
        p99_ms=measurement.percentile_ms(0.99),
        requests=measurement.requests,
        responses_seen=measurement.responses_seen,
        response_bytes=response_size,
        server_cpu_us_per_call=server_cpu / seen * 1e6,
        database_cpu_us_per_call=database_cpu / seen * 1e6 if database_pids else math.nan,
        server_rss_mb=server.rss_bytes() / 2**20,
        rows_written=rows_written,
    )


def settled_count(backend: Backend, prefix: str) -> int:
    """The row count once calls cut off by h2load's stop have been committed or dropped."""
    count = backend.count_rows(prefix)
    for _ in range(20):
        time.sleep(0.25)
        again = backend.count_rows(prefix)
        if again == count:
            return count
        count = again
    return count


def check_rows(rows_written: int, measurement: h2load.Measurement, load: Load) -> None:
    """Every acknowledged RecordFault is a committed row (calls cut off may add a few)."""
    seen = measurement.responses_seen
    if not seen <= rows_written <= seen + load.in_flight:
        raise h2load.InvalidRun(
            f"{rows_written} rows written for {seen} acknowledged RecordFault calls"
        )


def ceilings(result: Report, backends: Sequence[Backend], mode: Mode) -> None:
    """The per-row-commit ceiling of each database at each concurrency, with no server running."""
    for backend in backends:
        for level in mode.levels:
            ceiling = asyncio.run(
                commit_ceiling.measure(
                    backend.url,
                    level,
                    duration_s=mode.duration_s,
                    warmup_s=mode.warmup_s,
                    instance_prefix="bench-per-row-",
                )
            )
            row = Row(
                target=backend.name,
                workers=0,
                workload=PER_ROW_COMMIT,
                in_flight=level,
                connections=level,
                streams=1,
                qps=ceiling.rows_per_s,
                p50_ms=h2load.percentile(ceiling.latencies_us, 0.50) / 1000,
                p99_ms=h2load.percentile(ceiling.latencies_us, 0.99) / 1000,
                requests=ceiling.rows,
            )
            result.rows.append(row)
            print_row(row)


def print_row(row: Row) -> None:
    ratio = "" if math.isnan(row.echo_qps) else f"  ({row.qps_ratio:.2f} of echo)"
    print(
        f"  {row.target:8} x{row.workers} {row.workload:34} {row.in_flight:3} in flight: "
        f"{row.qps:8,.0f} QPS  p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:7.2f} ms{ratio}",
        flush=True,
    )


def machine_facts(command: str, mode: Mode, stamp: str) -> dict[str, Any]:
    return {
        "command": command,
        "started": stamp,
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "h2load": h2load.version(),
        "mode": {
            "seed_rows": mode.seed_rows,
            "levels": list(mode.levels),
            "workers": list(mode.workers),
            "duration_s": mode.duration_s,
            "warmup_s": mode.warmup_s,
            "streams_per_connection": STREAMS_PER_CONNECTION,
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ints(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",")) if text else ()
