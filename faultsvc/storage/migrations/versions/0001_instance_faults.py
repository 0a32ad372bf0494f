"""Create instance_faults.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here, not imported from tables.py: a migration must keep meaning what
# it meant when it was written.
UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "instance_faults",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("message", sa.String(255), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created", UtcDateTime, nullable=False),
        sa.Column("updated", UtcDateTime, nullable=False),
        sa.Column(
            "deleted", sa.Boolean(create_constraint=False), nullable=False, server_default="0"
        ),
        sa.Column("deleted_at", UtcDateTime, nullable=True),
        sa.Column("source", sa.String(255), nullable=False, server_default=""),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        mysql_engine="InnoDB",
    )
    op.create_index(
        "ix_instance_faults_instance_latest",
        "instance_faults",
        ["instance_id", "deleted", "created", "id"],
    )


def downgrade() -> None:
    op.drop_table("instance_faults")
