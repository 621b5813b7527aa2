"""Alembic environment: migrations always run on a connection handed over by :class:`Database`."""

from __future__ import annotations

from alembic import context

from im_server.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through im_server.storage.engine.Database.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
