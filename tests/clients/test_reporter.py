"""FaultReporter and SyncFaultReporter against the real server, through outages."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import grpc
import pytest

from faultsvc.app import FaultServer
from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import (
    Backoff,
    FaultReporter,
    FaultServiceClient,
    ReporterStats,
    SyncFaultReporter,
)
from faultsvc_client.fault_info import process_name
from tests.clients.server_answers import LOCK_WAIT_SECONDS, record_fault_answers
from tests.support.databases import writes_locked
from tests.support.faults import nth
from tests.support.servers import MakeServer, ServerProcess

QUICK = Backoff(initial=0.05, maximum=0.3)


def new_instance() -> str:
    return str(uuid.uuid4())


async def history_of(target: str, instance: str) -> list[Fault]:
    async with FaultServiceClient.connect(target, roles=["admin"]) as client:
        return [fault async for fault in client.iter_faults(instance)]


async def test_reporter_keeps_every_fault_through_an_outage_and_delivers_each_once_in_order(
    faultsvc_process: ServerProcess,
) -> None:
    server, instance = faultsvc_process, new_instance()
    async with FaultReporter(
        server.target, source="taskmanager", host="tm-1", backoff=QUICK
    ) as reporter:
        before = reporter.report(instance, "before the outage")
        assert await reporter.flush(10)

        await asyncio.to_thread(server.stop)
        during = [reporter.report(instance, nth("during the outage", n)) for n in range(20)]
        await asyncio.sleep(1.5)  # the reporter keeps trying meanwhile
        assert reporter.pending == 20
        restarted_at = datetime.now(UTC)
        await asyncio.to_thread(server.start)

        assert await reporter.flush(30)
        assert reporter.stats == ReporterStats(reported=21, delivered=21)

    history = await history_of(server.target, instance)
    assert [fault.id for fault in history] == [before, *during][::-1]
    assert [fault.message for fault in history][:2] == [
        nth("during the outage", 19),
        nth("during the outage", 18),
    ]
    assert {(fault.source, fault.host) for fault in history} == {("taskmanager", "tm-1")}
    # Each fault is dated when it happened, not when it could be delivered.
    assert all(fault.create_time.ToDatetime(tzinfo=UTC) < restarted_at for fault in history)


async def test_full_queue_drops_the_oldest_faults(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    reporter = FaultReporter(server.target, max_queue_size=3, backoff=QUICK)
    for n in range(5):
        reporter.report(instance, nth("fault", n))
    assert (reporter.pending, reporter.stats.dropped) == (3, 2)

    await reporter.start()
    assert await reporter.flush(10)
    await reporter.close()

    assert [f.message async for f in admin_client.iter_faults(instance)] == [
        nth("fault", 4),
        nth("fault", 3),
        nth("fault", 2),
    ]
    assert reporter.stats == ReporterStats(reported=5, delivered=3, dropped=2)


async def until(condition: Callable[[], bool]) -> None:
    """Waits, 20 s at most, until `condition()` holds: a metric or a log gives no event to await."""
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_full_queue_keeps_the_fault_being_sent_and_drops_the_oldest_waiting(
    make_server: MakeServer, database_url: str
) -> None:
    server = await make_server(database_timeout_seconds=LOCK_WAIT_SECONDS)
    instance = new_instance()
    async with FaultReporter(server.target, max_queue_size=2, backoff=QUICK) as reporter:
        with writes_locked(database_url):
            reporter.report(instance, "being sent")
            await until(lambda: record_fault_answers(server, grpc.StatusCode.UNAVAILABLE) > 0)
            for n in range(3):
                reporter.report(instance, nth("waiting", n))
            assert (reporter.pending, reporter.stats.dropped) == (3, 1)
        assert await reporter.flush(30)

    history = await history_of(server.target, instance)
    assert [fault.message for fault in history] == [
        *(nth("waiting", 2), nth("waiting", 1), "being sent")
    ]
    assert reporter.stats == ReporterStats(reported=4, delivered=3, dropped=1)


async def test_each_attempt_is_one_call_the_channel_does_not_retry_it(
    make_server: MakeServer, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(database_timeout_seconds=LOCK_WAIT_SECONDS)
    caplog.set_level(logging.DEBUG, logger="faultsvc_client.reporter")
    # The second attempt is a minute away: every answer seen before it is to the first.
    reporter = FaultReporter(server.target, backoff=Backoff(initial=60, maximum=60, jitter=0))
    with writes_locked(database_url):
        await reporter.start()
        reporter.report(new_instance(), "waits for the locked table")
        await until(lambda: "will retry" in caplog.text)
        assert record_fault_answers(server, grpc.StatusCode.UNAVAILABLE) == 1
        await reporter.close(timeout=0)

    # Given up on at close: counted, not silently lost.
    assert reporter.stats == ReporterStats(reported=1, dropped=1)


async def test_rejected_fault_is_dropped_and_the_next_one_delivered(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target, backoff=QUICK) as reporter:
        reporter.report("", "a fault of no instance")
        reporter.report("x" * 65, "a fault of an impossible instance")
        reporter.report(instance, "a fault of a real instance")
        assert await reporter.flush(10)

    assert reporter.stats == ReporterStats(reported=3, delivered=1, rejected=2)
    assert [f.message async for f in admin_client.iter_faults(instance)] == [
        "a fault of a real instance"
    ]


class GuestError(Exception):
    """A service's own error, written for the instance's owner."""


class GuestTimeout(GuestError):
    pass


INTERNAL = "connect to 10.20.30.40:3306 as trove@/var/run/mysqld.sock failed"


async def test_report_exception_shows_a_class_name_and_keeps_the_text_for_admins(
    server: FaultServer, admin_client: FaultServiceClient, user_client: FaultServiceClient
) -> None:
    instance = new_instance()

    def attach_volume() -> None:
        raise RuntimeError(INTERNAL)

    async with FaultReporter(server.target) as reporter:
        try:
            attach_volume()
        except RuntimeError as error:
            reporter.report_exception(instance, error)
        assert await reporter.flush(10)

    fault = await admin_client.get_latest_fault(instance)
    seen_by_tenant = await user_client.get_latest_fault(instance)
    assert fault is not None
    assert seen_by_tenant is not None
    assert fault.message == seen_by_tenant.message == "RuntimeError"
    assert fault.details.startswith("Traceback (most recent call last):\n")
    assert "in attach_volume" in fault.details
    assert fault.details.rstrip().endswith(f"RuntimeError: {INTERNAL}")


@pytest.mark.parametrize(
    "declared",
    [[GuestError], [f"{__name__}.GuestError"], [__name__], [f" {__name__} ", "nova.exception"]],
    ids=["class", "qualified name", "module", "among others"],
)
async def test_report_exception_shows_the_text_of_types_declared_safe(
    server: FaultServer, admin_client: FaultServiceClient, declared: list[str | type[Exception]]
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target, safe_exception_types=declared) as reporter:
        reporter.report_exception(instance, GuestTimeout("The guest did not answer in 600 s"))
        reporter.report_exception(instance, ValueError(INTERNAL))
        assert await reporter.flush(10)

    assert [f.message async for f in admin_client.iter_faults(instance)] == [
        "ValueError",
        "The guest did not answer in 600 s",
    ]


async def test_a_message_given_with_the_exception_is_the_faults_message(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target) as reporter:
        reporter.report_exception(instance, OSError(INTERNAL), "Volume attach failed")
        with pytest.raises(OSError, match="mysqld"), reporter.reporting(instance, "Resize failed"):
            raise OSError(INTERNAL)
        assert await reporter.flush(10)

    history = [f async for f in admin_client.iter_faults(instance)]
    assert [f.message for f in history] == ["Resize failed", "Volume attach failed"]
    assert all(INTERNAL in f.details for f in history)


async def test_exception_without_a_message_is_named_by_its_class(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target) as reporter:
        reporter.report_exception(instance, TimeoutError())
        assert await reporter.flush(10)

    fault = await admin_client.get_latest_fault(instance)
    assert fault is not None
    assert fault.message == "TimeoutError"


async def test_reporting_reports_and_reraises_from_blocks_and_functions(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target, safe_exception_types=[ValueError]) as reporter:
        with pytest.raises(ValueError, match="from a with block"), reporter.reporting(instance):
            raise ValueError("from a with block")

        with pytest.raises(ValueError, match="from an async with block"):
            async with reporter.reporting(instance):
                raise ValueError("from an async with block")

        @reporter.reporting(instance)
        def resize() -> None:
            raise ValueError("from a function")

        @reporter.reporting(instance)
        async def restart() -> None:
            raise ValueError("from a coroutine")

        @reporter.reporting(instance)
        async def healthy() -> str:
            return "fine"

        with pytest.raises(ValueError, match="from a function"):
            resize()
        with pytest.raises(ValueError, match="from a coroutine"):
            await restart()
        assert await healthy() == "fine"
        with pytest.raises(KeyboardInterrupt), reporter.reporting(instance):
            raise KeyboardInterrupt  # the operator's ^C is no fault of the instance
        assert await reporter.flush(10)

    # The two blocks raise in this one function: one code path, so one fault.
    assert [(f.message, f.occurrence_count) async for f in admin_client.iter_faults(instance)] == [
        ("from a coroutine", 1),
        ("from a function", 1),
        ("from an async with block", 2),
    ]


def new_reporter(kind: str, target: str) -> FaultReporter | SyncFaultReporter:
    reporter = FaultReporter(target)
    return SyncFaultReporter(reporter) if kind == "threaded" else reporter


async def close(reporter: FaultReporter | SyncFaultReporter) -> None:
    if isinstance(reporter, FaultReporter):
        await reporter.close(timeout=10)
    else:
        await asyncio.to_thread(reporter.close, 10)


@pytest.mark.parametrize("kind", ["async", "threaded"])
async def test_faults_reported_before_start_are_delivered_at_close(
    kind: str, server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    reporter = new_reporter(kind, server.target)
    reporter.report(instance, "reported before start")

    await close(reporter)

    assert [f.message async for f in admin_client.iter_faults(instance)] == [
        "reported before start"
    ]
    assert reporter.stats == ReporterStats(reported=1, delivered=1)


async def test_report_never_raises_into_its_caller(server: FaultServer) -> None:
    async with FaultReporter(server.target) as reporter:
        assert reporter.report(new_instance(), cast(str, object())) is None
    assert reporter.stats == ReporterStats()


@pytest.mark.parametrize("kind", ["async", "threaded"])
@pytest.mark.parametrize("started", [True, False], ids=["started", "never started"])
async def test_a_closed_reporter_queues_nothing_and_gives_no_fault_id(
    kind: str, started: bool, server: FaultServer
) -> None:
    reporter = new_reporter(kind, server.target)
    if started and isinstance(reporter, FaultReporter):
        await reporter.start()
    elif started:
        await asyncio.to_thread(reporter.start)
    await close(reporter)

    assert reporter.report(new_instance(), "after close") is None
    assert reporter.report_exception(new_instance(), ValueError("after close")) is None
    assert (reporter.pending, reporter.stats) == (0, ReporterStats(reported=2, dropped=2))


async def test_reporter_names_its_process_and_host_by_default(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    instance = new_instance()
    async with FaultReporter(server.target) as reporter:
        reporter.report(instance, "boom")
        assert await reporter.flush(10)

    fault = await admin_client.get_latest_fault(instance)
    assert fault is not None
    assert (fault.source, fault.host) == (process_name(), socket.gethostname())


async def test_sync_reporter_delivers_from_many_threads_through_an_outage(
    faultsvc_process: ServerProcess,
) -> None:
    server, instance = faultsvc_process, new_instance()
    reporter = SyncFaultReporter(FaultReporter(server.target, source="conductor", backoff=QUICK))
    reporter.start()
    reported: dict[int, list[str | None]] = {}

    def report_from_a_thread(worker: int) -> None:
        reported[worker] = [
            reporter.report(instance, nth(nth("worker", worker) + " fault", n)) for n in range(10)
        ]

    def report_from_threads() -> None:
        threads = [threading.Thread(target=report_from_a_thread, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(report_from_threads)
    await asyncio.to_thread(server.start)
    assert await asyncio.to_thread(reporter.flush, 30)
    await asyncio.to_thread(reporter.close)

    history = await history_of(server.target, instance)
    assert sorted(fault.id for fault in history) == sorted(
        cast(str, fault_id) for ids in reported.values() for fault_id in ids
    )
    for worker, ids in reported.items():
        # Newest first overall, so each thread's faults come back in reverse.
        assert [fault.id for fault in history if fault.id in ids] == ids[::-1], worker
    assert reporter.stats == ReporterStats(reported=40, delivered=40)


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.5)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 2.0), (500, 2.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1
