"""The fleet's reads: when each occurrence was recorded, its count, and indexes across instances.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

`fault_occurrences.recorded` is when the server committed an occurrence, by
the database's clock: the order of the feed WatchFaults follows. Occurrences
written before have none to tell; they keep 1970-01-01, before any feed.
Servers not yet upgraded go on writing during the upgrade: on MariaDB and
MySQL the column defaults to CURRENT_TIMESTAMP(6), so their occurrences are
dated too (SQLite's servers stop before the migration; new ones set it).
`ordinal` is the fault's count once the occurrence was counted, what a
watcher is shown; 0 where unknown (occurrences written before, or by servers
not yet upgraded).

Indexes that serve a newest-first page of every instance's faults, whole or
of one source, host or fingerprint (SearchFaults), the feed's reads by
recording time, and the counts of a time window per fault (RankFaults): the
occurrences' (occurred) and (fault_id) indexes become (occurred, fault_id)
and (fault_id, occurred), which serve what they served and the counts.

Online on MariaDB and MySQL: the column is added with ALGORITHM=INSTANT
(with a constant default, so that the rows already there keep it; the
default then changes, which is metadata alone) and the indexes are built in
place while writes go on (ALGORITHM=INPLACE, LOCK=NONE); were the server
unable to, the ALTER fails rather than lock the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here: a migration keeps meaning what it meant when it was written.
UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NEVER = "1970-01-01 00:00:00"
NEW_INDEXES = {
    "instance_faults": {
        "ix_instance_faults_last_occurred": ["deleted", "last_occurred", "id"],
        "ix_instance_faults_source_last_occurred": ["source", "deleted", "last_occurred", "id"],
        "ix_instance_faults_host_last_occurred": ["host", "deleted", "last_occurred", "id"],
        # Which component on which host: two fields, each common, rarely together.
        "ix_instance_faults_source_host_last_occurred": [
            "source",
            "host",
            "deleted",
            "last_occurred",
            "id",
        ],
        # A fingerprint names one instance's faults, a few rows: sorted after, and
        # not rewritten each time one of them occurs again.
        "ix_instance_faults_fingerprint": ["fingerprint"],
    },
    "fault_occurrences": {
        "ix_fault_occurrences_recorded": ["recorded", "id"],
        "ix_fault_occurrences_occurred_fault_id": ["occurred", "fault_id"],
        "ix_fault_occurrences_fault_id_occurred": ["fault_id", "occurred"],
    },
}
REPLACED_INDEXES = {
    "fault_occurrences": {
        "ix_fault_occurrences_occurred": ["occurred"],
        "ix_fault_occurrences_fault_id": ["fault_id"],
    },
}


def new_columns() -> list[sa.Column[object]]:
    # New objects per call: a column belongs to the one table it is added to.
    return [
        sa.Column("recorded", UtcDateTime, nullable=False, server_default=NEVER),
        sa.Column("ordinal", sa.Integer(), nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    dialect = op.get_context().dialect
    if dialect.name not in ("mysql", "mariadb"):
        for column in new_columns():
            op.add_column("fault_occurrences", column)
        for table, indexes in NEW_INDEXES.items():
            for name, columns in indexes.items():
                op.create_index(name, table, columns)
        for table, indexes in REPLACED_INDEXES.items():
            for name in indexes:
                op.drop_index(name, table)
        return
    adds = ", ".join(
        f"ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}" for column in new_columns()
    )
    op.execute(f"ALTER TABLE fault_occurrences {adds}, ALGORITHM=INSTANT")
    op.execute(
        "ALTER TABLE fault_occurrences"
        " ALTER COLUMN recorded SET DEFAULT CURRENT_TIMESTAMP(6), ALGORITHM=INSTANT"
    )
    for table, indexes in NEW_INDEXES.items():
        changes = [f"ADD INDEX {name} ({', '.join(columns)})" for name, columns in indexes.items()]
        changes += [f"DROP INDEX {name}" for name in REPLACED_INDEXES.get(table, {})]
        op.execute(f"ALTER TABLE {table} {', '.join(changes)}, ALGORITHM=INPLACE, LOCK=NONE")


def downgrade() -> None:
    for table, indexes in REPLACED_INDEXES.items():
        for name, columns in indexes.items():
            op.create_index(name, table, columns)
    for table, indexes in NEW_INDEXES.items():
        for name in indexes:
            op.drop_index(name, table)
    with op.batch_alter_table("fault_occurrences") as occurrences:
        for column in reversed(new_columns()):
            occurrences.drop_column(str(column.name))
