"""The feed WatchFaults follows, on each backend: every occurrence, once, whatever commits late."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.errors import InvalidArgument, ResumeTokenExpired, WatcherTooSlow, WatchInterrupted
from faultsvc.faults import StoredFault, utc_now
from faultsvc.feed import FaultFeed, FeedBatch, decode_resume_token
from faultsvc.filters import WATCH, FaultFilter, parse_filter
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.fleet import FleetStore
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import fault_occurrences, instance_faults
from tests.support.faults import new_fault, server_made, stored

POLL_SECONDS = 0.05
WAIT_SECONDS = 10.0


@pytest.fixture
async def feed(engine: AsyncEngine) -> AsyncIterator[FaultFeed]:
    feed = make_feed(engine)
    feed.start()
    yield feed
    await feed.close()


def make_feed(engine: AsyncEngine, **settings: Any) -> FaultFeed:
    return FaultFeed(
        FleetStore(DatabaseEndpoints([engine])),
        **({"poll_seconds": POLL_SECONDS} | settings),
    )


class Watcher:
    """A watch read in the background: the occurrence ids in order, and how it ended."""

    def __init__(self, batches: AsyncIterator[FeedBatch]) -> None:
        self.batches = batches
        self.ids: list[str] = []
        self.counts: list[int] = []
        self.tokens: list[str] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for batch in self.batches:
                self.ids += [o.id for o in batch.occurrences]
                self.counts += [o.fault.occurrence_count for o in batch.occurrences]
                self.tokens.append(batch.resume_token)
                self._changed.set()
        except Exception as error:  # how the watch ended, for the test to check
            self.error = error
            self._changed.set()

    async def until(self, done: Any) -> None:
        """Waits until `done()` holds, or fails the test after WAIT_SECONDS."""
        async with asyncio.timeout(WAIT_SECONDS):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def has(self, count: int) -> None:
        await self.until(lambda: len(self.ids) >= count or self.error is not None)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def watching(
    feed: FaultFeed,
    fault_filter: FaultFilter = FaultFilter(),  # noqa: B008
    token: str = "",
) -> AsyncIterator[Watcher]:
    watcher = Watcher(feed.watch(fault_filter, decode_resume_token(token), with_details=True))
    await watcher.until(lambda: watcher.tokens or watcher.error is not None)  # subscribed
    try:
        yield watcher
    finally:
        await watcher.stop()


async def record(store: FaultStore, *faults: Any) -> list[StoredFault]:
    results = await store.record_batch(server_made(faults))
    assert all(isinstance(result, StoredFault) for result in results)
    return results  # type: ignore[return-value]


async def test_a_watcher_gets_every_occurrence_from_now_on_with_its_count(
    store: FaultStore, feed: FaultFeed
) -> None:
    before = await stored(store, new_fault("i-0"))
    async with watching(feed) as watcher:
        assert watcher.ids == []  # the first batch: no occurrence, a token
        repeats = [new_fault("i-1", fingerprint="same") for _ in range(3)]
        other = new_fault("i-2")
        for fault in [*repeats, other]:
            await stored(store, fault)
        await watcher.has(4)
    assert before.id not in watcher.ids
    assert sorted(watcher.ids) == sorted(fault.id for fault in [*repeats, other])
    counts = dict(zip(watcher.ids, watcher.counts, strict=True))
    assert [counts[fault.id] for fault in repeats] == [1, 2, 3]  # the count each one made
    assert counts[other.id] == 1


async def test_repeats_read_in_one_poll_carry_the_counts_they_made(
    store: FaultStore, engine: AsyncEngine
) -> None:
    feed = make_feed(engine, poll_seconds=0.5)
    feed.start()
    try:
        async with watching(feed) as watcher:
            await record(store, *(new_fault("i-1", fingerprint="burst") for _ in range(5)))
            await watcher.has(5)
    finally:
        await feed.close()
    assert watcher.counts == [1, 2, 3, 4, 5]


async def insert_committed_late(
    engine: AsyncEngine, fault: StoredFault, recorded_ago: timedelta
) -> None:
    """A fault and its occurrence, committed now but recorded `recorded_ago` earlier."""
    recorded = await FleetStore(DatabaseEndpoints([engine])).feed_now() - recorded_ago
    async with engine.begin() as connection:
        await connection.execute(sa.insert(instance_faults), [fault.as_row()])
        await connection.execute(
            sa.insert(fault_occurrences),
            [
                {
                    "id": fault.id,
                    "fault_id": fault.id,
                    "occurred": fault.created,
                    "recorded": recorded,
                }
            ],
        )


async def test_an_occurrence_that_commits_late_is_streamed(
    store: FaultStore, feed: FaultFeed, engine: AsyncEngine
) -> None:
    """Recorded before occurrences already streamed, it becomes visible after them."""
    async with watching(feed) as watcher:
        first = await stored(store, new_fault("i-1"))
        await watcher.has(1)
        await asyncio.sleep(POLL_SECONDS * 4)  # the feed moved on
        late = StoredFault.of(new_fault("i-late"), updated=utc_now())
        await insert_committed_late(engine, late, timedelta(seconds=5))
        then = await stored(store, new_fault("i-2"))
        await watcher.has(3)
    assert watcher.ids[0] == first.id
    assert sorted(watcher.ids[1:]) == sorted([late.id, then.id])


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_a_transaction_that_commits_after_later_ones_is_streamed(
    store: FaultStore, feed: FaultFeed, engine: AsyncEngine
) -> None:
    """On MariaDB, concurrent transactions commit out of the order their rows were dated."""
    slow = StoredFault.of(new_fault("i-slow"), updated=utc_now())
    async with watching(feed) as watcher, engine.connect() as connection:
        await connection.execute(sa.insert(instance_faults), [slow.as_row()])
        await connection.execute(
            sa.insert(fault_occurrences),
            [{"id": slow.id, "fault_id": slow.id, "occurred": slow.created}],  # dated now
        )
        quick = [await stored(store, new_fault(f"i-{n}")) for n in range(3)]
        await watcher.has(3)
        await asyncio.sleep(POLL_SECONDS * 4)
        await connection.commit()
        await watcher.has(4)
    assert watcher.ids == [*(fault.id for fault in quick), slow.id]


async def test_a_watcher_that_falls_behind_is_ended_with_a_token_and_misses_nothing(
    store: FaultStore, engine: AsyncEngine
) -> None:
    feed = make_feed(engine, queue_size=5)
    feed.start()
    try:
        batches = feed.watch(FaultFilter(), None, with_details=False)
        first = await anext(batches)  # the first token; then it reads nothing for a while
        # Two reads: the first reaches the empty queue whatever its size, the
        # second finds it full (in one read, all twelve would be a burst).
        recorded = [await stored(store, new_fault(f"i-{n}")) for n in range(6)]
        await asyncio.sleep(POLL_SECONDS * 4)
        recorded += [await stored(store, new_fault(f"i-{n}")) for n in range(6, 12)]
        await asyncio.sleep(POLL_SECONDS * 6)
        async with asyncio.timeout(30):
            with pytest.raises(WatcherTooSlow) as ended:
                async for _ in batches:
                    pass
        assert ended.value.resume_token == first.resume_token
        assert ended.value.error_metadata() == {"resume_token": first.resume_token}
        async with watching(feed, token=ended.value.resume_token) as resumed:
            await resumed.has(12)
    finally:
        await feed.close()
    assert {fault.id for fault in recorded} <= set(resumed.ids)


async def test_a_burst_larger_than_the_queue_reaches_a_watcher_that_keeps_up(
    store: FaultStore, engine: AsyncEngine
) -> None:
    feed = make_feed(engine, queue_size=5, poll_seconds=0.5)
    feed.start()
    try:
        async with watching(feed) as watcher:
            await record(store, *(new_fault(f"i-{n}") for n in range(20)))
            await watcher.has(20)
    finally:
        await feed.close()
    assert watcher.error is None


async def test_resuming_replays_what_came_since_the_token(
    store: FaultStore, feed: FaultFeed
) -> None:
    async with watching(feed) as watcher:
        seen = await stored(store, new_fault("i-1"))
        await watcher.has(1)
    token = watcher.tokens[-1]
    missed = [await stored(store, new_fault(f"i-{n}")) for n in range(2, 5)]
    async with watching(feed, token=token) as resumed:
        await resumed.has(3)
        live = await stored(store, new_fault("i-5"))
        await resumed.until(lambda: live.id in resumed.ids)
    # Occurrences recorded within the overlap before the token may come again, never missed.
    new = [i for i in resumed.ids if i != seen.id]
    assert new == [*(fault.id for fault in missed), live.id]
    assert len(resumed.ids) == len(set(resumed.ids))  # once each in one stream


async def test_a_filter_holds_live_and_in_a_replay(store: FaultStore, feed: FaultFeed) -> None:
    api = parse_filter('source = "api"', WATCH)
    async with watching(feed) as everything, watching(feed, api) as only_api:
        token = only_api.tokens[-1]
        faults = [
            await stored(store, new_fault(f"i-{n}", source="api" if n % 2 else "conductor"))
            for n in range(4)
        ]
        await everything.has(4)
        await only_api.has(2)
    wanted = [fault.id for fault in faults if fault.source == "api"]
    assert only_api.ids == wanted
    async with watching(feed, api, token) as replayed:
        await replayed.has(2)
    assert replayed.ids == wanted


async def test_a_hundred_watchers_each_get_every_occurrence(
    store: FaultStore, feed: FaultFeed
) -> None:
    watchers = [Watcher(feed.watch(FaultFilter(), None, with_details=False)) for _ in range(100)]
    try:
        for watcher in watchers:
            await watcher.until(lambda w=watcher: bool(w.tokens))
        assert feed.watchers == 100
        recorded = await record(store, *(new_fault(f"i-{n}") for n in range(20)))
        for watcher in watchers:
            await watcher.has(20)
    finally:
        for watcher in watchers:
            await watcher.stop()
    expected = sorted(fault.id for fault in recorded)
    assert all(sorted(watcher.ids) == expected for watcher in watchers)
    assert feed.watchers == 0


@contextmanager
def feed_reads(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements that read fault_occurrences while the block runs."""
    statements: list[str] = []

    def seen(*args: Any) -> None:
        if "fault_occurrences" in args[2] and args[2].lstrip().upper().startswith("SELECT"):
            statements.append(args[2])

    sa.event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", seen)


