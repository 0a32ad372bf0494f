"""Keep each occurrence's request ids, and index them and the faults' for SearchFaults.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

A fault grouped from repeats carries the request ids of its latest
occurrence; each occurrence keeps its own, so that the request id of any
occurrence leads to the fault. Online on MariaDB and MySQL: the columns are
added with ALGORITHM=INSTANT and the indexes built in place with writes going
on (ALGORITHM=INPLACE, LOCK=NONE); were the server unable to, the ALTER fails
rather than lock the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateColumn

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here: a migration keeps meaning what it meant when it was written.
INDEXES = {
    "instance_faults": {
        "ix_instance_faults_request_id": ["request_id"],
        "ix_instance_faults_global_request_id": ["global_request_id"],
    },
    "fault_occurrences": {
        "ix_fault_occurrences_request_id": ["request_id"],
        "ix_fault_occurrences_global_request_id": ["global_request_id"],
    },
}


def new_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("global_request_id", sa.String(64), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    dialect = op.get_context().dialect
    if dialect.name not in ("mysql", "mariadb"):
        for column in new_columns():
            op.add_column("fault_occurrences", column)
        for table, indexes in INDEXES.items():
            for name, columns in indexes.items():
                op.create_index(name, table, columns)
        return
    adds = ", ".join(
        f"ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}" for column in new_columns()
    )
    op.execute(f"ALTER TABLE fault_occurrences {adds}, ALGORITHM=INSTANT")
    for table, indexes in INDEXES.items():
        index_adds = ", ".join(
            f"ADD INDEX {name} ({', '.join(columns)})" for name, columns in indexes.items()
        )
        op.execute(f"ALTER TABLE {table} {index_adds}, ALGORITHM=INPLACE, LOCK=NONE")


def downgrade() -> None:
    for table, indexes in INDEXES.items():
        for name in indexes:
            op.drop_index(name, table)
    with op.batch_alter_table("fault_occurrences") as occurrences:
        for column in reversed(new_columns()):
            occurrences.drop_column(str(column.name))
