"""ConversationStore behaviour, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC

import pytest
from sqlalchemy import text

from botkit.errors import MemoryStoreError
from botkit.memory import ConversationStore
from botkit.memory.db import create_engine

TABLES = ("users", "conversations", "messages", "feedback")


async def count_rows(url: str, table: str, where: str = "", **params: object) -> int:
    """Counted with plain SQL, not through the store under test."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
            return (await connection.execute(text(sql), params)).scalar_one()
    finally:
        await engine.dispose()


async def test_upsert_user_is_idempotent(store: ConversationStore, db_url: str) -> None:
    first = await store.upsert_user("telegram", "42", "Ann")
    again = await store.upsert_user("telegram", "42")
    renamed = await store.upsert_user("telegram", "42", "Annie")
    other_channel = await store.upsert_user("discord", "42")

    assert again == first
    assert renamed.id == first.id
    assert renamed.display_name == "Annie"
    assert other_channel.id != first.id
    assert first.opted_out is False
    assert first.created_at.tzinfo is not None
    assert first.created_at.utcoffset().total_seconds() == 0
    assert await store.find_user("telegram", "42") == renamed
    assert await store.find_user("telegram", "nobody") is None
    assert await count_rows(db_url, "users") == 2


async def test_conversation_round_trips_messages_oldest_first_and_limit_keeps_newest(
    store: ConversationStore,
) -> None:
    user = await store.upsert_user("web", "u1")
    conversation = await store.current_conversation(
        "web", "chat-1", persona="pine", user_id=user.id
    )
    assert conversation.state == "bot"
    assert conversation.closed_at is None
    assert conversation.created_at.tzinfo == UTC

    texts = [f"turn {i}" for i in range(6)]
    for i, body in enumerate(texts):
        role = "user" if i % 2 == 0 else "assistant"
        stored = await store.add_message(
            conversation.id,
            role=role,
            text=body,
            user_id=user.id if role == "user" else None,
            token_count=i,
            persona=None if role == "user" else "pine",
            adapter_version=None if role == "user" else "pine@1",
        )
        assert stored is not None
        assert stored.text == body

    history = await store.messages(conversation.id)
    assert [m.text for m in history] == texts
    assert [m.role for m in history[:2]] == ["user", "assistant"]
    assert history[1].persona == "pine"
    assert history[1].adapter_version == "pine@1"
    assert history[1].user_id is None
    assert history[0].user_id == user.id
    newest = await store.messages(conversation.id, limit=3)
    assert [m.text for m in newest] == texts[-3:]
    assert await store.messages(conversation.id, limit=0) == []

    again = await store.current_conversation("web", "chat-1", persona="pine", user_id=user.id)
    assert again.id == conversation.id
    assert (await store.get_conversation(conversation.id)).updated_at >= conversation.updated_at
    assert await store.get_conversation(conversation.id + 1000) is None


async def test_duplicate_platform_message_id_returns_none_and_stores_nothing(
    store: ConversationStore, db_url: str
) -> None:
    user = await store.upsert_user("telegram", "7")
    conversation = await store.current_conversation(
        "telegram", "c7", persona="pine", user_id=user.id
    )
    first = await store.add_message(
        conversation.id, role="user", text="hello", user_id=user.id, platform_message_id="1001"
    )
    assert first is not None
    assert first.platform_message_id == "1001"

    assert (
        await store.add_message(
            conversation.id, role="user", text="hello", user_id=user.id, platform_message_id="1001"
        )
        is None
    )
    # The key names the chat, not the conversation: a retry after /reset is still a retry.
    fresh = await store.start_conversation("telegram", "c7", persona="pine", user_id=user.id)
    assert (
        await store.add_message(
            fresh.id, role="user", text="hello", user_id=user.id, platform_message_id="1001"
        )
        is None
    )
    assert await count_rows(db_url, "messages") == 1
    assert await store.messages(fresh.id) == []

    # The same platform id in another chat is a different message.
    elsewhere = await store.current_conversation("telegram", "c8", persona="pine", user_id=None)
    assert (
        await store.add_message(elsewhere.id, role="user", text="hi", platform_message_id="1001")
        is not None
    )
    # Messages without a platform id are never deduplicated.
    for _ in range(2):
        assert await store.add_message(fresh.id, role="assistant", text="same") is not None
    assert await count_rows(db_url, "messages") == 4