async def test_one_poll_per_process_however_many_watchers(
    feed: FaultFeed, engine: AsyncEngine
) -> None:
    async def reads_while_watched(count: int) -> int:
        watchers = [
            Watcher(feed.watch(FaultFilter(), None, with_details=False)) for _ in range(count)
        ]
        try:
            for watcher in watchers:
                await watcher.until(lambda w=watcher: bool(w.tokens))
            with feed_reads(engine) as statements:
                await asyncio.sleep(POLL_SECONDS * 10)
            return len(statements)
        finally:
            for watcher in watchers:
                await watcher.stop()

    one, fifty = await reads_while_watched(1), await reads_while_watched(50)
    assert one > 0
    assert fifty <= 2 * one, (one, fifty)  # the same polls; at 50 per poll, fifty times as many


async def test_closing_the_feed_ends_every_watch_with_its_token(
    store: FaultStore, engine: AsyncEngine
) -> None:
    feed = make_feed(engine)
    feed.start()
    async with watching(feed) as watcher:
        await stored(store, new_fault("i-1"))
        await watcher.has(1)
        await feed.close()
        await watcher.until(lambda: watcher.error is not None)
    assert isinstance(watcher.error, WatchInterrupted)
    assert watcher.error.resume_token == watcher.tokens[-1]
    with pytest.raises(WatchInterrupted):
        await anext(feed.watch(FaultFilter(), None, with_details=False))


async def test_a_resume_position_must_be_within_the_replay_window(feed: FaultFeed) -> None:
    now = utc_now()
    feed.check_resume_position(now - feed.max_replay + timedelta(minutes=1))
    with pytest.raises(ResumeTokenExpired):
        feed.check_resume_position(now - feed.max_replay - timedelta(minutes=1))
    with pytest.raises(InvalidArgument):
        feed.check_resume_position(now + timedelta(hours=1))
