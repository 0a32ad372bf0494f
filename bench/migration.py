"""The schema migrations run online: how long RecordFault waits while they run.

`python -m bench --migration` seeds MariaDB at revision 0001 (the schema of
the release before the request ids), starts the server of that release (its
code taken from git), keeps writers calling RecordFault on it, and migrates
the schema one revision at a time with this version's `faultsvc`, as an
operator upgrading with the old servers still serving does. Each phase
reports the calls answered and their latency; the longest is the stall the
migration caused. At the end, every fault the old server wrote is checked:
none lost, and each dated by its latest occurrence.

`python -m bench.migration upgrade URL REVISION` is the step it runs in a
process of its own, so the writers' timing shares nothing with Alembic.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TypeAlias

import grpc
import sqlalchemy as sa

from bench import databases, seed, servers, workloads
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc as rpc

# Only the type stubs know the async stub class; at run time the stub adapts to its channel.
AsyncStub: TypeAlias = "rpc.FaultServiceAsyncStub"
REVISIONS = ("0002", "0003", "0004", "0005", "0006")
WRITERS = 8
INSTANCES = 1000
BASELINE_SECONDS = 10.0
AFTER_SECONDS = 5.0
FIRST_NEW_MIGRATION = "faultsvc/storage/migrations/versions/0002_request_and_trace_ids.py"


@dataclass
class Phase:
    """Calls answered while one thing happened: their latencies, and how long it took."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def line(self) -> str:
        if not self.latencies:
            return f"{self.name:<16} {self.seconds:7.1f} s  no call answered, {self.errors} errors"
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{self.name:<16} {self.seconds:7.1f} s  {len(ordered):7,} calls"
            f"  p50 {statistics.median(ordered) * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms"
            f"  longest {ordered[-1] * 1e3:7.1f} ms  errors {self.errors}"
        )


def old_release(directory: Path) -> Path:
    """The code of the release before revision 0002, unpacked from git into `directory`."""
    added = _git("log", "-1", "--format=%H", "--diff-filter=A", "--", FIRST_NEW_MIGRATION)
    if not added:
        raise SystemExit(f"{FIRST_NEW_MIGRATION} has no history here: run from a git checkout")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", f"{added}^", "faultsvc"],
        check=True,
        capture_output=True,
    ).stdout
    target = directory / "previous-release"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def run(mariadb_url: str, data: seed.Seed, workdir: Path) -> list[Phase]:
    """Seeds at 0001, serves with the old release, migrates under its writes; returns the phases."""
    backend = databases.prepare_mariadb(mariadb_url, data, revision="0001")
    try:
        with tempfile.TemporaryDirectory() as code:
            server = _start_previous(old_release(Path(code)), mariadb_url, workdir)
            try:
                phases = asyncio.run(_migrate_under_writes(server.target, mariadb_url))
            finally:
                server.stop()
        _check_written(backend, sum(len(phase.latencies) for phase in phases))
    finally:
        databases.finish_mariadb(backend, keep=False)
    return phases


def _start_previous(code: Path, url: str, workdir: Path) -> servers.ServerProcesses:
    target = f"127.0.0.1:{servers.free_port()}"
    log = (workdir / "previous-release.log").open("ab")
    command = servers.faultsvc_command(
        "serve", "--listen", target, "--database-url", url, "--log-level", "WARNING"
    )
    # From its own directory: `python -m` looks in the working directory first.
    environment = os.environ | {"PYTHONPATH": str(code)}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=code
    )
    server = servers.ServerProcesses("previous-release", target, [process], [log])
    try:
        servers.wait_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


async def _migrate_under_writes(target: str, url: str) -> list[Phase]:
    phases = [Phase("before"), *(Phase(f"to {revision}") for revision in REVISIONS), Phase("after")]
    current: list[Phase] = [phases[0]]
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(target) as channel:
        stub: AsyncStub = rpc.FaultServiceStub(channel)
        writers = [asyncio.create_task(_write(stub, n, current, stop)) for n in range(WRITERS)]
        await _timed(phases[0], asyncio.sleep(BASELINE_SECONDS), current)
        for phase, revision in zip(phases[1:], REVISIONS, strict=False):
            await _timed(phase, _upgrade_in_a_process(url, revision), current)
        await _timed(phases[-1], asyncio.sleep(AFTER_SECONDS), current)
        stop.set()
        await asyncio.gather(*writers)
    return phases


async def _timed(phase: Phase, work: Awaitable[None], current: list[Phase]) -> None:
    current[0] = phase
    began = time.perf_counter()
    await work
    phase.seconds = time.perf_counter() - began


async def _write(stub: AsyncStub, writer: int, current: list[Phase], stop: asyncio.Event) -> None:
    """Records faults in a loop, each timed into the phase it started in."""
    n = 0
    while not stop.is_set():
        n += 1
        request = pb.RecordFaultRequest(
            instance_id=f"{workloads.RECORD_PREFIX}{(writer * 7919 + n) % INSTANCES:05}",
            message=f"{workloads.RECORD_MESSAGE} #{n}",
            details=workloads.RECORD_DETAILS,
        )
        phase = current[0]
        began = time.perf_counter()
        try:
            await stub.RecordFault(request, timeout=30)
        except grpc.aio.AioRpcError:
            phase.errors += 1
        else:
            phase.latencies.append(time.perf_counter() - began)


async def _upgrade_in_a_process(url: str, revision: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.migration", "upgrade", url, revision
    )
    if await process.wait() != 0:
        raise SystemExit(f"migrating to {revision} failed")


def _check_written(backend: databases.Backend, answered: int) -> None:
    """Every fault answered is stored, and none is dated before it was created."""
    engine = backend.sync_engine()
    try:
        with engine.connect() as connection:
            written = connection.scalar(
                sa.text("SELECT COUNT(*) FROM instance_faults WHERE instance_id LIKE :prefix"),
                {"prefix": f"{workloads.RECORD_PREFIX}%"},
            )
            undated = connection.scalar(
                sa.text("SELECT COUNT(*) FROM instance_faults WHERE last_occurred < created")
            )
    finally:
        engine.dispose()
    if written != answered or undated:
        raise SystemExit(
            f"after the migration: {written} faults stored for {answered} answered,"
            f" {undated} dated before they were created"
        )
    print(f"checked: {written:,} faults written by the previous release, all stored and dated")


def _upgrade(url: str, revision: str) -> None:
    from alembic import command

    from faultsvc.storage.migrate import alembic_config

    engine = databases.Backend("mariadb", url).sync_engine()
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "upgrade":
        raise SystemExit("usage: python -m bench.migration upgrade URL REVISION")
    _upgrade(sys.argv[2], sys.argv[3])