async def test_start_conversation_closes_the_old_one(store: ConversationStore) -> None:
    old = await store.current_conversation("discord", "guild:1", persona="pine", user_id=None)
    await store.add_message(old.id, role="user", text="before reset")

    fresh = await store.start_conversation("discord", "guild:1", persona="sage", user_id=None)

    closed = await store.get_conversation(old.id)
    assert closed.state == "closed"
    assert closed.closed_at is not None
    assert closed.closed_at.tzinfo == UTC
    assert fresh.id != old.id
    assert fresh.state == "bot"
    assert fresh.persona == "sage"
    assert (await store.latest_conversation("discord", "guild:1")).id == fresh.id
    assert (
        await store.current_conversation("discord", "guild:1", persona="pine", user_id=None)
    ).id == fresh.id
    assert [m.text for m in await store.messages(old.id)] == ["before reset"]
    assert await store.messages(fresh.id) == []


async def test_start_conversation_on_a_new_chat_just_opens_one(store: ConversationStore) -> None:
    assert await store.latest_conversation("web", "new") is None
    opened = await store.start_conversation("web", "new", persona="pine", user_id=None)
    assert (await store.latest_conversation("web", "new")).id == opened.id


async def test_latest_conversation_survives_reopening_the_store(db_url: str) -> None:
    async with await ConversationStore.open(db_url) as first:
        user = await first.upsert_user("telegram", "99")
        conversation = await first.current_conversation(
            "telegram", "chat-99", persona="pine", user_id=user.id
        )
        await first.add_message(conversation.id, role="user", text="remember me", user_id=user.id)
        await first.add_message(conversation.id, role="assistant", text="I will")

    async with await ConversationStore.open(db_url, auto_upgrade=False) as restarted:
        found = await restarted.latest_conversation("telegram", "chat-99")
        assert found is not None
        assert found.id == conversation.id
        assert [m.text for m in await restarted.messages(found.id)] == ["remember me", "I will"]
        assert await restarted.latest_conversation("telegram", "other-chat") is None


async def _populate_two_users(store: ConversationStore) -> dict[str, int]:
    """Ann (to be forgotten) and Bob; each rates the other's conversation too."""
    ann = await store.upsert_user("telegram", "ann", "Ann")
    bob = await store.upsert_user("telegram", "bob", "Bob")
    ann_chat = await store.current_conversation(
        "telegram", "dm-ann", persona="pine", user_id=ann.id
    )
    bob_chat = await store.current_conversation(
        "telegram", "dm-bob", persona="pine", user_id=bob.id
    )
    group = await store.current_conversation("telegram", "group", persona="pine", user_id=bob.id)

    ann_q = await store.add_message(ann_chat.id, role="user", text="ann asks", user_id=ann.id)
    ann_reply = await store.add_message(ann_chat.id, role="assistant", text="bot answers ann")
    bob_q = await store.add_message(bob_chat.id, role="user", text="bob asks", user_id=bob.id)
    bob_reply = await store.add_message(bob_chat.id, role="assistant", text="bot answers bob")
    ann_in_group = await store.add_message(
        group.id, role="user", text="ann in group", user_id=ann.id
    )
    bob_in_group = await store.add_message(
        group.id, role="user", text="bob in group", user_id=bob.id
    )

    await store.add_feedback(ann_reply.id, user_id=ann.id, score=1, comment="nice")
    await store.add_feedback(bob_reply.id, user_id=ann.id, score=-1)  # Ann rates Bob's reply
    await store.add_feedback(ann_reply.id, user_id=bob.id, score=-1)  # Bob rates Ann's reply
    await store.add_feedback(bob_reply.id, user_id=bob.id, score=1)
    await store.add_feedback(ann_in_group.id, user_id=bob.id, score=1)  # on Ann's message
    await store.add_feedback(bob_in_group.id, user_id=None, score=1)
    return {
        "ann": ann.id,
        "bob": bob.id,
        "ann_chat": ann_chat.id,
        "bob_chat": bob_chat.id,
        "group": group.id,
        "ann_q": ann_q.id,
        "bob_q": bob_q.id,
    }


