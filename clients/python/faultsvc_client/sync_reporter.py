"""The fault reporter for threaded code: it runs on its own thread and event loop.

    reporter = SyncFaultReporter("faultsvc.example:50051", source="taskmanager")
    reporter.start()
    with reporter.reporting(instance_id):
        prepare_guest()
    reporter.close(timeout=5)

Every call but `start`, `flush` and `close` only hands the fault to the
reporter's loop and returns; none of them raises into the caller.

It runs under eventlet's monkey patching too, as OpenStack services do
(see `_GreenLoopThread`). Its thread is a real one there, so, as for any
real thread in such a service, logging's locks must work across threads
and green threads, as oslo.log's `setup()` makes them: a handler whose lock
is green can leave the reporter's thread waiting on it for good.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from types import ModuleType, TracebackType
from typing import Any, Self, TypeVar

from faultsvc_client.client import DEFAULT_TARGET, TlsConfig
from faultsvc_client.fault_info import SafeExceptionTypes
from faultsvc_client.reporter import (
    DEFAULT_BACKOFF,
    Backoff,
    FaultReporter,
    FaultReporting,
    ReporterStats,
)

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long start() and close() wait for the reporter's own loop beyond the
# time they were given: the loop is local and never busy for long.
_LOOP_GRACE = 5.0

# How often a green thread waiting for the reporter's loop looks again: short
# next to a delivery, long next to a turn of eventlet's hub.
_GREEN_POLL_INTERVAL = 0.005


class SyncFaultReporter:
    """A `FaultReporter` running on a daemon thread with an event loop of its own."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        source: str | None = None,
        host: str | None = None,
        max_queue_size: int = 1_000,
        backoff: Backoff = DEFAULT_BACKOFF,
        call_timeout: float = 5.0,
        safe_exception_types: Iterable[str | type[BaseException]] = (),
    ) -> None:
        self._reporter = FaultReporter(
            target,
            token=token,
            tls=tls,
            source=source,
            host=host,
            max_queue_size=max_queue_size,
            backoff=backoff,
            call_timeout=call_timeout,
            safe_exception_types=safe_exception_types,
        )
        self._loop_thread: _LoopThread | None = None

    @property
    def stats(self) -> ReporterStats:
        return self._reporter.stats

    @property
    def pending(self) -> int:
        return self._reporter.pending

    @property
    def source(self) -> str:
        return self._reporter.source

    @property
    def host(self) -> str:
        return self._reporter.host

    @property
    def safe_exception_types(self) -> SafeExceptionTypes:
        return self._reporter.safe_exception_types

    def start(self) -> None:
        """Starts the reporter's thread and loop, and delivery on them."""
        if self._loop_thread is not None:
            raise RuntimeError("the reporter is already started")
        kind = _GreenLoopThread if eventlet_monkey_patched() else _LoopThread
        self._loop_thread = kind("faultsvc-reporter")
        self._loop_thread.start(self._reporter.start(), timeout=_LOOP_GRACE)

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every fault reported so far is delivered or given up on.

        Returns False if `timeout` seconds passed first.
        """
        if self._loop_thread is None:
            return self._reporter.pending == 0
        wait = None if timeout is None else timeout + _LOOP_GRACE
        return self._loop_thread.run(self._reporter.flush(timeout), timeout=wait)

    def close(self, timeout: float | None = 5.0) -> None:
        """Delivers what it can within `timeout` seconds, then stops the thread.

        A reporter never started starts now if faults were reported to it,
        so that they are delivered too.
        """
        if self._loop_thread is None and self._reporter.pending:
            self.start()
        loop_thread = self._loop_thread
        if loop_thread is None or loop_thread.loop.is_closed():
            return
        wait = None if timeout is None else timeout + _LOOP_GRACE
        try:
            loop_thread.run(self._reporter.close(timeout), timeout=wait)
        finally:
            loop_thread.stop(timeout=_LOOP_GRACE)

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
    ) -> str | None:
        """Queues a fault of the instance; returns its fault_id (None if it could not)."""
        return self._reporter.report(instance_id, message, details, source=source, host=host)

    def report_exception(
        self, instance_id: str, exc: BaseException, message: str | None = None
    ) -> str | None:
        """Queues the exception as a fault; see `FaultReporter.report_exception`."""
        return self._reporter.report_exception(instance_id, exc, message)

    def reporting(self, instance_id: str, message: str | None = None) -> FaultReporting:
        """A context manager and decorator that reports an escaping exception."""
        return self._reporter.reporting(instance_id, message)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _LoopThread:
    """An event loop running on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = self._new_loop()
        self._thread: threading.Thread = self._threading().Thread(
            target=self._run_forever, name=name, daemon=True
        )

    def start(self, first: Coroutine[Any, Any, None], *, timeout: float) -> None:
        """Starts the thread, then runs `first` on the loop and waits for it."""
        self._thread.start()
        self.run(first, timeout=timeout)

    def run(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float | None) -> _T:
        """Runs `coroutine` on the loop and returns its result (TimeoutError after `timeout`)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, *, timeout: float) -> None:
        """Stops the loop; waits up to `timeout` seconds for the thread to end."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def _threading(self) -> ModuleType:
        return threading

    def _run_forever(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


class _GreenLoopThread(_LoopThread):
    """The same, in a process under eventlet's monkey patching.

    There `threading.Thread` makes green threads, asyncio's own loop would
    wait through the patched `select`, and a green thread blocked on a lock
    blocks all the others. So the thread is a real one, from the unpatched
    `threading`; the loop is uvloop's, which polls and wakes itself through
    libuv, out of the patching's reach; and the caller, a green thread,
    waits by sleeping green until the loop thread sets an unpatched Event.
    The two threads wait on each other through unpatched locks only: a green
    lock that a real thread waits on is never released to it.
    """

    def start(self, first: Coroutine[Any, Any, None], *, timeout: float) -> None:
        # Made here, in the caller's thread, so that two loop threads never race to make it.
        setup_lock = _grpc_setup_lock()
        self._thread.start()
        self.run(_on_real_grpc_threads(first, setup_lock), timeout=timeout)

    def run(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float | None) -> _T:
        # Not run_coroutine_threadsafe: its concurrent Future waits on a green lock.
        done = self._threading().Event()
        tasks: list[asyncio.Task[_T]] = []

        def create_task() -> None:
            task = self.loop.create_task(coroutine)
            task.add_done_callback(lambda _: done.set())
            tasks.append(task)

        self.loop.call_soon_threadsafe(create_task)
        if not _wait_green(done.is_set, timeout):
            raise TimeoutError(f"the fault reporter's loop did not answer in {timeout} s")
        return tasks[0].result()

    def stop(self, *, timeout: float) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        _wait_green(lambda: not self._thread.is_alive(), timeout)

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        import uvloop

        return uvloop.new_event_loop()

    def _threading(self) -> ModuleType:
        return _unpatched("threading")


async def _on_real_grpc_threads(
    first: Coroutine[Any, Any, None], setup_lock: threading.Lock
) -> None:
    """Runs `first`, which makes the reporter's channel, with grpc's own threads real ones.

    The first grpc.aio channel of a process starts the thread that waits on
    gRPC's completion queue, blocking in C, and the socket that wakes the
    loops, from the `threading` and `socket` modules grpc's C extension
    imported. Patched, that thread would be a green thread of the loop's
    thread, and would block it for good; so, as oslo.concurrency does for
    `subprocess`, the extension is lent the unpatched modules, here only
    while the channel is made (the reporter's start does not suspend).
    The lock keeps two loop threads from swapping them at once, and from
    meeting on grpc.aio's own lock for its setup, which is a green one.
    """
    cygrpc = importlib.import_module("grpc._cython.cygrpc")
    names = ("threading", "socket")
    with setup_lock:
        patched = [getattr(cygrpc, name) for name in names]
        for name in names:
            setattr(cygrpc, name, _unpatched(name))
        try:
            await first
        finally:
            for name, module in zip(names, patched, strict=True):
                setattr(cygrpc, name, module)


@functools.cache
def _grpc_setup_lock() -> threading.Lock:
    """The one real lock around the reporters' grpc.aio setup, under monkey patching."""
    lock: threading.Lock = _unpatched("threading").Lock()
    return lock


def _wait_green(done: Callable[[], bool], timeout: float | None) -> bool:
    """Waits until `done()` sleeping green, so other green threads run; False on timeout."""
    sleep = _eventlet().sleep
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        sleep(_GREEN_POLL_INTERVAL)
    return True


def _unpatched(module_name: str) -> ModuleType:
    """The module as it was before eventlet's monkey patching."""
    module: ModuleType = _eventlet().patcher.original(module_name)
    return module


def _eventlet() -> Any:
    # Imported only where eventlet has already patched the process.
    import eventlet  # type: ignore[import-untyped]

    return eventlet


def eventlet_monkey_patched() -> bool:
    """Whether eventlet has monkey-patched this process (checked without importing it)."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and any(
        patcher.is_monkey_patched(name) for name in ("thread", "select", "socket")
    )
