"""faultsvc servers for tests: built in this process, or in its own as operators run it.

`running_server(settings)` is the server the composition root builds, on the
test's event loop; `ServerProcess` is `python -m faultsvc serve`, to stop with
a signal or kill.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultsvc.app import FaultServer, build_server
from faultsvc.config import Settings

START_TIMEOUT = 30.0


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[FaultServer]:
    """The server built from `settings` and started; stopped gracefully afterwards."""
    server = await build_server(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class MakeServer(Protocol):
    """The `make_server` fixture: a running server with some settings changed."""

    def __call__(self, **overrides: Any) -> Awaitable[FaultServer]: ...


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_serving(target: str, timeout: float = START_TIMEOUT) -> None:
    """Waits until grpc.health.v1 answers SERVING for the whole server."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs omit the methods
        while True:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"faultsvc at {target} not serving after {timeout} s")
            time.sleep(0.05)


class ServerProcess:
    """`faultsvc serve` on 127.0.0.1:`port`; start, stop (SIGTERM) or kill (SIGKILL) it."""

    def __init__(
        self,
        database_url: str,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "faultsvc",
            "serve",
            "--listen",
            self.target,
            "--database-url",
            self.database_url,
            *([] if "--workers" in self.extra_args else ["--workers", "1"]),
            *self.extra_args,
        ]

    def start(self) -> ServerProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_serving(self.target)
        except TimeoutError:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then waits; returns the exit code."""
        self.terminate()
        return self.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM, once; the server then shuts down gracefully."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.kill()
