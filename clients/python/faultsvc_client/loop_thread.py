"""An event loop on a thread of its own, for synchronous callers of the async clients.

The sync reporter and the sync client keep their grpc.aio channel on such a
loop, and the calling threads hand it coroutines and wait for the results:

    loop_thread = start_loop_thread("faultsvc-client", make_client())
    fault = loop_thread.run(client.get_latest_fault(instance_id), timeout=5)
    loop_thread.stop(timeout=5)

It works under eventlet's monkey patching too, as OpenStack services run
(see `GreenLoopThread`). Its thread is a real one there, so, as for any real
thread in such a service, logging's locks must work across threads and
green threads, as oslo.log's `setup()` makes them: a handler whose lock is
green can leave the loop's thread waiting on it for good.

grpc supports gevent (`grpc.experimental.gevent`) but not eventlet: support
for it was proposed to grpc and never merged. So under eventlet grpc's C
extension is lent unpatched modules while a channel is made (see
`lent_to_grpc`), which relies on how grpcio makes its own thread: a grpcio
that changed it is refused at start, by name, rather than left to hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from types import ModuleType
from typing import Any, TypeVar

import grpc

_T = TypeVar("_T")

# How long a caller waits for the loop beyond the time its own work was
# given: the loop is local and never busy for long.
LOOP_GRACE = 5.0

# How often a green thread waiting for the loop looks again: short next to a
# call to faultsvc, long next to a turn of eventlet's hub.
_GREEN_POLL_INTERVAL = 0.005

# The modules of grpc's C extension that its first grpc.aio channel makes,
# with `threading.Thread`, the thread that waits on gRPC's completion queue,
# blocking in C, and with `socket.socketpair`, the sockets that wake the loops.
GRPC_THREADS_AND_SOCKETS = ("threading", "socket")


def start_loop_thread(name: str, first: Coroutine[Any, Any, _T]) -> tuple[LoopThread, _T]:
    """A loop thread fit for this process, started; and what `first` returned on it.

    `first` makes the caller's grpc.aio channel: a channel belongs to the loop
    it is made on.
    """
    kind = GreenLoopThread if eventlet_monkey_patched() else LoopThread
    loop_thread = kind(name)
    return loop_thread, loop_thread.start(first, timeout=LOOP_GRACE)


class LoopThread:
    """An event loop running on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = self._new_loop()
        self._thread: threading.Thread = self._threading().Thread(
            target=self._run_forever, name=name, daemon=True
        )

    def start(self, first: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        """Starts the thread, then runs `first` on the loop and returns its result."""
        self._thread.start()
        return self.run(first, timeout=timeout)

    def run(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float | None) -> _T:
        """Runs `coroutine` on the loop and returns its result.

        Safe from any thread but the loop's own. After `timeout` seconds the
        coroutine is cancelled and TimeoutError raised.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, *, timeout: float) -> None:
        """Stops the loop; waits up to `timeout` seconds for the thread to end."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def finish(self, last: Coroutine[Any, Any, None], *, timeout: float | None) -> None:
        """Runs `last` on the loop (see `run`), then stops the loop, even if `last` failed."""
        try:
            self.run(last, timeout=timeout)
        finally:
            self.stop(timeout=LOOP_GRACE)

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


class GreenLoopThread(LoopThread):
    """The same, in a process under eventlet's monkey patching.

    There `threading.Thread` makes green threads, asyncio's own loop would
    wait through the patched `select`, and a green thread blocked on a lock
    blocks all the others. So the thread is a real one, from the unpatched
    `threading`; the loop is uvloop's, which polls and wakes itself through
    libuv, out of the patching's reach; and the caller, a green thread,
    waits by sleeping green until the loop thread sets an unpatched Event.
    The two threads wait on each other through unpatched locks only: a green
    lock that a real thread waits on is never released to it. Any number of
    green threads may wait on the loop at once.
    """

    def start(self, first: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        try:
            # Before the thread runs: a grpcio this cannot work with fails
            # here, by name, instead of with calls that hang.
            grpc_extension()
        except RuntimeError:
            first.close()
            self.loop.close()
            raise
        # Made here, in the caller's thread, so that two loop threads never race to make it.
        _grpc_setup_lock()
        self._thread.start()
        return self.run(_on_real_grpc_threads(first), timeout=timeout)

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
            self.loop.call_soon_threadsafe(lambda: tasks[0].cancel())
            raise TimeoutError(f"{self._thread.name}'s event loop did not answer in {timeout} s")
        return tasks[0].result()

    def stop(self, *, timeout: float) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        _wait_green(lambda: not self._thread.is_alive(), timeout)

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        import uvloop

        return uvloop.new_event_loop()

    def _threading(self) -> ModuleType:
        return _unpatched("threading")


async def _on_real_grpc_threads(first: Coroutine[Any, Any, _T]) -> _T:
    """Runs `first`, which makes a grpc.aio channel, with grpc's own thread a real one.

    Made from the patched `threading`, grpc's thread would be a green thread
    of the loop's thread, and would block it for good; so, as oslo.concurrency
    does for `subprocess`, grpc's extension is lent the unpatched modules,
    only while the channel is made (making it does not suspend).
    """
    with lent_to_grpc({name: _unpatched(name) for name in GRPC_THREADS_AND_SOCKETS}):
        return await first


def grpc_extension() -> ModuleType:
    """grpc's C extension, checked to hold the modules `GRPC_THREADS_AND_SOCKETS` names.

    Raises RuntimeError, naming what changed, for a grpcio whose extension
    no longer holds them: lending it modules would do nothing there.
    """
    cygrpc = importlib.import_module("grpc._cython.cygrpc")
    for name in GRPC_THREADS_AND_SOCKETS:
        module = getattr(cygrpc, name, None)
        if not (isinstance(module, ModuleType) and module.__name__ == name):
            raise RuntimeError(
                f"grpcio {grpc.__version__} changed: grpc._cython.cygrpc holds no {name!r} "
                "module to lend an unpatched one through, so grpc.aio cannot run beside "
                "eventlet's monkey patching"
            )
    return cygrpc


@contextlib.contextmanager
def lent_to_grpc(modules: Mapping[str, ModuleType]) -> Iterator[None]:
    """grpc's C extension makes its threads and sockets from `modules` meanwhile.

    The lock keeps two loop threads from swapping them at once, and from
    meeting on grpc.aio's own lock for its setup, which is a green one.
    """
    cygrpc = grpc_extension()
    with _grpc_setup_lock():
        own = {name: getattr(cygrpc, name) for name in modules}
        for name, module in modules.items():
            setattr(cygrpc, name, module)
        try:
            yield
        finally:
            for name, module in own.items():
                setattr(cygrpc, name, module)


@functools.cache
def _grpc_setup_lock() -> threading.Lock:
    """The one real lock around grpc.aio's setup on loop threads, under monkey patching."""
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
