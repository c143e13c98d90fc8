"""Training-data export from the conversation memory, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from botkit.memory import ConversationStore
from botkit.memory.models import Conversation
from botkit.memory.store import TrainingDialogue
from botkit.training.export import ExportReport, export_dialogues
from tests.memory import conftest as memory

# The memory suite's fixtures: every test runs on a real SQLite file and on a fresh
# schema in a throwaway PostgreSQL database (the cases marked ``postgres``).
backend, db_url, pg_database, store = (
    memory.backend,
    memory.db_url,
    memory.pg_database,
    memory.store,
)

Turn = tuple[str, str] | tuple[str, str, int]


async def chat(
    store: ConversationStore,
    chat_key: str,
    turns: list[Turn],
    *,
    owner: str | None = "ann",
    persona: str = "pine",
) -> int:
    """Store a conversation: (role, text) or (role, text, score) turns; returns its id.

    User turns are written, and scores given, by ``owner``.
    """
    owner_id = None if owner is None else (await store.upsert_user("web", owner)).id
    conversation = await store.current_conversation(
        "web", chat_key, persona=persona, user_id=owner_id
    )
    for role, text, *score in turns:
        message = await store.add_message(
            conversation.id,
            role=role,
            text=text,
            user_id=owner_id if role == "user" else None,
        )
        assert message is not None
        for value in score:
            await store.add_feedback(message.id, user_id=owner_id, score=value)
    return conversation.id


def turns_of(dialogues: list[TrainingDialogue]) -> list[list[tuple[str, str]]]:
    return [list(dialogue.messages) for dialogue in dialogues]


async def test_upvoted_dialogue_runs_to_its_last_upvoted_reply(
    store: ConversationStore, tmp_path: Path
) -> None:
    conversation_id = await chat(
        store,
        "c1",
        [
            ("assistant", "Hi! I'm Pine."),  # the greeting: a dialogue opens with the user
            ("user", "Where is my order?"),
            ("user", "It's #123."),
            ("system", "order lookup: shipped"),
            ("assistant", "It shipped yesterday.", 1),
            ("user", "When will it arrive?"),
            ("assistant", "Tomorrow."),
            ("assistant", "Before noon — usually.", 1),
            ("user", "Can I change the address?"),
            ("assistant", "Not any more, sorry."),  # not rated: cut off
        ],
    )

    dialogues = await store.training_conversations()

    assert dialogues == [
        TrainingDialogue(
            conversation_id=conversation_id,
            channel="web",
            persona="pine",
            messages=(
                ("user", "Where is my order?\n\nIt's #123."),
                ("assistant", "It shipped yesterday."),
                ("user", "When will it arrive?"),
                ("assistant", "Tomorrow.\n\nBefore noon — usually."),
            ),
        )
    ]

    out = tmp_path / "exports" / "pine.jsonl"
    report = await export_dialogues(store, out)

    assert report == ExportReport(conversations=1, turns=4, skipped_opted_out=0, path=out)
    expected = {
        "messages": [
            {"role": "user", "content": "Where is my order?\n\nIt's #123."},
            {"role": "assistant", "content": "It shipped yesterday."},
            {"role": "user", "content": "When will it arrive?"},
            {"role": "assistant", "content": "Tomorrow.\n\nBefore noon — usually."},
        ],
        "persona": "pine",
    }
    raw = out.read_bytes()
    assert raw.decode("utf-8") == json.dumps(expected, ensure_ascii=False) + "\n"
    assert "—".encode() in raw  # written as UTF-8, not \u escapes
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == [expected]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pine.jsonl"]  # no temp file left


async def test_downvoted_reply_ends_the_dialogue_before_it(store: ConversationStore) -> None:
    cut = await chat(
        store,
        "cut",
        [
            ("user", "q1"),
            ("assistant", "good", 1),
            ("user", "q2"),
            ("assistant", "bad", 1),
            ("user", "q3"),
            ("assistant", "good again", 1),
        ],
    )
    # Someone else's -1 on "bad" outweighs the owner's +1.
    bob = await store.upsert_user("web", "bob")
    bad = [m for m in await store.messages(cut) if m.text == "bad"]
    await store.add_feedback(bad[0].id, user_id=bob.id, score=-1)
    await chat(
        store,
        "bad-first",
        [("user", "q"), ("assistant", "wrong", -1), ("user", "q again"), ("assistant", "ok", 1)],
    )

    assert turns_of(await store.training_conversations()) == [
        [("user", "q1"), ("assistant", "good")]
    ]
    # The -1 rules without feedback too: "bad-first" has no reply before its -1.
    assert turns_of(await store.training_conversations(feedback=False)) == [
        [("user", "q1"), ("assistant", "good")]
    ]


async def test_unrated_conversation_is_exported_only_without_the_feedback_filter(
    store: ConversationStore, tmp_path: Path
) -> None:
    await chat(store, "plain", [("user", "hello"), ("assistant", "hi"), ("user", "bye")])
    await chat(store, "no-reply", [("user", "anyone?")])

    out = tmp_path / "empty.jsonl"
    report = await export_dialogues(store, out)
    assert report == ExportReport(conversations=0, turns=0, skipped_opted_out=0, path=out)
    assert out.read_bytes() == b""

    assert turns_of(await store.training_conversations(feedback=False)) == [
        [("user", "hello"), ("assistant", "hi")]
    ]


async def test_opted_out_users_conversations_and_messages_are_left_out_and_counted(
    store: ConversationStore, tmp_path: Path
) -> None:
    await chat(store, "ann-dm", [("user", "ann asks"), ("assistant", "to ann", 1)], owner="ann")
    await chat(store, "ann-unrated", [("user", "ann again"), ("assistant", "hm")], owner="ann")
    await chat(
        store,
        "group",
        [("user", "bob asks"), ("assistant", "to bob", 1)],
        owner="bob",
    )
    # Ann speaks in Bob's group, and her +1 is the only one on the reply after it.
    group = await store.latest_conversation("web", "group")
    ann = await store.upsert_user("web", "ann")
    await store.add_message(group.id, role="user", text="ann in group", user_id=ann.id)
    ann_reply = await store.add_message(group.id, role="assistant", text="to ann in group")
    await store.add_feedback(ann_reply.id, user_id=ann.id, score=1)
    # Bob's chat that only Ann made worth exporting: her turn and her rating.
    bob_room = await chat(store, "bob-room", [], owner="bob")
    await store.add_message(bob_room, role="user", text="ann alone", user_id=ann.id)
    lonely = await store.add_message(bob_room, role="assistant", text="to ann alone")
    await store.add_feedback(lonely.id, user_id=ann.id, score=1)

    # Ann's own group, where only Bob speaks and rates: hers, so left out all the same.
    ann_group = await chat(store, "ann-group", [], owner="ann")
    bob = await store.upsert_user("web", "bob")
    await store.add_message(ann_group, role="user", text="bob in ann's group", user_id=bob.id)
    to_bob = await store.add_message(ann_group, role="assistant", text="to bob in ann's group")
    await store.add_feedback(to_bob.id, user_id=bob.id, score=1)

    everything = await export_dialogues(store, tmp_path / "before.jsonl")
    assert (everything.conversations, everything.skipped_opted_out) == (4, 0)

    assert await store.set_opted_out("web", "ann", True) is True
    assert (await store.find_user("web", "ann")).opted_out is True

    out = tmp_path / "after.jsonl"
    report = await export_dialogues(store, out)

    # ann-dm and ann-group (hers) and bob-room (only her words and rating) are held back;
    # the group loses her turn and her +1, so it ends at the reply to Bob.
    assert report == ExportReport(conversations=1, turns=2, skipped_opted_out=3, path=out)
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [
        {
            "messages": [
                {"role": "user", "content": "bob asks"},
                {"role": "assistant", "content": "to bob"},
            ],
            "persona": "pine",
        }
    ]
    assert "ann" not in out.read_text(encoding="utf-8")

    assert await store.set_opted_out("web", "ann", False) is True
    assert len(await store.training_conversations()) == 4


async def test_set_opted_out_on_an_unknown_user_returns_false(store: ConversationStore) -> None:
    assert await store.set_opted_out("web", "nobody", True) is False
    assert await store.find_user("web", "nobody") is None


async def test_agent_replies_are_exported_as_assistant_turns_only_when_asked(
    store: ConversationStore,
) -> None:
    await chat(
        store,
        "handoff",
        [
            ("user", "I want a human"),
            ("assistant", "Connecting you."),
            ("system", "handed off to agent Sam"),
            ("agent", "Hi, Sam here."),
            ("agent", "What happened?"),
            ("user", "Parcel lost."),
            ("agent", "Refund issued."),
            ("user", "thanks!"),
        ],
    )
    await chat(
        store,
        "bot-then-agent",
        [
            ("user", "q"),
            ("assistant", "a", 1),
            ("user", "human please"),
            ("agent", "Sam here."),
        ],
    )

    # Without agent replies the agent's words never appear: the bot's +1 ends it.
    assert turns_of(await store.training_conversations()) == [[("user", "q"), ("assistant", "a")]]

    assert turns_of(await store.training_conversations(agent_replies=True)) == [
        [
            ("user", "I want a human"),
            ("assistant", "Connecting you.\n\nHi, Sam here.\n\nWhat happened?"),
            ("user", "Parcel lost."),
            ("assistant", "Refund issued."),
        ],
        [("user", "q"), ("assistant", "a"), ("user", "human please"), ("assistant", "Sam here.")],
    ]


async def test_persona_and_since_filters(store: ConversationStore) -> None:
    pine_old = await chat(store, "old", [("user", "old q"), ("assistant", "old a", 1)])
    await chat(store, "new", [("user", "pine q"), ("assistant", "pine a", 1)])
    await chat(store, "sage", [("user", "sage q"), ("assistant", "sage a", 1)], persona="sage")
    async with store.engine.begin() as connection:
        await connection.execute(
            update(Conversation)
            .where(Conversation.id == pine_old)
            .values(updated_at=datetime(2020, 1, 1, tzinfo=UTC))
        )

    pine = await store.training_conversations(persona="pine")
    assert [d.persona for d in pine] == ["pine", "pine"]
    assert [d.messages[0][1] for d in pine] == ["old q", "pine q"]

    recent = await store.training_conversations(since=datetime.now(UTC) - timedelta(days=1))
    assert [d.messages[0][1] for d in recent] == ["pine q", "sage q"]
    both = await store.training_conversations(
        persona="sage", since=datetime(2021, 1, 1, tzinfo=UTC)
    )
    assert [(d.persona, d.messages[0][1]) for d in both] == [("sage", "sage q")]
    assert await store.training_conversations(persona="nobody") == []

    with pytest.raises(ValueError, match="timezone"):
        await store.training_conversations(since=datetime(2021, 1, 1))
