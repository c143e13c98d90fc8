"""Alembic revisions: they build the schema the models describe, and take it away again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from botkit.errors import MigrationError
from botkit.memory import ConversationStore, migrate
from botkit.memory.db import create_engine
from botkit.memory.models import Base

BOTKIT_TABLES = {"users", "conversations", "messages", "feedback"}


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def test_migrations_folder_and_single_head_are_found() -> None:
    assert (migrate.migrations_dir() / "env.py").is_file()
    assert migrate.head() == "0004"


async def test_upgrade_to_head_then_downgrade_to_base_leaves_no_tables(db_url: str) -> None:
    assert await migrate.current(db_url) is None

    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head()
    assert BOTKIT_TABLES <= await table_names(db_url)

    await migrate.upgrade(db_url)  # already at head: nothing to do, no error
    await migrate.downgrade(db_url, "base")

    assert await migrate.current(db_url) is None
    # Alembic keeps its own (now empty) bookkeeping table; none of botkit's remain.
    assert await table_names(db_url) <= {"alembic_version"}


async def test_models_match_the_migrated_schema(db_url: str) -> None:
    await migrate.upgrade(db_url)
    engine = create_engine(db_url)

    def differences(connection: Connection) -> list[object]:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_open_without_auto_upgrade_on_an_empty_database_names_the_command(
    db_url: str,
) -> None:
    with pytest.raises(MigrationError, match="run `botkit db upgrade`") as caught:
        await ConversationStore.open(db_url, auto_upgrade=False)
    assert "base" in str(caught.value)
    assert migrate.head() in str(caught.value)

    await migrate.upgrade(db_url)
    async with await ConversationStore.open(db_url, auto_upgrade=False) as store:
        assert await store.latest_conversation("web", "none") is None


async def test_upgrade_to_an_unknown_revision_is_a_migration_error(db_url: str) -> None:
    with pytest.raises(MigrationError, match="9999"):
        await migrate.upgrade(db_url, "9999")
