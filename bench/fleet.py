"""The fleet view at scale: `python -m bench --fleet` (`--quick` for a smoke run).

Seeds MariaDB with 10,000,000 faults and their occurrences (bench/fleet_seed.py)
in a database of its own, serves it with `faultsvc serve`, and measures:

- SearchFaults: the newest page (50 faults, as an admin) with no filter and
  with each filter an operator uses, called one at a time: p50 and p99;
- RankFaults over the last hour and the last day;
- the watch fan-out: a second server records faults at a steady rate while
  1, 10 and 100 watchers of the first one (in a process of their own)
  stream them; the first server's CPU time, per streamed fault and per
  watcher per streamed fault, and how long after its recording each
  occurrence reached its watchers. Every watcher must receive every fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench import databases, servers
from bench.fleet_seed import FleetSeed, SeedTimes, seed_fleet
from faultsvc.convert import timestamp
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc as rpc

AsyncStub: TypeAlias = "rpc.FaultServiceAsyncStub"
DEFAULT_URL = "mysql+aiomysql://root@127.0.0.1:3306/faultsvc_fleet_bench"
ADMIN = (("x-roles", "admin"),)
WARMUP_CALLS = 3


@dataclass(frozen=True, slots=True)
class FleetMode:
    rows: int
    calls: int  # per search
    watchers: tuple[int, ...]
    faults: int  # streamed per fan-out run
    rate: float  # faults recorded per second meanwhile


FULL = FleetMode(rows=10_000_000, calls=50, watchers=(1, 10, 100), faults=2000, rate=200.0)
QUICK = FleetMode(rows=200_000, calls=10, watchers=(1, 10, 100), faults=300, rate=100.0)


@dataclass
class Latency:
    name: str
    filter: str
    p50_ms: float
    p99_ms: float
    faults: int


@dataclass
class FanOut:
    watchers: int
    faults: int
    seconds: float
    server_cpu_s: float
    delivered_everything: bool
    delay_p50_ms: float
    delay_p99_ms: float

    @property
    def cpu_us_per_fault(self) -> float:
        return self.server_cpu_s / self.faults * 1e6

    @property
    def cpu_us_per_watcher_fault(self) -> float:
        return self.server_cpu_s / (self.faults * self.watchers) * 1e6


@dataclass
class FleetReport:
    command: str
    started: str
    rows: int
    seed: dict[str, Any] = field(default_factory=dict)
    # MariaDB's settings when the measurements began and ended: this mode sets none (the
    # machine's other benchmarks may), and a buffer pool that holds the table changes them.
    database: dict[str, dict[str, str]] = field(default_factory=dict)
    searches: list[Latency] = field(default_factory=list)
    rankings: list[Latency] = field(default_factory=list)
    fan_out: list[FanOut] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"Command: `{self.command}` (started {self.started})", ""]
        if self.seed.get("reused"):
            lines.append(f"{self.rows:,} faults, seeded by an earlier run kept with `--keep`.")
        else:
            lines.append(
                f"{self.rows:,} faults and as many occurrences loaded in "
                f"{self.seed['load_seconds']:.0f} s; the secondary indexes built again "
                f"in {self.seed['index_seconds_total']:.0f} s, of which revision 0006's "
                f"{self.seed['fleet_index_seconds']:.0f} s."
            )
        for moment, settings in self.database.items():
            shown = ", ".join(f"{name}={value}" for name, value in sorted(settings.items()))
            lines.append(f"MariaDB {moment}: {shown}.")
        lines += ["", "| SearchFaults, newest page of 50 | filter | p50 ms | p99 ms | faults |"]
        lines.append("| --- | --- | ---: | ---: | ---: |")
        for row in self.searches + self.rankings:
            shown = f"`{row.filter}`" if row.filter else "(none)"
            lines.append(
                f"| {row.name} | {shown} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.faults} |"
            )
        lines += [
            "",
            "| watchers | faults | server CPU | CPU per fault | CPU per watcher per fault |"
            " delay p50 | delay p99 | every watcher got every fault |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for run in self.fan_out:
            lines.append(
                f"| {run.watchers} | {run.faults:,} | {run.server_cpu_s * 1e3:,.0f} ms"
                f" | {run.cpu_us_per_fault:,.0f} us | {run.cpu_us_per_watcher_fault:,.1f} us"
                f" | {run.delay_p50_ms:.0f} ms | {run.delay_p99_ms:.0f} ms"
                f" | {'yes' if run.delivered_everything else 'NO'} |"
            )
        return "\n".join(lines)


def run(url: str, quick: bool, keep: bool, workdir: Path, command: str) -> FleetReport:
    mode = QUICK if quick else FULL
    stamp = workdir.name
    report = FleetReport(command, stamp, mode.rows)
    print(f"seeding {mode.rows:,} faults into {make_url(url).database}", flush=True)
    data, times = prepare(url, mode.rows, keep=keep)
    report.seed = {
        "reused": times.reused,
        "load_seconds": round(times.load_seconds, 1),
        "index_seconds": {k: round(v, 1) for k, v in (times.index_seconds or {}).items()},
        "index_seconds_total": round(sum((times.index_seconds or {}).values()), 1),
        "fleet_index_seconds": round(times.fleet_index_seconds, 1),
    }
    print(json.dumps(report.seed), flush=True)
    watched = servers.start_faultsvc("fleet-watched", url, 1, workdir)
    writer = servers.start_faultsvc("fleet-writer", url, 1, workdir)
    try:
        report.database["as the measurements began"] = settings_of(url)
        report.searches = asyncio.run(search_latencies(watched.target, data, mode.calls))
        report.rankings = asyncio.run(rank_latencies(watched.target, mode.calls))
        for count in mode.watchers:
            fan_out = watch_fan_out(watched, writer.target, count, mode, workdir)
            print(f"  {count} watchers: {asdict(fan_out)}", flush=True)
            report.fan_out.append(fan_out)
        report.database["as they ended"] = settings_of(url)
    finally:
        watched.stop()
        writer.stop()
        if not keep:
            drop(url)
    return report


def prepare(url: str, rows: int, *, keep: bool) -> tuple[FleetSeed, SeedTimes]:
    """The database, migrated and seeded; one kept by an earlier `--keep` run is used again."""
    database = make_url(url).database
    admin = databases._server_engine(url)
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                sa.text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n"),
                {"n": database},
            )
            if not exists:
                connection.execute(
                    sa.text(
                        f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
                )
    finally:
        admin.dispose()
    databases.migrate(url)
    engine = databases.Backend("mariadb", url).sync_engine()
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        return seed_fleet(engine, FleetSeed(rows, now))
    finally:
        engine.dispose()


def settings_of(url: str) -> dict[str, str]:
    admin = databases._server_engine(url)
    try:
        with admin.connect() as connection:
            found = databases.mariadb_settings(connection)
    finally:
        admin.dispose()
    wanted = ("version", "innodb_buffer_pool_size", "innodb_flush_log_at_trx_commit")
    return {name: value for name, value in found.items() if name in wanted}


def drop(url: str) -> None:
    admin = databases._server_engine(url)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    finally:
        admin.dispose()


def search_cases(data: FleetSeed) -> list[tuple[str, str]]:
    """Each filter an operator uses, with values the seed holds: the newest rows, and older ones."""
    newest = data.rows - 1
    middle = data.rows // 2

    def rfc3339(moment: datetime) -> str:
        return moment.isoformat() + "Z"

    hour_ago = rfc3339(data.end - timedelta(hours=1))
    ten_days_ago = data.end - timedelta(days=10)
    return [
        ("no filter", ""),
        ("a common source (40 %)", 'source = "taskmanager"'),
        ("a rare source (0.1 %)", 'source = "backup"'),
        ("a host", f'host = "{data.host(newest)}"'),
        ("an instance", f'instance_id = "{data.instance(middle)}"'),
        ("a fingerprint", f'fingerprint = "{fingerprint_of(middle)}"'),
        ("a request id", f'request_id = "{data.request_id(middle)}"'),
        ("a global request id", f'global_request_id = "{data.global_request_id(middle)}"'),
        ("the last hour", f'last_occur_time >= "{hour_ago}"'),
        (
            "a day, ten days ago",
            f'last_occur_time >= "{rfc3339(ten_days_ago)}"'
            f' AND last_occur_time < "{rfc3339(ten_days_ago + timedelta(days=1))}"',
        ),
        ("a source and a host", f'source = "conductor" AND host = "{data.host(newest)}"'),
        ("a source, the last hour", f'source = "api" AND last_occur_time >= "{hour_ago}"'),
        ("a source that never was", 'source = "nobody"'),
        ("a host that reported no such source", f'source = "backup" AND host = "{data.host(1)}"'),
    ]


def fingerprint_of(n: int) -> str:
    """The fingerprint the seed gave fault n."""
    return hashlib.sha256(f"fleet-{n}".encode()).hexdigest()


async def search_latencies(target: str, data: FleetSeed, calls: int) -> list[Latency]:
    found = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub: AsyncStub = rpc.FaultServiceStub(channel)
        cases = search_cases(data)
        for name, filter_ in cases:
            request = pb.SearchFaultsRequest(filter=filter_, page_size=50)
            found.append(await timed(name, filter_, stub.SearchFaults, request, calls))
        first = await stub.SearchFaults(pb.SearchFaultsRequest(page_size=50), metadata=ADMIN)
        second = pb.SearchFaultsRequest(page_size=50, page_token=first.next_page_token)
        found.append(await timed("the second page", "", stub.SearchFaults, second, calls))
    for row in found:
        print(f"  {row.name:<36} p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms", flush=True)
    return found


async def rank_latencies(target: str, calls: int) -> list[Latency]:
    found = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub: AsyncStub = rpc.FaultServiceStub(channel)
        for name, window in (("RankFaults, last hour", 1), ("RankFaults, last day", 24)):
            start = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=window)
            request = pb.RankFaultsRequest(start_time=timestamp(start), max_faults=10)
            found.append(await timed(name, "", stub.RankFaults, request, max(3, calls // 5)))
    for row in found:
        print(f"  {row.name:<36} p50 {row.p50_ms:7.1f} ms  p99 {row.p99_ms:7.1f} ms", flush=True)
    return found


async def timed(name: str, filter_: str, method: Any, request: Any, calls: int) -> Latency:
    """`calls` calls one at a time, after a few to warm the caches: their latencies."""
    latencies = []
    response = None
    for n in range(WARMUP_CALLS + calls):
        started = time.perf_counter()
        response = await method(request, metadata=ADMIN, timeout=60)
        if n >= WARMUP_CALLS:
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    size = len(getattr(response, "faults", getattr(response, "ranked_faults", [])))
    return Latency(
        name,
        filter_,
        statistics.median(latencies) * 1e3,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        size,
    )


def watch_fan_out(
    watched: servers.ServerProcesses, writer: str, count: int, mode: FleetMode, workdir: Path
) -> FanOut:
    """`count` watchers of `watched` stream what `writer` records: the CPU it costs `watched`."""
    source = f"bench-fleet-{uuid.uuid4().hex[:8]}"
    watchers = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.fleet_watchers",
            "--target",
            watched.target,
            "--watchers",
            str(count),
            "--expected",
            str(mode.faults),
            "--filter",
            f'source = "{source}"',
        ],
        stdout=subprocess.PIPE,
        stderr=(workdir / f"watchers-{count}.log").open("ab"),
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert watchers.stdout is not None
        if watchers.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the watchers did not start: see {workdir}")
        started = time.perf_counter()
        cpu = watched.cpu_seconds()
        asyncio.run(record_steadily(writer, source, mode.faults, mode.rate))
        result = json.loads(watchers.stdout.readline())
        seconds = time.perf_counter() - started
        cpu = watched.cpu_seconds() - cpu
    finally:
        watchers.kill()
        watchers.wait()
    return FanOut(
        watchers=count,
        faults=mode.faults,
        seconds=seconds,
        server_cpu_s=cpu,
        delivered_everything=result["received"] == [mode.faults] * count,
        delay_p50_ms=(result["delay_p50_s"] or 0) * 1e3,
        delay_p99_ms=(result["delay_p99_s"] or 0) * 1e3,
    )


async def record_steadily(target: str, source: str, faults: int, rate: float) -> None:
    """`faults` RecordFault calls at `rate` a second, from a few concurrent writers."""
    writers = 8
    began = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub: AsyncStub = rpc.FaultServiceStub(channel)

        async def write(first: int) -> None:
            for n in range(first, faults, writers):
                await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
                await stub.RecordFault(
                    pb.RecordFaultRequest(
                        instance_id=f"bench-fleet-{n % 500}",
                        message="Volume attach failed",
                        source=source,
                        host=f"compute-{n % 40}",
                    ),
                    timeout=30,
                )

        await asyncio.gather(*(write(first) for first in range(writers)))


def write_report(report: FleetReport, results: Path, stamp: str) -> Sequence[Path]:
    results.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    data["fan_out"] = [
        asdict(run)
        | {
            "cpu_us_per_fault": run.cpu_us_per_fault,
            "cpu_us_per_watcher_fault": run.cpu_us_per_watcher_fault,
        }
        for run in report.fan_out
    ]
    json_path = results / f"{stamp}-fleet.json"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    markdown_path = results / f"{stamp}-fleet.md"
    markdown_path.write_text(report.markdown() + "\n")
    return json_path, markdown_path
