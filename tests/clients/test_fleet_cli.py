"""`faultsvc faults tail` and `faults top`, run as operators run them, against a server process.

The faults come from this test's process; the server and the command run in
their own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from faultsvc_client import FaultServiceClient
from faultsvc_client.fleet_cli import histogram
from tests.clients.processes import python_env
from tests.support.servers import ServerProcess, free_port

FAULTSVC = [sys.executable, "-m", "faultsvc"]
FAST_POLLS = {"FAULTSVC_WATCH_POLL_SECONDS": "0.1"}
WAIT_SECONDS = 30.0


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(database_url, env=FAST_POLLS, log_path=tmp_path / "serve.log") as server:
        yield server


@asynccontextmanager
async def client_of(server: ServerProcess) -> AsyncIterator[FaultServiceClient]:
    async with FaultServiceClient.connect(server.target, roles=["admin"]) as client:
        yield client


class Tail:
    """`faultsvc faults tail` running: the lines it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, count: int) -> list[str]:
        """Reads until `count` lines in all were printed; returns them."""
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.lines) < count:
                line = await self.process.stdout.readline()
                assert line, f"tail ended: {await self.stop()}"
                self.lines.append(line.decode().rstrip("\n"))
        return self.lines

    async def stop(self) -> tuple[int, str]:
        """Ctrl-C; its exit code and what it said on stderr."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        assert self.process.stderr is not None
        stderr = await self.process.stderr.read()
        return await self.process.wait(), stderr.decode()


@asynccontextmanager
async def tail(target: str, *args: str) -> AsyncIterator[Tail]:
    process = await asyncio.create_subprocess_exec(
        *FAULTSVC,
        "faults",
        "tail",
        "--target",
        target,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=python_env(),
    )
    running = Tail(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def columns(line: str) -> list[str]:
    """A tail line's columns: time, instance, source, count, message."""
    return line.split("  ", 4)


async def test_tail_prints_the_latest_then_follows_what_another_process_records(
    server: ServerProcess,
) -> None:
    instance = str(uuid.uuid4())
    async with client_of(server) as client:
        for _ in range(3):  # recorded moments before: the tail shows the fault once, as it is
            before = await client.record_fault(instance, "Resize failed", source="taskmanager")
        async with tail(server.target) as running:
            (latest,) = await running.until(1)  # printed once it follows: nothing in between
            for _ in range(2):
                await client.record_fault(instance, "Volume attach failed", source="guestagent")
            await client.record_fault("i-\x1b]0;x\x07", "Guest \x1b[31mred", source="api")
            lines = await running.until(4)
            code, stderr = await running.stop()
    assert code == 130  # as a shell says of a command stopped by Ctrl-C
    assert "Traceback" not in stderr
    time, *rest = columns(latest)
    assert rest == [instance, "taskmanager", "x3", "Resize failed"]
    assert time == before.last_occur_time.ToDatetime().isoformat(timespec="seconds") + "Z"
    assert [columns(line)[2:] for line in lines[1:]] == [
        ["guestagent", "x1", "Volume attach failed"],
        ["guestagent", "x2", "Volume attach failed"],
        ["api", "x1", "Guest \\x1b[31mred"],  # inert: the escape sequence is shown, not obeyed
    ]
    assert columns(lines[3])[1] == "i-\\x1b]0;x\\x07"
    assert all("\x1b" not in line for line in lines)


async def test_tail_filters_and_prints_json_lines(server: ServerProcess) -> None:
    async with (
        client_of(server) as client,
        tail(server.target, "--source", "api", "--lines", "0", "--json") as running,
    ):
        await asyncio.sleep(2)  # nothing is printed before following: give it the time to start
        await client.record_fault("i-1", "ignored", source="conductor")
        recorded = await client.record_fault("i-1", "shown", source="api", details="trace")
        (line,) = await running.until(1)
        await running.stop()
    occurrence = json.loads(line)
    assert occurrence["id"] == recorded.id
    assert occurrence["fault"]["message"] == "shown"
    assert "details" not in occurrence["fault"]  # a stream leaves them in the database


