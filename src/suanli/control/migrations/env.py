"""Alembic environment: runs on the connection suanli hands over (``config.attributes['connection']``)."""

from __future__ import annotations

from alembic import context

from suanli.control.db import metadata

config = context.config
conn = config.attributes.get("connection")
if conn is None:  # pragma: no cover - the alembic CLI with sqlalchemy.url set
    from suanli.control.db import make_engine

    conn = make_engine(config.get_main_option("sqlalchemy.url") or "").connect()
context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
