"""Add request_id, global_request_id and trace_id to instance_faults.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Online on MariaDB and MySQL: columns added last, NOT NULL with a constant
default, in one ALTER with ALGORITHM=INSTANT, which changes only the table's
metadata whatever its size (MariaDB 10.3+, MySQL 8.0). Were the server unable
to add them instantly, the ALTER fails rather than copy the table under a
lock. On Galera it replicates in total order and is as short on every node.
SQLite adds a column with a constant default without rewriting the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateColumn

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def new_columns() -> list[sa.Column[str]]:
    # Frozen here, not imported from faults.py: a migration keeps meaning what
    # it meant when it was written. New objects per call: a column belongs to
    # the one table that it is added to.
    return [
        sa.Column("request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("global_request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("trace_id", sa.String(32), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    dialect = op.get_context().dialect
    if dialect.name not in ("mysql", "mariadb"):
        for column in new_columns():
            op.add_column("instance_faults", column)
        return
    adds = ", ".join(
        f"ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}" for column in new_columns()
    )
    op.execute(f"ALTER TABLE instance_faults {adds}, ALGORITHM=INSTANT")


def downgrade() -> None:
    with op.batch_alter_table("instance_faults") as table:
        for column in reversed(new_columns()):
            table.drop_column(column.name)