async def test_tail_resumes_across_a_server_restart_and_misses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """While its server restarts, faults go on being recorded through another one."""
    watched = ServerProcess(database_url, env=FAST_POLLS, log_path=tmp_path / "watched.log")
    with watched, ServerProcess(database_url, env=FAST_POLLS) as other:
        async with client_of(other) as client, tail(watched.target, "--lines", "0") as running:
            await asyncio.sleep(2)
            first = await client.record_fault("i-1", "before the restart")
            await running.until(1)
            watched.stop()
            during = await client.record_fault("i-2", "while it restarts")
            watched.start()  # the same port
            after = await client.record_fault("i-3", "after the restart")
            lines = await running.until(3)
            code, stderr = await running.stop()
    assert [columns(line)[1] for line in lines] == ["i-1", "i-2", "i-3"]
    assert (first.instance_id, during.instance_id, after.instance_id) == ("i-1", "i-2", "i-3")
    assert "resuming" in stderr  # said, not silent
    assert "Traceback" not in stderr
    assert code == 130


def run_top(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FAULTSVC, "faults", "top", "--target", target, *args],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=WAIT_SECONDS,
        check=False,
    )


async def test_top_ranks_the_faults_with_their_trend(server: ServerProcess) -> None:
    now = datetime.now(UTC)

    def ago(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    async with client_of(server) as client:
        for minutes in (55, 50, 48, 46, 5):  # fading
            await client.record_fault("i-fading", "Backup failed", occur_time=ago(minutes))
        for minutes in (20, 10, 9, 3, 2, 1):  # growing
            await client.record_fault("i-growing", "Disk full", occur_time=ago(minutes))
        await client.record_fault("i-old", "Long ago", occur_time=ago(90))
    shown = run_top(server.target, "--since", "1h", "--intervals", "4")
    assert shown.returncode == 0, shown.stderr
    rows = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in shown.stdout.splitlines()
        if line.startswith("|")
    ]
    assert rows[0] == ["Count", "Trend", "Last", "Instance", "Source", "Message"]
    ranked = [(row[0], row[3], row[5]) for row in rows[1:]]
    assert ranked == [("6", "i-growing", "Disk full"), ("5", "i-fading", "Backup failed")]
    # Four intervals of 15 minutes, oldest first.
    assert rows[1][1] == histogram([0, 0, 1, 5]).strip()
    assert rows[2][1] == histogram([4, 0, 0, 1]).strip()
    assert "by intervals of 15 minutes" in shown.stdout

    as_json = run_top(server.target, "--since", "1h", "--intervals", "4", "--json")
    ranking = json.loads(as_json.stdout)
    assert [r["interval_counts"] for r in ranking["ranked_faults"]] == [
        ["0", "0", "1", "5"],
        ["4", "0", "0", "1"],
    ]

    only = run_top(server.target, "--instance", "i-fading")
    assert "i-growing" not in only.stdout
    assert "i-fading" in only.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["top", "--since", "1y"], "not a duration"),
        (["top", "--since", "0s"], "must be more than 0s"),
        (["top", "--since", "31d"], "at most 30d"),
        (["top", "--limit", "0"], "must be from 1 to 100"),
        (["top", "--intervals", "many"], "not a whole number"),
        (["tail", "--lines", "-1"], "must be from 0 to 1,000"),
        (["tail", "--since", "1h"], "unrecognized arguments"),
    ],
)
def test_a_wrong_flag_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = subprocess.run(
        [*FAULTSVC, "faults", *args],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith(("usage:", " "))]
    assert len(errors) == 1, done.stderr
    assert said in errors[0]


@pytest.mark.parametrize("command", ["tail", "top"])
def test_faultsvc_out_of_reach_is_one_line_and_exit_3(command: str, unused_target: str) -> None:
    done = subprocess.run(
        [*FAULTSVC, "faults", command, "--target", unused_target, "--timeout", "2"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"cannot reach faultsvc at {unused_target}" in done.stderr


@pytest.fixture
def unused_target() -> str:
    return f"127.0.0.1:{free_port()}"
