"""Alembic environment: migrations run on the connection the service hands over."""

from __future__ import annotations

from alembic import context

from faultsvc.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `faultsvc db upgrade`, which supplies the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
