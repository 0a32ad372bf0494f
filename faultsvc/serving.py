"""Running the server: one process, or several workers sharing one port, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any

import uvloop
from prometheus_client import CollectorRegistry

from faultsvc.app import build_server, check_bind_is_safe
from faultsvc.config import Address, Settings, parse_address
from faultsvc.logs import configure_logging
from faultsvc.metrics import MULTIPROCESS_DIR_ENV, multiprocess_registry, serve_metrics
from faultsvc.policy.auth import load_tokens, server_credentials
from faultsvc.storage.failover import open_database
from faultsvc.storage.migrate import migrate

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A host that resolves to an address this machine lacks (localhost's ::1 without IPv6)
# is served on its other addresses, as grpc does.
MISSING_ADDRESS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


class StartError(Exception):
    """The server cannot start: its port is taken, say; the message is one line."""


def run(settings: Settings) -> int:
    """Serves until told to stop; returns the process's exit code."""
    check_bind_is_safe(settings)
    # Read before anything starts, so that a bad file stops the command, not each worker.
    load_tokens(settings)
    server_credentials(settings)
    with claim_port(parse_address(settings.listen)):
        if settings.workers == 1:
            return _exit_code_of(serve(settings, reuse_port=True, metrics=True))
        return run_workers(settings)


@contextlib.contextmanager
def claim_port(address: Address) -> Iterator[None]:
    """Refuses a port that anyone else serves, and keeps others off it while we serve.

    Our servers listen with SO_REUSEPORT, so that workers share one port. The
    kernel lets any process of the same user join such a port, another
    faultsvc on another database included, and calls would then be split
    between the two without a word. So, on each address of the host, first a
    bind without SO_REUSEPORT fails if anyone listens there (SO_REUSEADDR
    ignores the connections of a previous run still in TIME_WAIT). Then a
    socket bound with SO_REUSEPORT alone is held until we stop: our servers,
    with SO_REUSEPORT, may join it; the first bind of another faultsvc fails
    on it, even before our workers listen.
    """
    if address.port == 0:  # the kernel picks a free port
        yield
        return
    try:
        resolved = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise StartError(f"cannot listen on {address}: {error.strerror}") from None
    held: list[socket.socket] = []
    try:
        for family, _, _, _, sockaddr in dict.fromkeys(resolved):
            try:
                _bound(family, sockaddr, socket.SO_REUSEADDR).close()
                held.append(_bound(family, sockaddr, socket.SO_REUSEPORT))
            except OSError as error:
                if error.errno not in MISSING_ADDRESS:
                    raise StartError(_bind_error(address, error)) from None
        if not held:
            raise StartError(f"cannot listen on {address}: no such address on this machine")
        yield
    finally:
        for claim in held:
            claim.close()


def _bound(family: int, sockaddr: Any, option: int) -> socket.socket:
    """A TCP socket bound to `sockaddr` with the socket option `option` set, not listening."""
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, option, 1)
        bound.bind(sockaddr)
    except OSError:
        bound.close()
        raise
    return bound


def _bind_error(address: Address, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {address.port} is in use: something else listens on {address}"
    return f"cannot listen on {address}: {error.strerror}"


def run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)


def _exit_code_of(serving: Coroutine[Any, Any, None]) -> int:
    """Serves; 0 once stopped by a signal, 1 when a part of the server failed."""
    try:
        run_async(serving)
    except ServerBroken as error:
        log.error("%s; stopped", error)
        return 1
    return 0


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    migrate_schema: bool = True,
    metrics: bool = False,
    stop_signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> None:
    """Serves until a stop signal; in-flight calls then finish and the pool closes."""
    server = await build_server(settings, reuse_port=reuse_port, migrate_schema=migrate_schema)
    if metrics and settings.metrics_listen:
        _serve_metrics(settings.metrics_listen, server.metrics_registry)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in stop_signals:
        loop.add_signal_handler(signum, stopping.set)
    signalled = asyncio.ensure_future(stopping.wait())
    broken = asyncio.ensure_future(server.broken())
    await asyncio.wait([signalled, broken], return_when=asyncio.FIRST_COMPLETED)
    for waiting in (signalled, broken):
        waiting.cancel()
    log.info("shutting down; in-flight calls have %.0f s to finish", settings.grace_seconds)
    await server.stop()
    if not stopping.is_set():
        raise ServerBroken(f"a part of the server failed: {broken.result()!r}")


class ServerBroken(RuntimeError):
    """A part of the server failed and it stopped; its supervisor should start it again."""


def run_workers(settings: Settings) -> int:
    """Runs `settings.workers` processes on one port (SO_REUSEPORT), each with its own pool.

    The schema is migrated once, before any worker starts. A worker that dies
    stops the others: the supervisor (systemd, Kubernetes) restarts the whole.
    """
    if settings.listen.endswith(":0"):
        raise ValueError("--workers above 1 needs a fixed port, not :0")
    run_async(_migrate(settings))
    with tempfile.TemporaryDirectory(prefix="faultsvc-metrics-") as metrics_dir:
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir  # the workers inherit it
        if settings.metrics_listen:
            _serve_metrics(settings.metrics_listen, multiprocess_registry())
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_worker, args=(settings, os.getpid()), name=f"worker-{n}")
            for n in range(1, settings.workers + 1)
        ]
        for worker in workers:
            worker.start()
        log.info("%d workers serving on %s", len(workers), settings.listen)
        signalled = _wait_for_stop_or_exit(workers)
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join(settings.grace_seconds + 10)
            if worker.is_alive():
                worker.kill()
                worker.join()
        failed = [w.name for w in workers if w.exitcode != 0]
        if failed or not signalled:
            log.error("workers %s exited unexpectedly", ", ".join(failed) or "all")
            return 1
        return 0


def _serve_metrics(listen: str, registry: CollectorRegistry) -> None:
    try:
        serve_metrics(listen, registry)
    except OSError as error:
        raise StartError(f"cannot serve metrics on {listen}: {error.strerror}") from None


def _wait_for_stop_or_exit(workers: Sequence[multiprocessing.process.BaseProcess]) -> bool:
    """Blocks until SIGINT/SIGTERM (True) or until a worker exits by itself (False)."""
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.2):
        if not all(worker.is_alive() for worker in workers):
            return False
    return True


def _worker(settings: Settings, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # The parent coordinates shutdown: a terminal's Ctrl-C reaches the whole
    # process group, and only the parent's SIGTERM should stop a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    # The parent migrated the schema before it started the workers.
    serving = serve(settings, reuse_port=True, migrate_schema=False, stop_signals=(signal.SIGTERM,))
    sys.exit(_exit_code_of(serving))


def _die_with_parent(parent_pid: int) -> None:
    """Asks Linux to SIGKILL this worker when its parent dies, even by SIGKILL."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before we asked
        os._exit(1)


async def _migrate(settings: Settings) -> None:
    async with open_database(settings) as database:
        await migrate(database)
