"""URLs users write, and the sentences they read when the database cannot be reached."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import make_url

from botkit.errors import ConfigError, DatabaseUnavailable, MemoryStoreError
from botkit.memory import ConversationStore, migrate
from botkit.memory.db import create_engine, map_errors, normalize_url

PASSWORD = "s3cret-pw"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_password_hidden(err: BaseException) -> None:
    assert PASSWORD not in str(err)
    assert PASSWORD not in repr(err)
    assert all(PASSWORD not in str(arg) for arg in err.args)


def test_sqlite_urls_get_the_async_driver_and_a_parent_directory(tmp_path) -> None:
    target = tmp_path / "deep" / "er" / "botkit.db"
    url = normalize_url(f"sqlite:///{target}")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(target)
    assert target.parent.is_dir()
    assert normalize_url("sqlite+aiosqlite:///:memory:").database == ":memory:"


@pytest.mark.parametrize(
    "written",
    [
        "postgresql://bot@db.example:6543/botkit",
        "postgres://bot@db.example:6543/botkit",
        "postgresql+psycopg://bot@db.example:6543/botkit",
        "postgresql+asyncpg://bot@db.example:6543/botkit",
    ],
)
def test_postgres_urls_get_asyncpg_and_the_password_from_the_environment(written: str) -> None:
    url = normalize_url(written, password=PASSWORD)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database, url.username) == ("db.example", 6543, "botkit", "bot")
    assert url.password == PASSWORD


def test_a_password_in_the_url_wins_over_the_environment() -> None:
    url = normalize_url("postgresql://bot:in-url@h/db", password=PASSWORD)
    assert url.password == "in-url"


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    url = normalize_url("postgresql://bot@h/db?sslmode=require")
    assert dict(url.query) == {"ssl": "require"}


@pytest.mark.parametrize("written", [f"mysql://bot:{PASSWORD}@h/db", "oracle://h/db", "::nonsense"])
def test_unsupported_urls_are_config_errors_without_the_password(written: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///.*postgresql://") as caught:
        normalize_url(written)
    assert_password_hidden(caught.value)


def test_an_invalid_sqlite_synchronous_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        create_engine(f"sqlite:///{tmp_path}/x.db", sqlite_synchronous="FULL; DROP TABLE users")


@pytest.mark.parametrize("password_in", ["url", "argument"])
async def test_unreachable_postgres_names_host_and_port_never_the_password(
    password_in: str,
) -> None:
    port = unused_port()
    if password_in == "url":
        url, password = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/botkit", None
    else:
        url, password = f"postgresql://postgres@127.0.0.1:{port}/botkit", PASSWORD

    with pytest.raises(DatabaseUnavailable) as caught:
        await ConversationStore.open(url, password=password)

    message = str(caught.value)
    assert f"127.0.0.1:{port}/botkit" in message
    assert message.count(". ") == 0, "one sentence"
    assert_password_hidden(caught.value)
    assert caught.value.__cause__ is not None

    with pytest.raises(DatabaseUnavailable) as from_migrate:
        await migrate.upgrade(url, password=password)
    assert f"127.0.0.1:{port}" in str(from_migrate.value)
    assert_password_hidden(from_migrate.value)
    with pytest.raises(DatabaseUnavailable):
        await migrate.current(url, password=password)


@pytest.mark.postgres
async def test_a_missing_postgres_database_is_unavailable_and_named(pg_database: str) -> None:
    url = make_url(pg_database).set(database="botkit_no_such_db", password=PASSWORD)
    with pytest.raises(DatabaseUnavailable, match="botkit_no_such_db") as caught:
        await ConversationStore.open(url.render_as_string(hide_password=False))
    assert "does not exist" in str(caught.value)
    assert_password_hidden(caught.value)


async def test_an_unopenable_sqlite_file_is_unavailable_and_named(tmp_path) -> None:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(DatabaseUnavailable, match="a-directory.db"):
        await ConversationStore.open(f"sqlite:///{directory}")


def test_lost_connections_mid_operation_are_unavailable_other_failures_are_store_errors() -> None:
    url = normalize_url(f"postgresql://bot:{PASSWORD}@10.0.0.5:5432/botkit")
    lost = sa_exc.OperationalError("SELECT 1", {}, ConnectionResetError(104, "reset"))
    lost.connection_invalidated = True
    with (
        pytest.raises(DatabaseUnavailable, match=r"10\.0\.0\.5:5432/botkit") as caught,
        map_errors(url),
    ):
        raise lost
    assert_password_hidden(caught.value)
    assert caught.value.__cause__ is lost

    failed = sa_exc.IntegrityError("INSERT ...", {}, Exception("CHECK constraint failed"))
    with (
        pytest.raises(MemoryStoreError, match="CHECK constraint failed") as caught,
        map_errors(url),
    ):
        raise failed
    assert type(caught.value) is MemoryStoreError
    assert caught.value.__cause__ is failed
