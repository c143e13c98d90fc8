"""Alembic, driven from code: ``botkit db upgrade|downgrade`` and the store's auto-upgrade.

There is no alembic.ini: the Config is built here, pointing at the ``migrations``
folder, and the database URL travels in ``config.attributes`` so a password never
passes through Alembic's ini interpolation or its log lines. Alembic's command API is
synchronous and ``migrations/env.py`` runs its own event loop, so commands run in a
worker thread; that keeps them callable from inside a running loop (the CLI, tests,
the server's startup).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import URL
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

import botkit
from botkit.errors import BotkitError, MemoryStoreError, MigrationError
from botkit.memory.db import (
    create_engine,
    describe_error,
    describe_url,
    is_unavailable,
    normalize_url,
    unavailable,
)

logger = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """The Alembic folder: inside the package when a wheel ships it, else the source tree."""
    package = Path(botkit.__file__).parent
    shipped = package / "migrations"
    return shipped if shipped.is_dir() else package.parent / "migrations"


def alembic_config(url: URL | None = None) -> Config:
    """An Alembic Config for botkit's migrations; ``url`` goes in ``attributes["url"]``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    # New revision files read 0002_what_changed.py (pass rev_id="0002" to command.revision).
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.attributes["url"] = url
    return config


def head() -> str:
    """The newest revision botkit ships."""
    try:
        heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    except CommandError as exc:
        where = migrations_dir()
        raise MigrationError(f"cannot read botkit's migrations in {where}: {exc}") from exc
    if len(heads) != 1:
        raise MigrationError(
            f"botkit's migrations have {len(heads)} heads ({', '.join(heads) or 'none'}); "
            "merge them into one"
        )
    return heads[0]


def _url(url: str | URL, password: str | None) -> URL:
    return normalize_url(url, password) if isinstance(url, str) or password else url


def _failed(doing: str, db_url: URL, exc: BaseException) -> MemoryStoreError:
    """DatabaseUnavailable when the server cannot be reached, else MigrationError."""
    if isinstance(exc, OSError | SQLAlchemyError) and is_unavailable(exc):
        return unavailable(db_url, exc)
    return MigrationError(f"cannot {doing}: {describe_error(exc, db_url)}")


async def _run_command(action: str, db_url: URL, revision: str) -> None:
    config = alembic_config(db_url)
    logger.info("running alembic %s to %s on %s", action, revision, describe_url(db_url))
    run = command.upgrade if action == "upgrade" else command.downgrade
    try:
        await asyncio.to_thread(run, config, revision)
    except BotkitError:
        raise
    except Exception as exc:
        doing = f"{action} the database at {describe_url(db_url)} to {revision}"
        raise _failed(doing, db_url, exc) from exc


async def upgrade(url: str | URL, revision: str = "head", *, password: str | None = None) -> None:
    """Migrate the database forward to ``revision`` (the newest by default)."""
    await _run_command("upgrade", _url(url, password), revision)


async def downgrade(url: str | URL, revision: str = "base", *, password: str | None = None) -> None:
    """Migrate the database back to ``revision``; ``base`` removes every botkit table."""
    await _run_command("downgrade", _url(url, password), revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current(url: str | URL, *, password: str | None = None) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    db_url = _url(url, password)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    except Exception as exc:
        doing = f"read the schema revision of the database at {describe_url(db_url)}"
        raise _failed(doing, db_url, exc) from exc
    finally:
        await engine.dispose()


__all__ = ["alembic_config", "current", "downgrade", "head", "migrations_dir", "upgrade"]
