"""Group repeats: a fingerprint and an occurrence count per fault, and its occurrences.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Online on MariaDB and MySQL. The columns are added in one ALTER with
ALGORITHM=INSTANT (metadata only, whatever the table's size). Existing faults
become faults that occurred once, last when they were created: that date is
copied in batches of a thousand rows, each committed on its own, so no lock
is held on more than a batch, and a Galera write set stays small. The
indexes are then built with ALGORITHM=INPLACE, LOCK=NONE: writes go on while
they are built. Existing faults get no fingerprint (empty) and are never
counted into: their repeats start new faults. SQLite adds the columns
without rewriting the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateColumn

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 1000

# Frozen here, not imported from tables.py: a migration keeps meaning what it
# meant when it was written.
UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def new_columns() -> list[sa.Column[object]]:
    # New objects per call: a column belongs to the one table it is added to.
    # A constant default for last_occurred lets the column be added instantly;
    # the backfill replaces it.
    return [
        sa.Column("fingerprint", sa.String(64), nullable=False, server_default=""),
        sa.Column("occurrence_count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column(
            "last_occurred", UtcDateTime, nullable=False, server_default="1970-01-01 00:00:00"
        ),
        sa.Column("live_fingerprint", sa.String(64), nullable=True),
    ]


def upgrade() -> None:
    online = op.get_context().dialect.name in ("mysql", "mariadb")
    if online:
        _alter("ALTER TABLE instance_faults {}, ALGORITHM=INSTANT", _added_columns())
    else:
        for column in new_columns():
            op.add_column("instance_faults", column)
    _copy_created_to_last_occurred(commit_each_batch=online)
    if online:
        _alter(
            "ALTER TABLE instance_faults {}, ALGORITHM=INPLACE, LOCK=NONE",
            [
                "ADD INDEX ix_instance_faults_instance_last_occurred"
                " (instance_id, deleted, last_occurred, id)",
                "ADD UNIQUE INDEX ux_instance_faults_live_fingerprint"
                " (instance_id, live_fingerprint)",
                "DROP INDEX ix_instance_faults_instance_latest",
            ],
        )
    else:
        op.create_index(
            "ix_instance_faults_instance_last_occurred",
            "instance_faults",
            ["instance_id", "deleted", "last_occurred", "id"],
        )
        op.create_index(
            "ux_instance_faults_live_fingerprint",
            "instance_faults",
            ["instance_id", "live_fingerprint"],
            unique=True,
        )
        op.drop_index("ix_instance_faults_instance_latest", "instance_faults")
    op.create_table(
        "fault_occurrences",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("fault_id", sa.String(64), nullable=False),
        sa.Column("occurred", UtcDateTime, nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_fault_occurrences_fault_id", "fault_occurrences", ["fault_id"])
    op.create_index("ix_fault_occurrences_occurred", "fault_occurrences", ["occurred"])


def _added_columns() -> list[str]:
    dialect = op.get_context().dialect
    return [
        f"ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}" for column in new_columns()
    ]


def _alter(template: str, clauses: list[str]) -> None:
    op.execute(template.format(", ".join(clauses)))


def _copy_created_to_last_occurred(*, commit_each_batch: bool) -> None:
    """Sets last_occurred to created on every existing row, in batches in primary key order."""
    connection = op.get_bind()
    next_ids = sa.text("SELECT id FROM instance_faults WHERE id > :after ORDER BY id LIMIT :limit")
    copy = sa.text(
        "UPDATE instance_faults SET last_occurred = created WHERE id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    after = ""
    while True:
        ids = connection.execute(next_ids, {"after": after, "limit": BACKFILL_BATCH}).scalars()
        batch = list(ids)
        if not batch:
            return
        connection.execute(copy, {"ids": batch})
        if commit_each_batch:
            # MySQL runs no DDL in a transaction, so the migration has none to
            # keep whole: ending the batch's transaction releases its locks.
            connection.exec_driver_sql("COMMIT")
        after = batch[-1]


def downgrade() -> None:
    op.drop_table("fault_occurrences")
    op.create_index(
        "ix_instance_faults_instance_latest",
        "instance_faults",
        ["instance_id", "deleted", "created", "id"],
    )
    op.drop_index("ux_instance_faults_live_fingerprint", "instance_faults")
    op.drop_index("ix_instance_faults_instance_last_occurred", "instance_faults")
    with op.batch_alter_table("instance_faults") as table:
        for column in reversed(new_columns()):
            table.drop_column(str(column.name))
