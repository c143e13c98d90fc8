"""Handoff in SQL: the state machine's compare-and-set, its audit trail, the queue and
console accounts, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from botkit.errors import MemoryStoreError
from botkit.memory import ConversationStore, StateConflict


async def _waiting(store: ConversationStore, chat: str = "chat-1", text: str = "I need help"):
    user = await store.upsert_user("web", f"user-{chat}", "Ann")
    conversation = await store.current_conversation("web", chat, persona="pine", user_id=user.id)
    await store.add_message(conversation.id, role="user", text=text, user_id=user.id)
    return await store.change_state(
        conversation.id, "waiting_for_agent", actor=f"user:{user.external_id}",
        expect=("bot",), reason="asked for a human",
    )


async def test_the_handoff_cycle_is_recorded_with_who_and_why(store: ConversationStore) -> None:
    agent = await store.add_console_user("bea", role="agent", password_hash="x",
                                         display_name="Bea")
    waiting = await _waiting(store)

    claimed = await store.change_state(waiting.id, "agent", actor="agent:bea",
                                       expect=("waiting_for_agent", "bot"), agent_id=agent.id)
    back = await store.change_state(waiting.id, "bot", actor="agent:bea", expect=("agent",),
                                    reason="handed back")
    closed = await store.change_state(waiting.id, "closed", actor="agent:bea")

    assert waiting.state == "waiting_for_agent"
    assert (claimed.state, claimed.agent_id) == ("agent", agent.id)
    assert (back.state, back.agent_id) == ("bot", None)
    assert closed.state == "closed"
    assert closed.closed_at is not None
    events = await store.state_events(waiting.id)
    assert [(e.from_state, e.to_state, e.actor) for e in events] == [
        ("bot", "waiting_for_agent", "user:user-chat-1"),
        ("waiting_for_agent", "agent", "agent:bea"),
        ("agent", "bot", "agent:bea"),
        ("bot", "closed", "agent:bea"),
    ]
    assert events[0].reason == "asked for a human"
    with pytest.raises(StateConflict, match="closed"):
        await store.change_state(waiting.id, "bot", actor="agent:bea")


async def test_a_change_from_an_unexpected_state_is_refused(store: ConversationStore) -> None:
    waiting = await _waiting(store)

    with pytest.raises(StateConflict) as refused:
        await store.change_state(waiting.id, "bot", actor="agent:bea", expect=("agent",))

    assert refused.value.current == "waiting_for_agent"
    assert "waiting for agent" in str(refused.value)
    assert (await store.get_conversation(waiting.id)).state == "waiting_for_agent"
    with pytest.raises(ValueError, match="state must be"):
        await store.change_state(waiting.id, "lunch", actor="agent:bea")


async def test_two_agents_claiming_at_once_from_two_processes_cannot_both_win(
    db_url: str,
) -> None:
    # Two stores are two connection pools, as two botkit processes on one database.
    first, second = await ConversationStore.open(db_url), await ConversationStore.open(db_url)
    try:
        ann = await first.add_console_user("ann", role="agent", password_hash="x")
        bob = await first.add_console_user("bob", role="agent", password_hash="x")
        for round_ in range(5):
            waiting = await _waiting(first, chat=f"race-{round_}")
            results = await asyncio.gather(
                first.change_state(waiting.id, "agent", actor="agent:ann", agent_id=ann.id,
                                   expect=("waiting_for_agent",)),
                second.change_state(waiting.id, "agent", actor="agent:bob", agent_id=bob.id,
                                    expect=("waiting_for_agent",)),
                return_exceptions=True,
            )
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1, results
            assert len(lost) == 1
            assert isinstance(lost[0], StateConflict)
            final = await first.get_conversation(waiting.id)
            assert final is not None
            assert final.agent_id == won[0].agent_id
            claims = [e for e in await first.state_events(waiting.id) if e.to_state == "agent"]
            assert len(claims) == 1
    finally:
        await first.close()
        await second.close()


async def test_the_queue_lists_waiting_conversations_oldest_first_with_what_was_asked(
    store: ConversationStore,
) -> None:
    older = await _waiting(store, chat="a", text="my parcel is lost")
    newer = await _waiting(store, chat="b", text="refund please")
    agent = await store.add_console_user("bea", role="agent", password_hash="x")
    await store.change_state(newer.id, "agent", actor="agent:bea", agent_id=agent.id)

    waiting = await store.handoff_queue()
    mine = await store.handoff_queue(("agent",), agent_id=agent.id)

    assert [(q.conversation.id, q.last_user_text, q.user_name) for q in waiting] == [
        (older.id, "my parcel is lost", "Ann"),
    ]
    assert [q.conversation.id for q in mine] == [newer.id]
    assert waiting[0].since.tzinfo is not None


async def test_agent_messages_keep_the_agents_identity_and_live_views_read_new_ones(
    store: ConversationStore,
) -> None:
    agent = await store.add_console_user("bea", role="agent", password_hash="x")
    waiting = await _waiting(store)
    seen = (await store.messages(waiting.id))[-1].id

    reply = await store.add_message(waiting.id, role="agent", text="Hi, Bea here.",
                                    agent_id=agent.id)

    newer = await store.messages_after(waiting.id, seen)
    assert reply is not None
    assert [(m.role, m.text, m.agent_id) for m in newer] == [("agent", "Hi, Bea here.", agent.id)]


async def test_console_accounts_have_unique_names_and_known_roles(
    store: ConversationStore,
) -> None:
    made = await store.add_console_user("olga", role="operator", password_hash="h1")

    with pytest.raises(MemoryStoreError, match="exists already"):
        await store.add_console_user("olga", role="agent", password_hash="h2")
    with pytest.raises(ValueError, match="role"):
        await store.add_console_user("x", role="admin", password_hash="h")
    assert await store.set_console_password("olga", "h3")
    found = await store.console_user(username="olga")
    assert found is not None
    assert (found.id, found.role, found.password_hash) == (made.id, "operator", "h3")
    assert await store.console_user(username="nobody") is None
