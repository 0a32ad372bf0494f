"""Reads across every instance, on each backend: searches, the feed's reads, rankings."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.faults import Cursor, utc_now
from faultsvc.filters import RANK, SEARCH, WATCH, FaultFilter, parse_filter
from faultsvc.occurrences import Window, counted_in_order
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.fleet import FleetStore
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import fault_occurrences
from tests.support.faults import new_fault, server_made, stored

FINGERPRINT = "0f" * 32


@pytest.fixture
def fleet(engine: AsyncEngine) -> FleetStore:
    return FleetStore(DatabaseEndpoints([engine]))


def search_filter(text: str) -> FaultFilter:
    return parse_filter(text, SEARCH)


async def test_a_search_without_a_filter_pages_through_every_live_fault_latest_first(
    store: FaultStore, fleet: FleetStore
) -> None:
    start = utc_now() - timedelta(hours=1)
    ids = [
        (await stored(store, new_fault(f"i-{n % 3}", created=start + timedelta(minutes=n)))).id
        for n in range(7)
    ]
    await stored(store, new_fault("i-cleared"))
    await store.clear("i-cleared")
    seen: list[str] = []
    after = None
    while page := await fleet.search(FaultFilter(), 3, after):
        seen += [fault.id for fault in page]
        after = Cursor(page[-1].last_occurred, page[-1].id)
    assert seen == ids[::-1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('source = "api"', ["api-2", "api-1"]),
        ('host = "db-7"', ["api-2", "tm-2"]),
        (f'fingerprint = "{FINGERPRINT}"', ["tm-1"]),
        ('instance_id = "i-2"', ["api-2", "tm-2"]),
        ('source = "api" AND host = "db-7"', ["api-2"]),
        ('last_occur_time >= "{t2}"', ["api-2", "tm-2"]),
        ('last_occur_time > "{t2}"', ["api-2"]),
        ('last_occur_time < "{t2}"', ["api-1", "tm-1"]),
        ('last_occur_time <= "{t2}" AND last_occur_time > "{t1}"', ["tm-2"]),
        ('source = "taskmanager" AND last_occur_time < "{t2}"', ["tm-1"]),
        ('request_id = "req-api-2"', ["api-2"]),
        ('global_request_id = "g-1"', ["api-1", "tm-1"]),
        ('global_request_id = "g-1" AND source = "api"', ["api-1"]),
        ('source = "nobody"', []),
    ],
)
async def test_each_filter_narrows_the_search(
    store: FaultStore, fleet: FleetStore, text: str, expected: list[str]
) -> None:
    t0 = utc_now() - timedelta(hours=1)
    times = [t0 + timedelta(minutes=minutes) for minutes in range(4)]
    faults = {
        "tm-1": new_fault("i-1", source="taskmanager", host="db-1", fingerprint=FINGERPRINT),
        "api-1": new_fault("i-1", source="api", host="db-1", global_request_id="g-1"),
        "tm-2": new_fault("i-2", source="taskmanager", host="db-7"),
        "api-2": new_fault("i-2", source="api", host="db-7", request_id="req-api-2"),
    }
    # An earlier occurrence of tm-1 carries g-1: the request id of any occurrence finds it.
    await stored(
        store, replace(faults["tm-1"], created=t0 - timedelta(minutes=5), global_request_id="g-1")
    )
    names = {}
    for (name, fault), moment in zip(faults.items(), times, strict=True):
        names[(await stored(store, replace(fault, created=moment))).id] = name
    text = text.format(t1=f"{times[1].isoformat()}Z", t2=f"{times[2].isoformat()}Z")
    found = await fleet.search(search_filter(text), 10)
    assert [names[fault.id] for fault in found] == expected


async def test_a_search_by_request_id_pages_too(store: FaultStore, fleet: FleetStore) -> None:
    start = utc_now() - timedelta(hours=1)
    ids = [
        (
            await stored(
                store, new_fault(f"i-{n}", created=start + timedelta(minutes=n), request_id="r-1")
            )
        ).id
        for n in range(5)
    ]
    first = await fleet.search(search_filter('request_id = "r-1"'), 2)
    after = Cursor(first[-1].last_occurred, first[-1].id)
    rest = await fleet.search(search_filter('request_id = "r-1"'), 10, after)
    assert [f.id for f in first + rest] == ids[::-1]


async def test_a_search_without_details_leaves_them_in_the_database(
    store: FaultStore, fleet: FleetStore
) -> None:
    await stored(store, new_fault(details="secret trace"))
    (fault,) = await fleet.search(FaultFilter(), 10, with_details=False)
    assert fault.details == ""
    assert fault.host == "tm-1"


async def set_recorded(engine: AsyncEngine, occurrence_id: str, moment: object) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            sa.update(fault_occurrences)
            .where(fault_occurrences.c.id == occurrence_id)
            .values(recorded=moment)
        )


async def test_every_occurrence_is_recorded_by_the_database_clock(
    store: FaultStore, fleet: FleetStore
) -> None:
    before = await fleet.feed_now()
    fault = await stored(store, new_fault(created=utc_now() - timedelta(days=3)))
    after = await fleet.feed_now()
    poll = await fleet.poll_feed(before, None, 0, (), with_details=True)
    (occurrence,) = poll.new
    assert occurrence.id == fault.id
    assert before <= occurrence.recorded <= after  # recorded now, whenever it occurred
    assert occurrence.occurred == fault.created
    assert occurrence.fault.details == "trace"


async def test_each_occurrence_keeps_the_count_it_made_even_from_concurrent_servers(
    engine: AsyncEngine, fleet: FleetStore
) -> None:
    """Four stores with their own pools count repeats of one fault at once, in batches."""
    start = await fleet.feed_now() - timedelta(seconds=1)
    stores = [FaultStore(engine) for _ in range(4)]

    async def repeats(store: FaultStore) -> None:
        for _ in range(5):
            await store.record_batch(
                server_made(new_fault("i-1", fingerprint="same") for _ in range(4))
            )

    await asyncio.gather(*(repeats(store) for store in stores))
    replayed = await fleet.replay((start, ""), FaultFilter(), 1000, with_details=False)
    assert sorted(o.ordinal for o in replayed) == list(range(1, 81))
    # In the feed's order, each one made the count after those before it.
    assert [o.ordinal for o in counted_in_order(replayed)] == list(range(1, 81))


async def test_a_poll_reads_again_only_what_was_recorded_since_unless_something_came_late(
    store: FaultStore, fleet: FleetStore, engine: AsyncEngine
) -> None:
    start = await fleet.feed_now() - timedelta(seconds=30)
    first = await stored(store, new_fault("i-1"))
    poll = await fleet.poll_feed(start, None, 0, (), with_details=False)
    assert [o.id for o in poll.new] == [first.id]
    seen = dict(poll.recorded)

    second = await stored(store, new_fault("i-2"))
    again = await fleet.poll_feed(start, poll.now, 1, seen, with_details=False)
    assert again.read_from == poll.now  # the window before was as counted
    assert [o.id for o in again.new] == [second.id]
    seen |= again.recorded

    # An occurrence that committed late: recorded before what the last poll read.
    late = await stored(store, new_fault("i-3"))
    await set_recorded(engine, late.id, poll.now - timedelta(seconds=1))
    expected = sum(1 for moment in seen.values() if start <= moment < again.now)
    third = await fleet.poll_feed(start, again.now, expected, seen, with_details=False)
    assert third.read_from == start  # counted one more: the whole window was read again
    assert [o.id for o in third.new] == [late.id]


async def test_a_replay_is_in_feed_order_and_filtered(store: FaultStore, fleet: FleetStore) -> None:
    start = await fleet.feed_now() - timedelta(seconds=1)
    recorded = []
    for n in range(5):
        fault = new_fault(f"i-{n % 2}", source="api" if n % 2 else "taskmanager")
        recorded.append(((await stored(store, fault)).id, fault.source))
    everything = await fleet.replay((start, ""), FaultFilter(), 10, with_details=False)
    assert [o.id for o in everything] == [fault_id for fault_id, _ in recorded]
    assert [o.position for o in everything] == sorted(o.position for o in everything)
    first_two = await fleet.replay((start, ""), FaultFilter(), 2, with_details=False)
    rest = await fleet.replay(first_two[-1].position, FaultFilter(), 10, with_details=False)
    assert first_two + rest == everything
    api = await fleet.replay(
        (start, ""), parse_filter('source = "api"', WATCH), 10, with_details=False
    )
    assert [o.id for o in api] == [fault_id for fault_id, source in recorded if source == "api"]


async def test_a_replay_matches_the_request_ids_of_each_occurrence(
    store: FaultStore, fleet: FleetStore
) -> None:
    start = await fleet.feed_now() - timedelta(seconds=1)
    for request_id in ("req-a", "req-b", "req-a"):
        await stored(store, new_fault("i-1", fingerprint="same", request_id=request_id))
    replayed = await fleet.replay(
        (start, ""), parse_filter('request_id = "req-a"', WATCH), 10, with_details=False
    )
    assert [o.request_id for o in replayed] == ["req-a", "req-a"]


async def test_a_ranking_counts_each_fault_in_the_window_and_in_each_interval(
    store: FaultStore, fleet: FleetStore
) -> None:
    end = utc_now().replace(microsecond=0)
    start = end - timedelta(hours=1)
    window = Window(start, end, 4)  # intervals of 15 minutes

    def at(minutes: float) -> object:
        return start + timedelta(minutes=minutes)

    growing = [new_fault("i-1", fingerprint="grows", created=at(m)) for m in (50, 55, 58, 59, 46)]
    fading = [new_fault("i-2", fingerprint="fades", created=at(m)) for m in (1, 2, 3, 20)]
    before = [start - timedelta(minutes=m) for m in range(1, 9)]
    outside = [new_fault("i-3", fingerprint="old", created=moment) for moment in before]
    edge = [
        new_fault("i-4", fingerprint="edge", created=at(0)),
        new_fault("i-4", fingerprint="edge", created=end),
    ]
    await store.record_batch(server_made([*growing, *fading, *outside, *edge]))
    ranked = await fleet.rank(FaultFilter(), window, 10, with_details=False)
    assert [(r.fault.instance_id, r.occurrences, r.interval_counts) for r in ranked] == [
        ("i-1", 5, (0, 0, 0, 5)),
        ("i-2", 4, (3, 1, 0, 0)),
        ("i-4", 1, (1, 0, 0, 0)),  # the start is in the window, the end is not
    ]
    assert ranked[0].fault.occurrence_count == 5
    top = await fleet.rank(FaultFilter(), window, 1, with_details=False)
    assert [r.fault.instance_id for r in top] == ["i-1"]
    only_i2 = await fleet.rank(
        parse_filter('instance_id = "i-2"', RANK), window, 10, with_details=False
    )
    assert [r.fault.instance_id for r in only_i2] == ["i-2"]


async def test_a_ranking_leaves_cleared_faults_out(store: FaultStore, fleet: FleetStore) -> None:
    now = utc_now()
    await stored(store, new_fault("i-1", created=now - timedelta(minutes=1)))
    await stored(store, new_fault("i-2", created=now - timedelta(minutes=1)))
    await store.clear("i-2")
    window = Window(now - timedelta(hours=1), now, 12)
    assert [
        r.fault.instance_id for r in await fleet.rank(FaultFilter(), window, 10, with_details=True)
    ] == ["i-1"]