async def test_export_contains_every_message_and_feedback_of_the_user(
    store: ConversationStore,
) -> None:
    ids = await _populate_two_users(store)

    exported = await store.export_user("telegram", "ann")

    json.dumps(exported)  # JSON-serialisable as it is
    assert exported["user"]["external_id"] == "ann"
    assert exported["user"]["display_name"] == "Ann"
    assert [c["id"] for c in exported["conversations"]] == [ids["ann_chat"]]
    own = exported["conversations"][0]["messages"]
    assert [m["text"] for m in own] == ["ann asks", "bot answers ann"]
    assert sorted(f["score"] for f in own[1]["feedback"]) == [-1, 1]
    assert [m["text"] for m in exported["other_messages"]] == ["ann in group"]
    assert [f["score"] for f in exported["other_messages"][0]["feedback"]] == [1]
    assert sorted((f["score"], f["comment"]) for f in exported["feedback_given"]) == [
        (-1, None),
        (1, "nice"),
    ]
    # Bob's own words never appear in Ann's export.
    assert "bob asks" not in json.dumps(exported)
    assert "bob in group" not in json.dumps(exported)

    with pytest.raises(MemoryStoreError, match="no user"):
        await store.export_user("telegram", "nobody")


async def test_forget_deletes_across_every_table_and_leaves_other_users_untouched(
    store: ConversationStore, db_url: str
) -> None:
    ids = await _populate_two_users(store)
    bob_before = await store.export_user("telegram", "bob")

    counts = await store.forget_user("telegram", "ann")

    # feedback: 2 given by Ann + Bob's on Ann's reply + Bob's on Ann's group message.
    assert counts == {"feedback": 4, "messages": 3, "conversations": 1, "users": 1}
    ann = {"ann": ids["ann"]}
    assert await count_rows(db_url, "users", "id = :ann", **ann) == 0
    assert await count_rows(db_url, "conversations", "user_id = :ann", **ann) == 0
    assert await count_rows(db_url, "messages", "user_id = :ann", **ann) == 0
    assert await count_rows(db_url, "feedback", "user_id = :ann", **ann) == 0
    assert await count_rows(db_url, "messages", "conversation_id = :c", c=ids["ann_chat"]) == 0
    # What is left is Bob's, exactly as before.
    assert {t: await count_rows(db_url, t) for t in TABLES} == {
        "users": 1,
        "conversations": 2,
        "messages": 3,
        "feedback": 2,
    }
    bob_after = await store.export_user("telegram", "bob")
    bob_before["conversations"][1]["messages"] = [
        m for m in bob_before["conversations"][1]["messages"] if m["text"] != "ann in group"
    ]
    for conversation in bob_before["conversations"]:
        for message in conversation["messages"]:
            message["feedback"] = [f for f in message["feedback"] if f["user_id"] != ids["ann"]]
    assert bob_after["user"] == bob_before["user"]
    assert bob_after["conversations"] == bob_before["conversations"]
    surviving = {m["id"] for c in bob_after["conversations"] for m in c["messages"]}
    # Bob's ratings of Ann's messages went with those messages; the rest stay.
    assert bob_after["feedback_given"] == [
        f for f in bob_before["feedback_given"] if f["message_id"] in surviving
    ]
    assert len(bob_after["feedback_given"]) == 1

    assert await store.find_user("telegram", "ann") is None
    assert await store.forget_user("telegram", "ann") == {
        "feedback": 0,
        "messages": 0,
        "conversations": 0,
        "users": 0,
    }


async def test_long_message_and_unicode_round_trip(store: ConversationStore) -> None:
    conversation = await store.current_conversation("web", "u", persona="pine", user_id=None)
    long_text = ("0123456789" * 10_000)[:100_000]
    unicode_text = (
        "emoji 😀👍🏽 · CJK 你好世界 こんにちは · RTL שלום · lone surrogate \ufffd · nul-free"
    )
    user = await store.upsert_user("web", "名前-😀", "Zoë 🌸")

    for body in (long_text, unicode_text):
        await store.add_message(
            conversation.id, role="user", text=body, platform_message_id=body[:20]
        )

    stored = [m.text for m in await store.messages(conversation.id)]
    assert stored == [long_text, unicode_text]
    assert len(stored[0]) == 100_000
    assert (await store.find_user("web", "名前-😀")).display_name == "Zoë 🌸"
    assert user.display_name == "Zoë 🌸"


