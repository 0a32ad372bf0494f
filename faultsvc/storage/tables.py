"""The `instance_faults` table: the spec's columns, plus source, host and the ids of its logs."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from faultsvc.faults import (
    ID_MAX_CHARS,
    LABEL_MAX_CHARS,
    MESSAGE_MAX_CHARS,
    REQUEST_ID_MAX_CHARS,
    TRACE_ID_CHARS,
)

metadata = sa.MetaData()

# MySQL's DATETIME drops fractions unless declared DATETIME(6); without them,
# faults written in the same second have no order.
UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

instance_faults = sa.Table(
    "instance_faults",
    metadata,
    sa.Column("id", sa.String(ID_MAX_CHARS), primary_key=True),
    sa.Column("instance_id", sa.String(ID_MAX_CHARS), nullable=False),
    sa.Column("message", sa.String(MESSAGE_MAX_CHARS), nullable=False),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("updated", UtcDateTime, nullable=False),
    sa.Column("deleted", sa.Boolean(create_constraint=False), nullable=False, server_default="0"),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    sa.Column("source", sa.String(LABEL_MAX_CHARS), nullable=False, server_default=""),
    sa.Column("host", sa.String(LABEL_MAX_CHARS), nullable=False, server_default=""),
    sa.Column("request_id", sa.String(REQUEST_ID_MAX_CHARS), nullable=False, server_default=""),
    sa.Column(
        "global_request_id", sa.String(REQUEST_ID_MAX_CHARS), nullable=False, server_default=""
    ),
    sa.Column("trace_id", sa.String(TRACE_ID_CHARS), nullable=False, server_default=""),
    # One index serves the latest-fault and the history reads; one per request
    # id serves SearchFaults, in the same order.
    sa.Index("ix_instance_faults_instance_latest", "instance_id", "deleted", "created", "id"),
    sa.Index("ix_instance_faults_request_id", "request_id", "deleted", "created", "id"),
    sa.Index(
        "ix_instance_faults_global_request_id", "global_request_id", "deleted", "created", "id"
    ),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
    mysql_engine="InnoDB",
)
