"""Database URLs, async engines and the one place SQLAlchemy errors become botkit errors.

Users write the URLs they know (``sqlite:///data/botkit.db``, ``postgresql://...``);
botkit always talks through the async drivers (aiosqlite, asyncpg), so URLs are
normalised here. A database password never appears in a botkit error message: they
are shown to users and written to logs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from botkit.errors import BotkitError, ConfigError, DatabaseUnavailable, MemoryStoreError

logger = logging.getLogger(__name__)

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}
_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+asyncpg",
}
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Seconds asyncpg waits for a PostgreSQL server before giving up (its default is 60).
CONNECT_TIMEOUT_S = 10

# SQLSTATE classes that mean "no usable connection": 08 connection exception, 28 invalid
# authorisation, 3D000 no such database, 57P0x server shutting down / not accepting yet.
_UNAVAILABLE_SQLSTATES = ("08", "28", "3D000", "57P01", "57P02", "57P03")


def normalize_url(url: str | URL, password: str | None = None) -> URL:
    """Turn a user's database URL into one for botkit's async drivers.

    ``password`` (from ``BOTKIT_DATABASE_PASSWORD``) fills in a URL that has none. The
    parent directory of a SQLite database file is created.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa_exc.ArgumentError:
        raise ConfigError(
            "the database URL cannot be parsed; write it as sqlite:///path/to/botkit.db "
            "or postgresql://user@host:5432/dbname"
        ) from None
    scheme = parsed.drivername.lower()
    if scheme in _SQLITE_SCHEMES:
        parsed = parsed.set(drivername=SQLITE_DRIVER)
        _create_sqlite_parent(parsed)
        return parsed
    if scheme in _POSTGRES_SCHEMES:
        parsed = parsed.set(drivername=POSTGRES_DRIVER)
        if password and not parsed.password:
            parsed = parsed.set(password=password)
        if "sslmode" in parsed.query:
            # libpq spells it sslmode; asyncpg takes the same values as ``ssl``.
            query = dict(parsed.query)
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
        return parsed
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r}; botkit supports SQLite "
        "(sqlite:///path/to/botkit.db) and PostgreSQL (postgresql://user@host/dbname)"
    )


def _create_sqlite_parent(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    parent = Path(database).expanduser().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the directory {parent} for the SQLite database: {exc.strerror}"
        ) from exc


def describe_url(url: URL) -> str:
    """Where a database is, for messages: ``host:port/dbname`` or the SQLite file path."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    host = url.host or "localhost"
    port = url.port or 5432
    return f"{host}:{port}/{url.database or ''}"


def create_engine(
    url: str | URL,
    *,
    sqlite_synchronous: str = "FULL",
    busy_timeout_ms: int = 5000,
    foreign_keys: bool = True,
) -> AsyncEngine:
    """An async engine for ``url`` (normalised first when it is a string).

    Every SQLite connection is set up with WAL (readers never block the writer),
    enforced foreign keys, a busy timeout for locks held by other processes, and the
    configured ``synchronous`` level. ``foreign_keys=False`` is for migrations only:
    SQLite rebuilds a table to alter it, and enforced keys would cascade that delete.
    """
    db_url = normalize_url(url) if isinstance(url, str) else url
    if db_url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S}
        return create_async_engine(db_url, pool_pre_ping=True, connect_args=connect_args)

    synchronous = sqlite_synchronous.upper()
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ConfigError(
            f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
            f"got {sqlite_synchronous!r}"
        )
    busy_timeout = int(busy_timeout_ms)
    engine = create_async_engine(db_url)

    @event.listens_for(engine.sync_engine, "connect")
    def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    return engine


def _root_causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached, rather than a failed statement."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    for cause in _root_causes(exc):
        if isinstance(cause, OSError | sa_exc.DisconnectionError):
            return True
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if type(cause).__name__ in {"ConnectionDoesNotExistError", "InterfaceError"}:
            return True
    return False


def describe_error(exc: BaseException, url: URL) -> str:
    """The driver's own words, first line only, with the password scrubbed out."""
    inner = getattr(exc, "orig", None) or exc
    words = (inner.strerror if isinstance(inner, OSError) else None) or str(inner)
    words = words.strip().splitlines()[0] if words.strip() else type(inner).__name__
    if url.password:
        words = words.replace(str(url.password), "***")
    return words


def unavailable(url: URL, exc: BaseException) -> DatabaseUnavailable:
    """The one-sentence DatabaseUnavailable for ``url``; the caller raises it ``from exc``."""
    where = describe_url(url)
    if url.get_backend_name() == "sqlite":
        return DatabaseUnavailable(
            f"cannot open the SQLite database {where} ({describe_error(exc, url)}); check that the "
            "path is a writable file"
        )
    return DatabaseUnavailable(
        f"cannot connect to the PostgreSQL database at {where} ({describe_error(exc, url)}); check "
        "that the server is running and that the user, password and database name are right"
    )


@contextmanager
def map_errors(url: URL, *, connecting: bool = False) -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors as botkit errors, ``from`` the original.

    With ``connecting=True`` every database error counts as "cannot connect": it is
    used around the first probe of a freshly opened store.
    """
    try:
        yield
    except BotkitError:
        raise
    except (OSError, sa_exc.SQLAlchemyError) as exc:
        if connecting or is_unavailable(exc):
            raise unavailable(url, exc) from exc
        if isinstance(exc, sa_exc.OperationalError) and "locked" in str(exc.orig):
            raise MemoryStoreError(
                f"the SQLite database {describe_url(url)} stayed locked (by another process, "
                "or another connection of this one under heavy load); raise [memory] "
                "busy_timeout_ms, or use PostgreSQL for several processes or heavy traffic"
            ) from exc
        raise MemoryStoreError(
            f"the conversation database failed: {describe_error(exc, url)}"
        ) from exc


def _open_sqlite_file(database: str) -> None:
    sqlite3.connect(database).close()


async def probe(engine: AsyncEngine) -> None:
    """Connect once and run ``SELECT 1``; DatabaseUnavailable if that fails."""
    url = engine.url
    database = url.database or ""
    if (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
    ):
        # Open the file with plain sqlite3 first: when aiosqlite fails to connect it leaves
        # its worker thread behind, which later crashes on the closed event loop.
        try:
            await asyncio.to_thread(_open_sqlite_file, database)
        except sqlite3.Error as exc:
            raise unavailable(url, exc) from exc
    with map_errors(url, connecting=True):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))


__all__ = [
    "create_engine",
    "describe_error",
    "describe_url",
    "is_unavailable",
    "map_errors",
    "normalize_url",
    "probe",
    "unavailable",
]
