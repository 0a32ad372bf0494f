"""Running this checkout's Python programs as child processes, as people and services do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60.0


def python_env(paths: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """The environment of a child Python that imports this checkout, installed or not."""
    paths = [*paths, str(ROOT / "clients" / "python"), str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def run_python(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env or python_env(),
        timeout=timeout,
        check=False,
    )


async def run_python_async(
    args: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_python` without blocking the event loop (the in-process server runs on it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or python_env(),
    )
    async with asyncio.timeout(CHILD_TIMEOUT):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        [sys.executable, *args], process.returncode, stdout.decode(), stderr.decode()
    )


@contextmanager
def frozen(server: ServerProcess) -> Iterator[None]:
    """The server stopped with SIGSTOP: it accepts connections and never answers."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