async def test_bad_references_become_memory_store_errors(store: ConversationStore) -> None:
    with pytest.raises(MemoryStoreError, match="no conversation"):
        await store.add_message(12345, role="user", text="to nowhere")
    with pytest.raises(MemoryStoreError, match="no message"):
        await store.add_feedback(12345, user_id=None, score=1)
    conversation = await store.current_conversation("web", "x", persona="pine", user_id=None)
    with pytest.raises(MemoryStoreError) as caught:
        await store.add_message(conversation.id, role="user", text="hi", user_id=424242)
    assert caught.value.__cause__ is not None
    with pytest.raises(ValueError, match="role"):
        await store.add_message(conversation.id, role="robot", text="hi")
    with pytest.raises(ValueError, match="score"):
        await store.add_feedback(1, user_id=None, score=5)


@pytest.mark.parametrize(("synchronous", "expected"), [("FULL", 2), ("NORMAL", 1), ("off", 0)])
async def test_sqlite_pragmas_are_in_effect(tmp_path, synchronous: str, expected: int) -> None:
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    store = await ConversationStore.open(url, sqlite_synchronous=synchronous, busy_timeout_ms=1234)
    try:
        async with store.engine.connect() as connection:

            async def pragma(name: str) -> object:
                return (await connection.execute(text(f"PRAGMA {name}"))).scalar_one()

            assert await pragma("journal_mode") == "wal"
            assert await pragma("foreign_keys") == 1
            assert await pragma("synchronous") == expected
            assert await pragma("busy_timeout") == 1234
    finally:
        await store.close()


async def test_two_processes_racing_on_one_chat_keep_one_open_conversation(db_url: str) -> None:
    first = await ConversationStore.open(db_url)
    second = await ConversationStore.open(db_url)
    stores = [first, second]
    try:
        opened = await asyncio.gather(
            *(
                stores[i % 2].current_conversation("web", "busy", persona="pine", user_id=None)
                for i in range(10)
            )
        )
        assert len({c.id for c in opened}) == 1

        stored = await asyncio.gather(
            *(
                stores[i % 2].add_message(
                    opened[0].id, role="user", text="retry", platform_message_id="m-1"
                )
                for i in range(6)
            )
        )
        assert sum(m is not None for m in stored) == 1

        await asyncio.gather(
            *(
                stores[i % 2].start_conversation("web", "busy", persona="pine", user_id=None)
                for i in range(6)
            )
        )
        open_rows = await count_rows(
            db_url, "conversations", "chat_key = 'busy' AND state != 'closed'"
        )
        assert open_rows == 1
        assert await count_rows(db_url, "conversations", "chat_key = 'busy'") == 7
    finally:
        await first.close()
        await second.close()


async def test_set_state_moves_a_conversation_between_owners(store: ConversationStore) -> None:
    conversation = await store.current_conversation("web", "help", persona="pine", user_id=None)
    waiting = await store.set_state(conversation.id, "waiting_for_agent")
    assert waiting.state == "waiting_for_agent"
    assert (await store.latest_conversation("web", "help")).state == "waiting_for_agent"
    closed = await store.set_state(conversation.id, "closed")
    assert closed.closed_at is not None
    assert await store.latest_conversation("web", "help") is None
    with pytest.raises(ValueError, match="state"):
        await store.set_state(conversation.id, "lost")
    with pytest.raises(MemoryStoreError, match="no conversation"):
        await store.set_state(999_999, "bot")


async def test_a_users_second_vote_replaces_the_first_and_chat_message_checks_the_chat(
    store: ConversationStore,
) -> None:
    ann = await store.upsert_user("web", "ann")
    chat = await store.current_conversation("web", "chat-a", persona="pine", user_id=ann.id)
    other = await store.current_conversation("web", "chat-b", persona="pine", user_id=ann.id)
    reply = await store.add_message(chat.id, role="assistant", text="hello")
    elsewhere = await store.add_message(other.id, role="assistant", text="hi")
    assert reply is not None
    assert elsewhere is not None

    await store.set_feedback(reply.id, user_id=ann.id, score=1)
    await store.set_feedback(reply.id, user_id=ann.id, score=-1)

    assert await store.feedback_scores([reply.id, elsewhere.id]) == {reply.id: -1}
    found = await store.chat_message(reply.id, "web", "chat-a")
    assert found is not None
    assert found.text == "hello"
    assert await store.chat_message(reply.id, "web", "chat-b") is None
    assert await store.chat_message(reply.id, "telegram", "chat-a") is None
    with pytest.raises(MemoryStoreError):
        await store.set_feedback(999_999, user_id=ann.id, score=1)
    with pytest.raises(ValueError, match="score"):
        await store.set_feedback(reply.id, user_id=ann.id, score=3)
