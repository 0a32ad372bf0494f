"""The `instance_faults` table (the spec's columns, plus source, host, the ids of its logs and
what groups repeats) and `fault_occurrences`, one small row per occurrence of a fault."""

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
from faultsvc.fingerprints import FINGERPRINT_CHARS

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
    sa.Column("fingerprint", sa.String(FINGERPRINT_CHARS), nullable=False, server_default=""),
    sa.Column("occurrence_count", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("last_occurred", UtcDateTime, nullable=False),
    # The fingerprint while the fault is live, NULL once cleared: the unique
    # key below then holds one live fault per fingerprint, and any number of
    # cleared ones (MySQL has no partial indexes; NULLs never collide).
    sa.Column("live_fingerprint", sa.String(FINGERPRINT_CHARS), nullable=True),
    # One index serves the latest-fault and the history reads; one per request
    # id serves SearchFaults (with those of fault_occurrences).
    sa.Index(
        "ix_instance_faults_instance_last_occurred", "instance_id", "deleted", "last_occurred", "id"
    ),
    sa.Index("ux_instance_faults_live_fingerprint", "instance_id", "live_fingerprint", unique=True),
    sa.Index("ix_instance_faults_request_id", "request_id"),
    sa.Index("ix_instance_faults_global_request_id", "global_request_id"),
    # A newest-first page of every instance's faults, whole or of one source or
    # host, is a range of one of these; a fingerprint names a few faults
    # (docs/fleet.md).
    sa.Index("ix_instance_faults_last_occurred", "deleted", "last_occurred", "id"),
    *(
        sa.Index(
            f"ix_instance_faults_{column}_last_occurred", column, "deleted", "last_occurred", "id"
        )
        for column in ("source", "host")
    ),
    # Which component on which host: two fields, each common, rarely together.
    sa.Index(
        "ix_instance_faults_source_host_last_occurred",
        "source",
        "host",
        "deleted",
        "last_occurred",
        "id",
    ),
    sa.Index("ix_instance_faults_fingerprint", "fingerprint"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
    mysql_engine="InnoDB",
)

# Each occurrence of a fault, by the id it was recorded with: a retry of it is
# found here and not counted again.
fault_occurrences = sa.Table(
    "fault_occurrences",
    metadata,
    sa.Column("id", sa.String(ID_MAX_CHARS), primary_key=True),
    sa.Column("fault_id", sa.String(ID_MAX_CHARS), nullable=False),
    sa.Column("occurred", UtcDateTime, nullable=False),
    # The request ids of each occurrence, so that any of them leads to its fault.
    sa.Column("request_id", sa.String(REQUEST_ID_MAX_CHARS), nullable=False, server_default=""),
    sa.Column(
        "global_request_id", sa.String(REQUEST_ID_MAX_CHARS), nullable=False, server_default=""
    ),
    # When the server committed the occurrence, by the database's clock: the
    # order of the feed WatchFaults follows. MySQL fills it in
    # (CURRENT_TIMESTAMP(6), in the UTC of faultsvc's sessions); SQLite, whose
    # writers share one host's clock, is given it. 1970 for occurrences
    # recorded before it was kept.
    sa.Column("recorded", UtcDateTime, nullable=False, server_default="1970-01-01 00:00:00"),
    # The fault's count once this occurrence was counted: 1 for its first, n for
    # its nth. 0 for occurrences recorded before it was kept.
    sa.Column("ordinal", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_fault_occurrences_fault_id_occurred", "fault_id", "occurred"),
    sa.Index("ix_fault_occurrences_occurred_fault_id", "occurred", "fault_id"),
    sa.Index("ix_fault_occurrences_recorded", "recorded", "id"),
    sa.Index("ix_fault_occurrences_request_id", "request_id"),
    sa.Index("ix_fault_occurrences_global_request_id", "global_request_id"),
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
    mysql_engine="InnoDB",
)

# A fault not cleared; and what clearing sets: a cleared fault is not counted into.
LIVE = instance_faults.c.deleted == sa.false()
CLEARED = {"deleted": True, "live_fingerprint": None}
