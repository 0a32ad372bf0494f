"""Index instance_faults by request_id and by global_request_id, for SearchFaults.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Online on MariaDB and MySQL: the indexes are built in place, with writes
going on (ALGORITHM=INPLACE, LOCK=NONE); were the server unable to, the
ALTER fails rather than lock the table. Each index serves a search in the
order it answers, latest occurrence first, among live faults.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here: a migration keeps meaning what it meant when it was written.
INDEXES = {
    "ix_instance_faults_request_id": ["request_id", "deleted", "last_occurred", "id"],
    "ix_instance_faults_global_request_id": ["global_request_id", "deleted", "last_occurred", "id"],
}


def upgrade() -> None:
    if op.get_context().dialect.name not in ("mysql", "mariadb"):
        for name, columns in INDEXES.items():
            op.create_index(name, "instance_faults", columns)
        return
    adds = ", ".join(
        f"ADD INDEX {name} ({', '.join(columns)})" for name, columns in INDEXES.items()
    )
    op.execute(f"ALTER TABLE instance_faults {adds}, ALGORITHM=INPLACE, LOCK=NONE")


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, "instance_faults")
