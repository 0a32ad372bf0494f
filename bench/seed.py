"""Filling `instance_faults` with a known history, in bulk.

Row n of `rows` belongs to instance n % instances, so every instance has
rows / instances faults spread over the whole span, and later rows are later
faults. Instances whose index is 7 modulo 20 have been cleared (all their
faults soft-deleted), as ClearFaults leaves them. One more instance, BUSY, has
a long history of its own, so a first page of ListFaults is a full page.

Every value is a function of n, so both backends hold the same rows and the
same call gets the same response from both. MariaDB builds the rows itself
from its sequence engine (INSERT ... SELECT FROM seq_A_to_B); SQLite gets them
from Python through executemany in one transaction. `expected_row` is the
definition both follow; `check_mariadb_rows` compares samples against it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

INSTANCE_PREFIX = "00000000-0000-4000-8000-"
BUSY_INSTANCE = "00000000-0000-4000-9000-000000000000"
BUSY_FAULTS = 200
FAULTS_PER_INSTANCE = 10
CLEARED_EVERY = 20
CLEARED_AT = 7
SOURCES = ("taskmanager", "conductor", "guestagent", "api")
HOSTS = 500
EPOCH = datetime(1970, 1, 1)
START = datetime(2025, 1, 1)
SPAN = timedelta(days=300)
MARIADB_CHUNK = 50_000
SCATTER = 7919

MESSAGE_HEAD = "Failed to attach volume to instance on host compute-"
MESSAGE_TAIL = ": timed out waiting for the block device (attempt "
DETAILS_HEAD = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/server.py", '
    "line 165, in _process_incoming\n"
    "    res = self.dispatcher.dispatch(message)\n"
    '  File "/usr/lib/python3/dist-packages/osprofiler/profiler.py", line 160, in wrapper\n'
    "    result = f(*args, **kwargs)\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/dispatcher.py", '
    "line 309, in dispatch\n"
    "    return self._do_dispatch(endpoint, method, ctxt, args)\n"
    '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/dispatcher.py", '
    "line 229, in _do_dispatch\n"
    "    result = func(ctxt, **new_args)\n"
    '  File "/opt/trove/trove/taskmanager/manager.py", line 412, in attach_volume\n'
    "    instance_tasks.attach_volume(context, volume_id, mountpoint)\n"
    '  File "/opt/trove/trove/taskmanager/models.py", line 1338, in attach_volume\n'
    "    self._wait_for_volume(volume_id, timeout=CONF.volume_time_out)\n"
    '  File "/opt/trove/trove/taskmanager/models.py", line 1342, in attach_volume\n'
    "    self.volume_client.volumes.attach(volume_id, instance_id, mountpoint)\n"
    '  File "/usr/lib/python3/dist-packages/cinderclient/v3/volumes.py", line 302, in attach\n'
    "    return self._action('os-attach', volume, body)\n"
    '  File "/opt/trove/trove/common/clients.py", line 211, in attach\n'
    "    return self._action('os-attach', volume, info)\n"
    '  File "/usr/lib/python3/dist-packages/cinderclient/base.py", line 388, in _action\n'
    "    resp, body = self.api.client.post(url, body=body)\n"
    "cinderclient.exceptions.ClientException: The server has either erred or is "
    "incapable of performing the requested operation. (HTTP 500) (Request-ID: req-"
)
DETAILS_TAIL = ")\n"
COLUMNS = (
    "id",
    "instance_id",
    "message",
    "details",
    "created",
    "updated",
    "deleted",
    "deleted_at",
    "source",
    "host",
)
# Where the schema counts occurrences (revision 0003): each seeded fault
# occurred once, last when it was created.
GROUPED_COLUMNS = ("last_occurred",)


@dataclass(frozen=True, slots=True)
class Seed:
    """How many faults over how many instances (plus BUSY's history)."""

    rows: int

    def __post_init__(self) -> None:
        if self.rows % (FAULTS_PER_INSTANCE * CLEARED_EVERY):
            raise ValueError(f"rows must be a multiple of {FAULTS_PER_INSTANCE * CLEARED_EVERY}")

    @property
    def instances(self) -> int:
        return self.rows // FAULTS_PER_INSTANCE

    @property
    def total_rows(self) -> int:
        return self.rows + BUSY_FAULTS

    @property
    def step_us(self) -> int:
        return _us(SPAN) // self.total_rows


def instance_id(index: int) -> str:
    return f"{INSTANCE_PREFIX}{index:012d}"


def index_of(instance: str) -> int:
    """The index of a seeded instance id (the inverse of instance_id)."""
    return int(instance.removeprefix(INSTANCE_PREFIX))


def is_cleared(index: int) -> bool:
    return index % CLEARED_EVERY == CLEARED_AT


def live_instance(seed: Seed, wanted: int) -> int:
    """The index of an instance near `wanted` that has live faults."""
    index = wanted % seed.instances
    return index + 1 if is_cleared(index) else index


def spread_instances(seed: Seed, count: int) -> list[str]:
    """`count` distinct instances scattered over the seeded ones; one in 20 is cleared.

    Multiplying by a prime that does not divide the instance count visits
    distinct instances, far apart, with every residue modulo 20.
    """
    if count > seed.instances or seed.instances % SCATTER == 0:
        raise ValueError(f"cannot scatter {count} over {seed.instances} instances")
    return [instance_id(k * SCATTER % seed.instances) for k in range(count)]


def expected_row(seed: Seed, n: int) -> tuple[object, ...]:
    """Row n as the database returns it, in COLUMNS order."""
    busy = n >= seed.rows
    index = n % seed.instances
    created = EPOCH + timedelta(microseconds=_us(START - EPOCH) + n * seed.step_us)
    deleted = not busy and is_cleared(index)
    deleted_at = created + timedelta(days=1) if deleted else None
    unix_ms = (created - EPOCH) // timedelta(milliseconds=1)
    ms_hex = f"{unix_ms:012x}"
    return (
        f"{ms_hex[:8]}-{ms_hex[8:]}-7000-8000-{n:012x}",
        BUSY_INSTANCE if busy else instance_id(index),
        f"{MESSAGE_HEAD}{n % HOSTS:03d}{MESSAGE_TAIL}{n % 5 + 1})",
        f"{DETAILS_HEAD}{n}{DETAILS_TAIL}",
        created,
        deleted_at or created,
        int(deleted),
        deleted_at,
        SOURCES[n % len(SOURCES)],
        f"compute-{n % HOSTS:03d}",
    )


def expected_latest_id(seed: Seed, index: int) -> str | None:
    """The id GetLatestFault must return for instance `index`."""
    if is_cleared(index):
        return None
    last = index + (FAULTS_PER_INSTANCE - 1) * seed.instances
    return str(expected_row(seed, last)[0])


def seed_sqlite(path: str, seed: Seed) -> float:
    """Inserts the rows into the SQLite file at `path`; returns the seconds it took."""
    began = time.perf_counter()
    connection = sqlite3.connect(path)
    try:
        # Loading, not serving: a crash here only means seeding again.
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        columns = (*COLUMNS, *GROUPED_COLUMNS)
        with connection:
            connection.executemany(
                f"INSERT INTO instance_faults ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                _sqlite_rows(seed),
            )
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return time.perf_counter() - began


def _sqlite_rows(seed: Seed) -> Iterator[tuple[object, ...]]:
    for n in range(seed.total_rows):
        row = list(expected_row(seed, n))
        for position in (4, 5, 7):  # SQLAlchemy's SQLite DateTime text
            if row[position] is not None:
                row[position] = f"{row[position]:%Y-%m-%d %H:%M:%S.%f}"
        yield (*row, row[4])


def _mariadb_select(seed: Seed, *, grouped: bool) -> str:
    """The INSERT ... SELECT of the rows; `grouped`: the schema counts occurrences."""
    created = "DATE_ADD('1970-01-01', INTERVAL (:start_us + seq * :step_us) MICROSECOND)"
    ms_hex = "LOWER(LPAD(HEX(FLOOR((:start_us + seq * :step_us) / 1000)), 12, '0'))"
    cleared = f"(seq < :rows AND MOD(MOD(seq, :instances), {CLEARED_EVERY}) = {CLEARED_AT})"
    sources = ", ".join(f"'{source}'" for source in SOURCES)
    columns: tuple[str, ...] = (*COLUMNS, *GROUPED_COLUMNS) if grouped else COLUMNS
    last_occurred = f",\n{created}" if grouped else ""
    return f"""
        INSERT INTO instance_faults ({", ".join(columns)})
        SELECT
            CONCAT(LEFT({ms_hex}, 8), '-', RIGHT({ms_hex}, 4), '-7000-8000-',
                   LOWER(LPAD(HEX(seq), 12, '0'))),
            IF(seq >= :rows, :busy, CONCAT(:prefix, LPAD(MOD(seq, :instances), 12, '0'))),
            CONCAT(:message_head, LPAD(MOD(seq, {HOSTS}), 3, '0'), :message_tail,
                   MOD(seq, 5) + 1, ')'),
            CONCAT(:details_head, seq, :details_tail),
            {created},
            IF({cleared}, {created} + INTERVAL 1 DAY, {created}),
            IF({cleared}, 1, 0),
            IF({cleared}, {created} + INTERVAL 1 DAY, NULL),
            ELT(MOD(seq, {len(SOURCES)}) + 1, {sources}),
            CONCAT('compute-', LPAD(MOD(seq, {HOSTS}), 3, '0')){last_occurred}
        FROM seq_{{first}}_to_{{last}}
    """


def seed_mariadb(engine: sa.Engine, seed: Seed) -> float:
    """Inserts the rows with INSERT ... SELECT, a chunk per transaction, then ANALYZE TABLE.

    Returns the seconds it took.
    """
    parameters = {
        "start_us": _us(START - EPOCH),
        "step_us": seed.step_us,
        "rows": seed.rows,
        "instances": seed.instances,
        "busy": BUSY_INSTANCE,
        "prefix": INSTANCE_PREFIX,
        "message_head": MESSAGE_HEAD,
        "message_tail": MESSAGE_TAIL,
        "details_head": DETAILS_HEAD,
        "details_tail": DETAILS_TAIL,
    }
    columns = {column["name"] for column in sa.inspect(engine).get_columns("instance_faults")}
    template = _mariadb_select(seed, grouped="last_occurred" in columns)
    began = time.perf_counter()
    for first in range(0, seed.total_rows, MARIADB_CHUNK):
        last = min(first + MARIADB_CHUNK, seed.total_rows) - 1
        with engine.begin() as connection:
            # The ids are unique by construction; skipping the check is what bulk loads do.
            connection.execute(sa.text("SET SESSION unique_checks = 0"))
            connection.execute(sa.text(template.format(first=first, last=last)), parameters)
    with engine.begin() as connection:
        # InnoDB refreshes its statistics in the background, some time after a
        # bulk load; until then the planner takes the table for empty.
        connection.execute(sa.text("ANALYZE TABLE instance_faults"))
    return time.perf_counter() - began


def check_mariadb_rows(engine: sa.Engine, seed: Seed, samples: int = 50) -> None:
    """Raises if MariaDB's rows differ from expected_row (the SQL drifted from the definition)."""
    stride = max(1, seed.total_rows // samples)
    wanted = sorted({*range(0, seed.total_rows, stride), seed.rows - 1, seed.total_rows - 1})
    with engine.connect() as connection:
        for n in wanted:
            expected = expected_row(seed, n)
            found = connection.execute(
                sa.text(f"SELECT {', '.join(COLUMNS)} FROM instance_faults WHERE id = :id"),
                {"id": expected[0]},
            ).one()
            if tuple(found) != expected:
                raise RuntimeError(f"seeded row {n} is {tuple(found)}, expected {expected}")


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)
