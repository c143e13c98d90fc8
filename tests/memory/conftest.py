"""Fixtures that run every memory test on a SQLite file and on a real PostgreSQL server.

PostgreSQL: one throwaway database per test session (``botkit_test_<hex>``, created
through the ``test`` database and dropped WITH (FORCE) at the end); each test gets an
empty ``public`` schema. An unreachable server fails the postgres cases with a message
saying so, because CI must really run them; ``BOTKIT_TEST_SKIP_POSTGRES=1`` skips them
on a machine without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from botkit.memory import ConversationStore
from botkit.memory.db import normalize_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _admin_url() -> URL:
    return normalize_url(os.environ.get("BOTKIT_TEST_PG_URL", DEFAULT_PG_URL))


async def _admin(statement: str) -> None:
    engine = create_async_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _admin_now(statement: str) -> None:
    """Run ``_admin`` to completion from sync code, even while a test's loop is running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(_admin(statement))).result()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a PostgreSQL database that lives for this test session."""
    name = f"botkit_test_{secrets.token_hex(6)}"
    where = _admin_url().render_as_string(hide_password=True)
    try:
        _admin_now(f'CREATE DATABASE "{name}"')
        failure = None
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is not None:
        if os.environ.get("BOTKIT_TEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL at {where} unreachable and BOTKIT_TEST_SKIP_POSTGRES=1")
        pytest.fail(
            f"PostgreSQL at {where} is not reachable ({failure}); start it, "
            "point BOTKIT_TEST_PG_URL at another server, or set BOTKIT_TEST_SKIP_POSTGRES=1 "
            "to skip the postgres cases",
            pytrace=False,
        )
    try:
        yield _admin_url().set(database=name).render_as_string(hide_password=False)
    finally:
        _admin_now(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _reset_pg_schema(url: str) -> None:
    engine = create_async_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def db_url(backend: str, tmp_path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An empty database on ``backend``, as the URL a user would write."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'botkit.db'}"
        return
    url = request.getfixturevalue("pg_database")
    try:
        yield url
    finally:
        await _reset_pg_schema(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[ConversationStore]:
    """An open store, schema at head, closed after the test."""
    opened = await ConversationStore.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
