"""The clients in a service under eventlet's monkey patching, as OpenStack services run.

Each test runs `green_service.py` as its own process. The reporters' tests
run it against a faultsvc that is down while the service reports, and start
it only once the faults are queued: the service's waits then last through
the outage. In all, a green thread ticking all along shows that no wait
held up the others.

What the clients rely on in grpc's private extension to run there is
checked on its own, so that a grpcio that changed it fails by name.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import grpc
import pytest

from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import FaultServiceClient
from faultsvc_client.loop_thread import GreenLoopThread, lent_to_grpc
from tests.clients.processes import CHILD_TIMEOUT, python_env
from tests.support.servers import ServerProcess

pytest.importorskip("eventlet")

GREEN_SERVICE = Path(__file__).with_name("green_service.py")
# How many green threads of green_service.py's reader call at once.
GREEN_READERS = 50

# A green thread kept waiting this long would be a wait blocking eventlet's
# hub, not the machine being busy: a tick is due every millisecond.
LONGEST_HOLD = 0.5
# faultsvc takes longer than this to start: a wait spanning its start
# spanned an outage.
SHORTEST_OUTAGE = 0.5


class GreenService:
    """`green_service.py` as a child process, and what it prints."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self._log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-W", "ignore", str(GREEN_SERVICE), *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=python_env(),
        )

    @property
    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    async def queued(self) -> None:
        """Waits until the service has queued its faults."""
        async with asyncio.timeout(CHILD_TIMEOUT):
            line = await asyncio.to_thread(self._stdout.readline)
        assert line == "waiting\n", self.log()

    async def outcome(self) -> dict[str, Any]:
        """Waits for the service to end; what it saw."""
        code = await asyncio.to_thread(self.process.wait, CHILD_TIMEOUT)
        assert code == 0, self.log()
        outcome: dict[str, Any] = json.loads(self._stdout.read())
        return outcome

    def log(self) -> str:
        return self._log_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._log.close()


@contextmanager
def green_service(args: list[str], log_path: Path) -> Iterator[GreenService]:
    service = GreenService(args, log_path)
    try:
        yield service
    finally:
        service.kill()


@contextmanager
def server_not_started(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, log_path=tmp_path / "faultsvc.log")
    try:
        yield server
    finally:
        server.kill()


async def faults_of(target: str, instance: str) -> list[Fault]:
    async with FaultServiceClient.connect(target, roles=["admin"]) as client:
        return [fault async for fault in client.iter_faults(instance)]


async def test_sync_reporter_delivers_through_an_outage_without_holding_up_green_threads(
    database_url: str, tmp_path: Path
) -> None:
    instance = str(uuid.uuid4())
    with server_not_started(database_url, tmp_path) as server:
        with green_service(
            ["reporter", server.target, instance], tmp_path / "service.log"
        ) as service:
            await service.queued()
            await asyncio.to_thread(server.start)
            outcome = await service.outcome()

        history = await faults_of(server.target, instance)

    assert outcome["flushed"]
    assert outcome["stats"] == {"reported": 3, "delivered": 3, "dropped": 0, "rejected": 0}
    assert outcome["waited"] > SHORTEST_OUTAGE
    assert outcome["held_longest"] < LONGEST_HOLD
    oldest_first = history[::-1]
    assert [fault.message for fault in oldest_first] == [
        "Volume attach failed",
        f"Guest of {instance} did not answer",  # a RuntimeError, declared safe to show
        "ValueError",
    ]
    assert [fault.id for fault in oldest_first[:2]] == outcome["fault_ids"]
    assert oldest_first[0].details == "attach timed out"
    assert "RuntimeError" in oldest_first[1].details
    assert "ValueError: Resize failed" in oldest_first[2].details
    assert {(fault.source, fault.host) for fault in history} == {("conductor", "cond-1")}


async def test_notifier_driver_delivers_at_exit_without_holding_up_green_threads(
    database_url: str, tmp_path: Path
) -> None:
    instance = str(uuid.uuid4())
    with server_not_started(database_url, tmp_path) as server:
        config_file = tmp_path / "taskmanager.conf"
        config_file.write_text(
            "[oslo_messaging_notifications]\ndriver = faultsvc\n"
            f"[faultsvc]\ntarget = {server.target}\nshutdown_timeout = 30\n"
        )
        with green_service(
            ["notifier", str(config_file), instance], tmp_path / "service.log"
        ) as service:
            await service.queued()
            await asyncio.to_thread(server.start)
            outcome = await service.outcome()

        history = await faults_of(server.target, instance)

    assert outcome["waited"] > SHORTEST_OUTAGE
    assert outcome["held_longest"] < LONGEST_HOLD
    assert [fault.message for fault in history[::-1]] == [
        "Volume creation failed",
        "Guest prepare failed",
        "Backup failed",
    ]
    assert {(fault.source, fault.host) for fault in history} == {("taskmanager", "tm-1")}


async def test_sync_client_serves_many_green_threads_at_once_with_their_own_roles(
    faultsvc_process: ServerProcess, tmp_path: Path
) -> None:
    instance = str(uuid.uuid4())
    async with FaultServiceClient.connect(faultsvc_process.target) as client:
        await client.record_fault(instance, "Guest prepare failed", details="Traceback ...")

    with green_service(
        ["reader", faultsvc_process.target, instance], tmp_path / "service.log"
    ) as service:
        outcome = await service.outcome()

    assert outcome["details_seen"] == {"admin": ["Traceback ..."], "tenant": [""]}
    assert outcome["most_at_once"] == GREEN_READERS
    assert outcome["held_longest"] < LONGEST_HOLD


def module_like(module: ModuleType, **replaced: Any) -> ModuleType:
    copy = ModuleType(module.__name__)
    copy.__dict__.update(vars(module), **replaced)
    return copy


def what_grpc_takes_from_lent_modules_for_its_first_channel() -> list[str]:
    """Run in a fresh process: grpc makes its thread and sockets for its first channel only."""
    taken: list[str] = []

    class Thread(threading.Thread):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            taken.append("threading.Thread")
            super().__init__(*args, **kwargs)

    def socketpair(*args: Any) -> tuple[socket.socket, socket.socket]:
        taken.append("socket.socketpair")
        return socket.socketpair(*args)

    lent = {
        "threading": module_like(threading, Thread=Thread),
        "socket": module_like(socket, socketpair=socketpair),
    }

    async def make_first_channel() -> None:
        with lent_to_grpc(lent):
            channel = grpc.aio.insecure_channel("127.0.0.1:9")
        await channel.close()

    asyncio.run(make_first_channel())
    return taken


def test_grpc_makes_its_thread_and_sockets_from_the_modules_lent_to_it() -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        taken = fresh.submit(what_grpc_takes_from_lent_modules_for_its_first_channel)
        assert taken.result(CHILD_TIMEOUT) == ["threading.Thread", "socket.socketpair"], (
            f"grpcio {grpc.__version__} no longer makes the thread that polls its completion "
            "queue, or the sockets that wake the event loop, from the `threading` and `socket` "
            "of grpc._cython.cygrpc: lending it unpatched ones does nothing, and under eventlet "
            "that thread is a green one that never runs"
        )


def test_a_grpcio_that_holds_nothing_to_lend_through_fails_by_name_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(importlib.import_module("grpc._cython.cygrpc"), "socket")
    loop_thread = GreenLoopThread("faultsvc-test")

    with pytest.raises(RuntimeError, match=r"grpc\._cython\.cygrpc holds no 'socket' module"):
        loop_thread.start(asyncio.sleep(0), timeout=5)
    assert loop_thread.loop.is_closed()
