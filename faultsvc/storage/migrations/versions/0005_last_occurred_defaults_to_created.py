"""A fault written without a latest occurrence last occurred when it was created.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Servers older than revision 0003 go on writing while the schema is upgraded
and until they are restarted, and they know nothing of `last_occurred`: its
default (a constant, so that 0003 could add the column instantly) dated their
faults 1970-01-01, never the latest. On MariaDB and MySQL the column now
defaults to `created` (a change of the table's metadata alone,
ALGORITHM=INSTANT); then the faults written before that, with the default of
0003 or behind 0003's backfill, are set right in batches of a thousand rows,
each committed on its own. SQLite cannot change a column's default; its
database is one host's, whose servers stop before the migration and start
after it, so that only the faults written before are set right.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    online = op.get_context().dialect.name in ("mysql", "mariadb")
    if online:
        op.execute(
            "ALTER TABLE instance_faults ALTER COLUMN last_occurred SET DEFAULT (created),"
            " ALGORITHM=INSTANT"
        )
    _date_faults_without_a_latest_occurrence(commit_each_batch=online)


def _date_faults_without_a_latest_occurrence(*, commit_each_batch: bool) -> None:
    """Sets last_occurred to created where it is earlier, in batches in primary key order.

    The search is a plain SELECT, which locks nothing; each batch's UPDATE
    locks its rows alone.
    """
    connection = op.get_bind()
    next_ids = sa.text(
        "SELECT id FROM instance_faults WHERE id > :after AND last_occurred < created"
        " ORDER BY id LIMIT :limit"
    )
    fix = sa.text(
        "UPDATE instance_faults SET last_occurred = created"
        " WHERE id IN :ids AND last_occurred < created"
    ).bindparams(sa.bindparam("ids", expanding=True))
    after = ""
    while batch := list(connection.execute(next_ids, {"after": after, "limit": BATCH}).scalars()):
        connection.execute(fix, {"ids": batch})
        if commit_each_batch:
            connection.exec_driver_sql("COMMIT")
        after = batch[-1]


def downgrade() -> None:
    if op.get_context().dialect.name in ("mysql", "mariadb"):
        op.execute(
            "ALTER TABLE instance_faults"
            " ALTER COLUMN last_occurred SET DEFAULT '1970-01-01 00:00:00', ALGORITHM=INSTANT"
        )
