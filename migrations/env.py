"""Alembic environment for botkit's conversation database, on an async engine.

botkit builds the Alembic Config in code (``botkit.memory.migrate``), so there is no
alembic.ini. The URL arrives as ``config.attributes["url"]`` (or, for hand-run
``alembic -x``-less setups, the ``sqlalchemy.url`` main option). A caller that already
holds a sync connection (e.g. inside ``AsyncConnection.run_sync``) may pass it as
``config.attributes["connection"]``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import URL, text
from sqlalchemy.engine import Connection

from botkit.memory.db import create_engine, normalize_url
from botkit.memory.models import Base

config = context.config
target_metadata = Base.metadata

# Any constant: serialises concurrent upgrades from several botkit processes on PostgreSQL.
_PG_MIGRATION_LOCK = 0x626F746B6974  # "botkit"


def _database_url() -> URL:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['url'] or sqlalchemy.url")
    return normalize_url(url) if isinstance(url, str) else url


def run_migrations_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade --sql``) without connecting."""
    context.configure(
        url=_database_url().render_as_string(hide_password=True),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters a table by copying it; batch mode does that for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; the second process then sees the new head.
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


async def run_async_migrations() -> None:
    # Foreign keys off on SQLite so a batch table copy cannot cascade-delete rows.
    engine = create_engine(_database_url(), foreign_keys=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
