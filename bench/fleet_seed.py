"""A fleet's worth of faults in MariaDB, for `python -m bench --fleet`.

Row n is a fault of instance (n * 7919) mod I, with I = rows / 20: twenty
faults per instance, scattered over the span, the last of them the newest.
Faults last occurred one after another over the 30 days before the seed, so
the newest rows are the last ones; each has one occurrence row, dated when
it last occurred. Sources are skewed as a cloud's are (40 % taskmanager, a
tenth of a percent `backup`), hosts spread over 2,000 computes, one fault in
twenty is cleared, and three faults share each global request id.

MariaDB builds the rows itself (INSERT ... SELECT from its sequence engine,
as bench/seed.py does). The secondary indexes are dropped for the load and
built again afterwards, each by a sort, as after any bulk load; the time
this takes for the indexes of revision 0006 is what the migration costs on
a table this size, and is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

CHUNK = 50_000
FAULTS_PER_INSTANCE = 20
SCATTER = 7919
HOSTS = 2000
SPAN = timedelta(days=30)
INSTANCE_PREFIX = "00000000-0000-4000-a000-"
# Sources by share, in tenths of a percent of the faults.
SOURCES = (
    ("taskmanager", 400),
    ("conductor", 250),
    ("guestagent", 200),
    ("api", 100),
    ("scheduler", 49),
    ("backup", 1),
)
# The indexes revision 0006 adds: building them is the migration's cost.
FLEET_INDEXES = {
    "ix_instance_faults_last_occurred",
    "ix_instance_faults_source_last_occurred",
    "ix_instance_faults_host_last_occurred",
    "ix_instance_faults_source_host_last_occurred",
    "ix_instance_faults_fingerprint",
    "ix_fault_occurrences_recorded",
    "ix_fault_occurrences_occurred_fault_id",
    "ix_fault_occurrences_fault_id_occurred",
}
MARKER = "bench_fleet_seed"


@dataclass(frozen=True, slots=True)
class FleetSeed:
    """How many faults, and the moment the newest of them last occurred."""

    rows: int
    end: datetime

    @property
    def instances(self) -> int:
        return self.rows // FAULTS_PER_INSTANCE

    @property
    def step_us(self) -> int:
        return SPAN // timedelta(microseconds=1) // self.rows

    @property
    def start(self) -> datetime:
        return self.end - SPAN

    def last_occurred(self, n: int) -> datetime:
        return self.start + timedelta(microseconds=(n + 1) * self.step_us)

    def instance(self, n: int) -> str:
        return f"{INSTANCE_PREFIX}{n * SCATTER % self.instances:012d}"

    def host(self, n: int) -> str:
        return f"compute-{n * 31 % HOSTS:04d}"

    def request_id(self, n: int) -> str:
        return f"req-{n:012x}"

    def global_request_id(self, n: int) -> str:
        return f"greq-{n // 3:012x}"


@dataclass
class SeedTimes:
    """How long the seed took: the rows loaded, and the indexes built again after."""

    load_seconds: float = 0.0
    index_seconds: dict[str, float] | None = None
    # The database a run kept was used as it was: nothing was loaded.
    reused: bool = False

    @property
    def fleet_index_seconds(self) -> float:
        return sum(
            seconds for name, seconds in (self.index_seconds or {}).items() if name in FLEET_INDEXES
        )


def _fault_select(seed: FleetSeed) -> str:
    moment = "DATE_ADD(:start, INTERVAL ((seq + 1) * :step_us) MICROSECOND)"
    ms_hex = (
        "LOWER(LPAD(HEX(FLOOR(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', "
        f"{moment}) / 1000)), 12, '0'))"
    )
    fault_id = (
        f"CONCAT(LEFT({ms_hex}, 8), '-', RIGHT({ms_hex}, 4), '-7000-8000-', "
        "LOWER(LPAD(HEX(seq), 12, '0')))"
    )
    cleared = "(MOD(seq, 20) = 7)"
    thresholds: list[str] = []
    total = 0
    for name, share in SOURCES:
        total += share
        thresholds.append(f"WHEN MOD(seq, 1000) < {total} THEN '{name}'")
    source = f"CASE {' '.join(thresholds)} END"
    fingerprint = "SHA2(CONCAT('fleet-', seq), 256)"
    return f"""
        SELECT
            {fault_id} AS id,
            CONCAT(:prefix, LPAD(MOD(seq * {SCATTER}, :instances), 12, '0')) AS instance_id,
            CONCAT('Volume attach failed on compute-', LPAD(MOD(seq * 31, {HOSTS}), 4, '0'),
                   ': timed out waiting for the block device (attempt ', MOD(seq, 5) + 1, ')')
                AS message,
            CONCAT('Traceback (most recent call last):\\n',
                   '  File "/opt/trove/trove/taskmanager/models.py", line 1342, in attach\\n',
                   '    self.volume_client.volumes.attach(volume_id, instance_id)\\n',
                   'cinderclient.exceptions.ClientException: The server has either erred ',
                   '(HTTP 500) (Request-ID: req-', seq, ')\\n') AS details,
            {moment} - INTERVAL MOD(seq, 3600) SECOND AS created,
            {moment} AS updated,
            IF({cleared}, 1, 0) AS deleted,
            IF({cleared}, {moment} + INTERVAL 1 HOUR, NULL) AS deleted_at,
            {source} AS source,
            CONCAT('compute-', LPAD(MOD(seq * 31, {HOSTS}), 4, '0')) AS host,
            CONCAT('req-', LPAD(LOWER(HEX(seq)), 12, '0')) AS request_id,
            CONCAT('greq-', LPAD(LOWER(HEX(FLOOR(seq / 3))), 12, '0')) AS global_request_id,
            '' AS trace_id,
            {fingerprint} AS fingerprint,
            1 + MOD(seq, 5) AS occurrence_count,
            {moment} AS last_occurred,
            IF({cleared}, NULL, {fingerprint}) AS live_fingerprint
        FROM seq_{{first}}_to_{{last}}
    """


FAULT_COLUMNS = (
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
    "request_id",
    "global_request_id",
    "trace_id",
    "fingerprint",
    "occurrence_count",
    "last_occurred",
    "live_fingerprint",
)


def seed_fleet(engine: sa.Engine, seed: FleetSeed) -> tuple[FleetSeed, SeedTimes]:
    """Loads the faults and their occurrences, then builds the secondary indexes again.

    A database a run kept (`--keep`) with as many faults is used as it is:
    the seed it holds is returned.
    """
    kept = _kept_seed(engine)
    if kept is not None and kept.rows == seed.rows:
        return kept, SeedTimes(reused=True)
    times = SeedTimes()
    indexes = {table: _secondary_indexes(engine, table) for table in TABLES}
    with engine.begin() as connection:
        for table, table_indexes in indexes.items():
            if table_indexes:
                drops = ", ".join(f"DROP INDEX {name}" for name in table_indexes)
                connection.execute(sa.text(f"ALTER TABLE {table} {drops}"))
    began = time.perf_counter()
    _load_faults(engine, seed)
    _load_occurrences(engine)
    times.load_seconds = time.perf_counter() - began
    times.index_seconds = {}
    with engine.begin() as connection:
        for table, table_indexes in indexes.items():
            for name, (columns, unique) in table_indexes.items():
                started = time.perf_counter()
                kind = "UNIQUE INDEX" if unique else "INDEX"
                connection.execute(
                    sa.text(
                        f"ALTER TABLE {table} ADD {kind} {name} ({', '.join(columns)}),"
                        " ALGORITHM=INPLACE, LOCK=NONE"
                    )
                )
                times.index_seconds[name] = time.perf_counter() - started
            # InnoDB refreshes its statistics some time after a bulk load; until
            # then the planner takes the table for empty.
            connection.execute(sa.text(f"ANALYZE TABLE {table}"))
        connection.execute(
            sa.text(f"CREATE TABLE {MARKER} (seed_rows BIGINT, seed_end DATETIME(6))")
        )
        connection.execute(
            sa.text(f"INSERT INTO {MARKER} VALUES (:rows, :end)"),
            {"rows": seed.rows, "end": seed.end},
        )
    return seed, times


TABLES = ("instance_faults", "fault_occurrences")


def _load_faults(engine: sa.Engine, seed: FleetSeed) -> None:
    parameters = {
        "start": seed.start,
        "step_us": seed.step_us,
        "prefix": INSTANCE_PREFIX,
        "instances": seed.instances,
    }
    insert = f"INSERT INTO instance_faults ({', '.join(FAULT_COLUMNS)}) {_fault_select(seed)}"
    for first in range(0, seed.rows, CHUNK):
        last = min(first + CHUNK, seed.rows) - 1
        with engine.begin() as connection:
            # The ids are unique by construction; skipping the check is what bulk loads do.
            connection.execute(sa.text("SET SESSION unique_checks = 0"))
            connection.execute(sa.text(insert.format(first=first, last=last)), parameters)


def _load_occurrences(engine: sa.Engine) -> None:
    """One occurrence per fault, dated when it last occurred, in chunks of primary keys."""
    insert = sa.text(
        "INSERT INTO fault_occurrences"
        " (id, fault_id, occurred, recorded, request_id, global_request_id)"
        " SELECT id, id, last_occurred, last_occurred, request_id, global_request_id"
        " FROM instance_faults WHERE id > :after ORDER BY id LIMIT :limit"
    )
    after = ""
    while True:
        with engine.begin() as connection:
            connection.execute(sa.text("SET SESSION unique_checks = 0"))
            inserted = connection.execute(insert, {"after": after, "limit": CHUNK}).rowcount
            after = connection.scalar(sa.text("SELECT MAX(id) FROM fault_occurrences")) or ""
        if inserted < CHUNK:
            return


def _secondary_indexes(engine: sa.Engine, table: str) -> dict[str, tuple[list[str], bool]]:
    """The table's indexes but its primary key: their columns in order, and whether unique."""
    found: dict[str, tuple[list[str], bool]] = {}
    with engine.connect() as connection:
        for row in connection.execute(sa.text(f"SHOW INDEX FROM {table}")).mappings():
            name = row["Key_name"]
            if name == "PRIMARY":
                continue
            columns, _ = found.setdefault(name, ([], not row["Non_unique"]))
            columns.append(row["Column_name"])
    return found


def _kept_seed(engine: sa.Engine) -> FleetSeed | None:
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table(MARKER):
            return None
        row = connection.execute(sa.text(f"SELECT seed_rows, seed_end FROM {MARKER}")).one()
    return FleetSeed(int(row.seed_rows), row.seed_end)
