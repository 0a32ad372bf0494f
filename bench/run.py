"""The faultsvc benchmark: the real server beside a bare gRPC echo server, both driven by h2load.

    .venv/bin/python -m bench --quick       # smoke test, about 3 minutes
    .venv/bin/python -m bench               # the full run, about 30 minutes
    .venv/bin/python -m bench --soak 300    # server memory over a 5-minute run
    .venv/bin/python -m bench --migration   # RecordFault while the schema migrates
    .venv/bin/python -m bench --fleet       # searches at 10M faults, the watch fan-out

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

from bench import (
    commit_ceiling,
    databases,
    fleet,
    h2load,
    migration,
    report,
    seed,
    servers,
    soak,
)
from bench.databases import Backend
from bench.echo_server import ADMIN_SUFFIX
from bench.h2load import Load
from bench.report import ECHO, PER_ROW_COMMIT, Report, Row
from bench.workloads import BATCH_SIZE, LATEST_INSTANCE, Workload, build
from faultsvc.v1 import fault_service_pb2 as pb

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MARIADB_URL = "mysql+aiomysql://root@127.0.0.1:3306/faultsvc_bench"
STREAMS_PER_CONNECTION = 4
MAX_WRITER_PROCESSES = 4
# Two RecordFault responses differ only in their timestamps, whose varints
# may differ by a few bytes each.
RECORD_SIZE_SLACK = 12
# A 1-minute load average above this, before the run starts, means something
# else is using the machine.
BUSY_LOAD = 0.5


@dataclass(frozen=True, slots=True)
class Mode:
    """How big a run is, and whether faultsvc is profiled while it runs."""

    seed_rows: int
    levels: tuple[int, ...]
    workers: tuple[int, ...]
    duration_s: float
    warmup_s: float
    profile: bool = False
    # The workloads measured, by name; all when empty.
    only: tuple[str, ...] = ()


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
    parser.add_argument(
        "--migration", action="store_true", help="only the online migration, on MariaDB"
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="only the fleet view on MariaDB: searches at 10M faults, the watch fan-out",
    )
    parser.add_argument("--backends", default="sqlite,mariadb", help="default sqlite,mariadb")
    parser.add_argument("--levels", help="calls in flight, e.g. 1,16,64")
    parser.add_argument("--workers", help="faultsvc processes to compare, e.g. 1,2")
    parser.add_argument("--workloads", help="only these, by name: GetLatestFault,RecordFault")
    parser.add_argument("--duration", type=float, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run")
    parser.add_argument("--seed-rows", type=int, help="faults seeded (multiple of 200)")
    parser.add_argument("--mariadb-url", default=DEFAULT_MARIADB_URL, help="its own database")
    parser.add_argument(
        "--echo-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the echo server's event loop; auto: the one faultsvc runs on",
    )
    parser.add_argument("--skip-ceiling", action="store_true", help="no per-row-commit runs")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy flame graph of faultsvc in every run"
    )
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
        profile=args.profile,
        only=tuple(name.strip() for name in args.workloads.split(",")) if args.workloads else (),
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
    if result.meta["load_average_at_start"] > BUSY_LOAD:
        print(
            f"warning: load average {result.meta['load_average_at_start']:.1f} before starting: "
            "other work on this machine will make the figures noisy",
            file=sys.stderr,
        )

    if args.migration:
        print(f"migrating {data.total_rows:,} faults online, the previous release writing")
        for phase in migration.run(args.mariadb_url, data, workdir):
            print(phase.line())
        return

    if args.fleet:
        url = fleet.DEFAULT_URL if args.mariadb_url == DEFAULT_MARIADB_URL else args.mariadb_url
        fleet_report = fleet.run(url, args.quick, args.keep, workdir, command)
        print(f"\n{fleet_report.markdown()}")
        paths = fleet.write_report(fleet_report, args.results, stamp)
        print(f"\nwrote {' and '.join(map(str, paths))}")
        return

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
            benchmark(result, backends, data, mode, workdir, stamp, echo_loop=args.echo_loop)
            if not args.skip_ceiling:
                ceilings(result, backends, mode)
    except h2load.InvalidRun as error:
        sys.exit(f"invalid run, no figures reported: {error}\nserver logs: {workdir}")
    finally:
        for backend in backends:
            if backend.name == "mariadb":
                databases.finish_mariadb(backend, keep=args.keep)
        if not args.keep:
            for leftover in workdir.glob("faultsvc.db*"):
                leftover.unlink()

    result.meta["load_average_at_end"] = os.getloadavg()[0]
    print()
    if result.rows:
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


@dataclass(frozen=True, slots=True)
class Target:
    """A running server under test and the response it gives each workload."""

    name: str
    server: servers.ServerProcesses
    backend: Backend | None
    responses: dict[str, bytes]


def benchmark(
    result: Report,
    backends: Sequence[Backend],
    data: seed.Seed,
    mode: Mode,
    workdir: Path,
    stamp: str,
    *,
    echo_loop: str,
) -> None:
    writers = max(processes_for(True, load_for(level)) for level in mode.levels)
    workloads = build(data, stamp, writers)
    echo_responses: dict[str, bytes] = {}
    for workers in mode.workers:
        running: list[servers.ServerProcesses] = []
        try:
            targets = []
            for backend in backends:
                print(f"starting faultsvc on {backend.name}, {workers} worker(s)")
                server = servers.start_faultsvc(
                    f"faultsvc-{backend.name}-{workers}", backend.url, workers, workdir
                )
                running.append(server)
                responses = capture(server.target, workloads, data)
                targets.append(Target(backend.name, server, backend, responses))
            # The echo server answers with the bytes faultsvc answered first.
            echo_responses = echo_responses or targets[0].responses
            uvloop = echo_loop == "uvloop" or (
                echo_loop == "auto" and targets[0].server.loads_library("uvloop")
            )
            result.meta["echo_loop"] = "uvloop" if uvloop else "asyncio"
            echo_server = servers.start_echo(
                echo_map(workloads, echo_responses), workers, workdir, uvloop=uvloop
            )
            running.append(echo_server)
            echo = Target(ECHO, echo_server, None, echo_responses)
            for workload in workloads:
                if mode.only and workload.name not in mode.only:
                    continue
                for level in mode.levels:
                    measure_cell(
                        result, workload, load_for(level), workers, echo, targets, mode, workdir
                    )
        finally:
            for server in running:
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
    expected_id = seed.expected_latest_id(data, seed.live_instance(data, LATEST_INSTANCE))
    latest = pb.GetLatestFaultResponse.FromString(responses["GetLatestFault"])
    admin = pb.GetLatestFaultResponse.FromString(responses["GetLatestFault admin"])
    if latest.fault.id != expected_id or admin.fault.id != expected_id:
        raise SystemExit(f"GetLatestFault returned {latest.fault.id}, expected {expected_id}")
    if latest.fault.details or not admin.fault.details:
        raise SystemExit("details must reach admins only")
    batch = pb.BatchGetLatestFaultsResponse.FromString(responses["BatchGetLatestFaults 1000"])
    live = [
        instance
        for instance in seed.spread_instances(data, BATCH_SIZE)
        if seed.expected_latest_id(data, seed.index_of(instance)) is not None
    ]
    if sorted(fault.instance_id for fault in batch.faults) != sorted(live):
        raise SystemExit(
            f"BatchGetLatestFaults returned {len(batch.faults)} faults, not {len(live)}"
        )
    history = pb.ListFaultsResponse.FromString(responses["ListFaults first page"])
    if len(history.faults) != 50 or not history.next_page_token:
        raise SystemExit(f"ListFaults' first page has {len(history.faults)} faults, expected 50")


def echo_map(workloads: Sequence[Workload], responses: dict[str, bytes]) -> dict[str, bytes]:
    """What the echo server answers: per method path, and per path for admins."""
    return {
        workload.path + (ADMIN_SUFFIX if workload.admin else ""): responses[workload.name]
        for workload in workloads
    }


def measure_cell(
    result: Report,
    workload: Workload,
    load: Load,
    workers: int,
    echo: Target,
    targets: Sequence[Target],
    mode: Mode,
    workdir: Path,
) -> None:
    """The echo ceiling, then each faultsvc, under one workload and load."""
    ceiling = drive(echo, workload, load, workers, mode, workdir)
    result.rows.append(ceiling)
    print_row(ceiling)
    for target in targets:
        row = drive(target, workload, load, workers, mode, workdir)
        row.echo_qps, row.echo_p50_ms, row.echo_p99_ms = ceiling.qps, ceiling.p50_ms, ceiling.p99_ms
        result.rows.append(row)
        print_row(row)


def drive(
    target: Target, workload: Workload, load: Load, workers: int, mode: Mode, workdir: Path
) -> Row:
    """One h2load run against one server, checked call by call."""
    server, backend = target.server, target.backend
    counted = backend if backend is not None and workload.writes else None
    rows_before = counted.count_occurrences(workload.instance_prefix) if counted else 0
    database_pids = (
        servers.pids_named("mariadbd", "mysqld") if backend and backend.name == "mariadb" else []
    )
    profiler = None
    if mode.profile and backend is not None:
        name = f"{target.name}-x{workers}-{workload.name.replace(' ', '-')}-{load.in_flight}"
        profiler = servers.profile(
            server, workdir / "profiles" / f"{name}.svg", mode.warmup_s + mode.duration_s
        )
    server_cpu = server.cpu_seconds()
    database_cpu = servers.cpu_seconds(database_pids)
    measurement = h2load.run(
        server.target,
        workload.path,
        workload.bodies(processes_for(workload.writes, load)),
        load,
        duration_s=mode.duration_s,
        warmup_s=mode.warmup_s,
        headers=workload.headers,
        workdir=workdir,
    )
    server_cpu = server.cpu_seconds() - server_cpu
    database_cpu = servers.cpu_seconds(database_pids) - database_cpu
    if profiler is not None:
        profiler.wait()
    server.check_running()
    size = len(target.responses[workload.name])
    slack = RECORD_SIZE_SLACK if workload.writes else 0
    h2load.check(measurement, (size - slack, size + slack), load)
    rows_written = None
    if counted:
        rows_written = settled_count(counted, workload.instance_prefix) - rows_before
        check_rows(rows_written, measurement, load)
    seen = max(1, measurement.responses_seen)
    return Row(
        target=target.name,
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
        response_bytes=size,
        server_cpu_us_per_call=server_cpu / seen * 1e6,
        database_cpu_us_per_call=database_cpu / seen * 1e6 if database_pids else math.nan,
        server_rss_mb=server.rss_bytes() / 2**20,
        rows_written=rows_written,
    )


def settled_count(backend: Backend, prefix: str) -> int:
    """The row count once calls cut off by h2load's stop have been committed or dropped."""
    count = backend.count_occurrences(prefix)
    for _ in range(20):
        time.sleep(0.25)
        again = backend.count_occurrences(prefix)
        if again == count:
            return count
        count = again
    return count


def check_rows(rows_written: int, measurement: h2load.Measurement, load: Load) -> None:
    """Every acknowledged RecordFault is a stored occurrence (calls cut off may add a few)."""
    seen = measurement.responses_seen
    if not seen <= rows_written <= seen + load.in_flight:
        raise h2load.InvalidRun(
            f"{rows_written} occurrences stored for {seen} acknowledged RecordFault calls"
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
        "load_average_at_start": os.getloadavg()[0],
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
