"""Starting the servers under test as separate processes, and watching what they use."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
STARTUP_TIMEOUT_S = 120.0
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class ServerProcesses:
    """One server under test: its processes (and their children) on one port."""

    name: str
    target: str
    processes: list[subprocess.Popen[bytes]]
    logs: list[IO[bytes]] = field(default_factory=list)

    def pids(self) -> list[int]:
        return process_tree([process.pid for process in self.processes])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def loads_library(self, fragment: str) -> bool:
        """Whether any of the processes has mapped a file whose path holds `fragment`."""
        for pid in self.pids():
            try:
                if fragment in Path(f"/proc/{pid}/maps").read_text():
                    return True
            except OSError:
                continue
        return False

    def check_running(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {process.returncode}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


def profile(server: ServerProcesses, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Starts py-spy on the server (and its worker processes) for `seconds`.

    `--gil` samples only the thread holding the GIL: the Python work, without
    the threads that wait (aiosqlite's, grpc's pollers).
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--gil", "--subprocesses", "--nonblocking", "--rate", "100"]
    command += ["--duration", str(max(1, round(seconds))), "--pid", str(server.processes[0].pid)]
    command += ["--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def faultsvc_command(*arguments: str) -> list[str]:
    """The `faultsvc` command of this interpreter's environment."""
    return [sys.executable, "-m", "faultsvc", *arguments]


def start_faultsvc(
    name: str, database_url: str, workers: int, workdir: Path, extra: Sequence[str] = ()
) -> ServerProcesses:
    """Starts `faultsvc serve` and returns once its health service says SERVING."""
    target = f"127.0.0.1:{free_port()}"
    log = (workdir / f"{name}.log").open("ab")
    command = faultsvc_command(
        "serve",
        "--listen",
        target,
        "--database-url",
        database_url,
        "--workers",
        str(workers),
        "--log-level",
        "WARNING",
        *extra,
    )
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcesses(name, target, [process], [log])
    try:
        wait_serving(server)
    except BaseException:
        server.stop()
        raise
    return server


def start_echo(
    responses: Mapping[str, bytes], workers: int, workdir: Path, *, uvloop: bool
) -> ServerProcesses:
    """Starts `workers` echo processes sharing one port (SO_REUSEPORT, gRPC's default)."""
    responses_file = workdir / "echo-responses.json"
    responses_file.write_text(json.dumps({key: value.hex() for key, value in responses.items()}))
    target = f"127.0.0.1:{free_port()}"
    server = ServerProcesses(f"echo x{workers}", target, [])
    command = [sys.executable, "-m", "bench.echo_server", "--listen", target]
    command += ["--responses", str(responses_file)] + (["--uvloop"] if uvloop else [])
    try:
        for index in range(workers):
            log = (workdir / f"echo-{index}.log").open("ab")
            server.logs.append(log)
            server.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        wait_serving(server, health=False)
    except BaseException:
        server.stop()
        raise
    return server


def wait_serving(server: ServerProcesses, *, health: bool = True) -> None:
    """Waits until the server accepts calls (and, with `health`, says SERVING)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with grpc.insecure_channel(server.target) as channel:
        check = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while True:
            server.check_running()
            try:
                if health:
                    reply = check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                else:
                    ready = grpc.channel_ready_future(channel)
                    try:
                        ready.result(timeout=1.0)
                        return
                    finally:
                        ready.cancel()
            except (grpc.RpcError, grpc.FutureTimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start in {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.2)


def call(target: str, path: str, request: bytes, metadata: Iterable[tuple[str, str]]) -> bytes:
    """One unary call with raw bytes in and out; raises grpc.RpcError unless it succeeds."""
    with grpc.insecure_channel(target) as channel:
        method: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
        response = method(request, metadata=tuple(metadata), timeout=30.0)
        return response


def process_tree(roots: Iterable[int]) -> list[int]:
    """The given processes and all their descendants that are alive."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat_fields(int(entry))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry))
    found: list[int] = []
    pending = [pid for pid in roots if os.path.exists(f"/proc/{pid}")]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (e.g. the database server)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found.append(int(entry))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    ticks = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat:
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
    except (OSError, IndexError):
        return 0
    return int(resident) * PAGE_BYTES


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, ... ."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()
