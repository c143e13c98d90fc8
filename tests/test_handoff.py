"""Human handoff in the engine: a user asks for a person, the bot goes quiet, an agent
takes over and replies through the chat's channel, then hands back or closes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from botkit.engine import DialogueEngine, IncomingMessage
from botkit.errors import PersonaError
from botkit.memory import ConsoleUserRecord, ConversationRecord, StateConflict
from botkit.personas import PersonaRegistry, load_persona
from botkit.testing import ScriptedGenerator


def msg(text: str, *, chat: str = "chat-1", user: str = "u1") -> IncomingMessage:
    return IncomingMessage(channel="test", chat_key=chat, user_key=user, text=text)


class Outbox:
    """The channel's delivery seam: what the team's messages would send to the chat."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def __call__(self, conversation: ConversationRecord, text: str) -> None:
        self.sent.append((conversation.chat_key, text))


@pytest.fixture
def outbox(botkit_engine: DialogueEngine) -> Outbox:
    box = Outbox()
    botkit_engine.register_delivery("test", box)
    return box


async def agent(engine: DialogueEngine, name: str = "bea") -> ConsoleUserRecord:
    return await engine.store.add_console_user(name, role="agent", password_hash="x",
                                               display_name=name.title())


async def state(engine: DialogueEngine, chat: str = "chat-1") -> str:
    conversation = await engine.store.latest_conversation("test", chat)
    assert conversation is not None
    return conversation.state


async def test_asking_for_a_human_queues_the_chat_and_the_bot_goes_quiet(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    reply = botkit_engine.respond(msg("can I talk to a HUMNA please?"))
    notice = await reply.collect()
    silent = botkit_engine.respond(msg("hello? is anyone there"))
    nothing = await silent.collect()

    assert "person from our team" in notice
    assert reply.handoff == "waiting_for_agent"
    assert nothing == ""
    assert silent.handoff == "waiting_for_agent"
    assert scripted_generator.requests == []  # the model was never asked
    assert await state(botkit_engine) == "waiting_for_agent"
    stored = await botkit_engine.transcript("test", "chat-1")
    assert [(m.role, m.text) for m in stored] == [
        ("user", "can I talk to a HUMNA please?"), ("assistant", notice),
        ("user", "hello? is anyone there"),
    ]
    events = await botkit_engine.store.state_events(stored[0].conversation_id)
    assert [(e.to_state, e.actor, e.reason) for e in events] == [
        ("waiting_for_agent", "user:u1", "asked for a human"),
    ]


async def test_an_agent_claims_replies_through_the_channel_and_hands_back(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator, outbox: Outbox,
) -> None:
    await botkit_engine.respond(msg("agent")).collect()
    conversation = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert conversation is not None
    bea = await agent(botkit_engine)

    await botkit_engine.claim(conversation.id, bea)
    answer = await botkit_engine.agent_reply(conversation.id, bea, "Hi, Bea here. Order #?")
    await botkit_engine.respond(msg("it is 1234")).collect()
    await botkit_engine.hand_back(conversation.id, bea)
    scripted_generator.replies.append("Glad Bea could help. Anything else?")
    after = await botkit_engine.respond(msg("thanks!")).collect()

    assert outbox.sent[:2] == [("chat-1", "Bea from our team has joined the chat."),
                               ("chat-1", "Hi, Bea here. Order #?")]
    assert "Pine is back" in outbox.sent[2][1]
    assert (answer.role, answer.agent_id) == ("agent", bea.id)
    assert after == "Glad Bea could help. Anything else?"
    assert len(scripted_generator.requests) == 1  # silent while Bea had the chat
    prompt = scripted_generator.requests[0].messages
    assert any(m.role == "system" and "handed the conversation back" in m.content
               for m in prompt[1:])
    assert ("assistant", "Hi, Bea here. Order #?") in [(m.role, m.content) for m in prompt]
    assert await state(botkit_engine) == "bot"


async def test_another_agent_cannot_reply_in_a_claimed_chat_or_claim_it_again(
    botkit_engine: DialogueEngine, outbox: Outbox,
) -> None:
    await botkit_engine.respond(msg("human")).collect()
    conversation = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert conversation is not None
    bea, cal = await agent(botkit_engine, "bea"), await agent(botkit_engine, "cal")
    await botkit_engine.claim(conversation.id, bea)

    with pytest.raises(StateConflict):
        await botkit_engine.claim(conversation.id, cal)
    with pytest.raises(StateConflict):
        await botkit_engine.agent_reply(conversation.id, cal, "let me butt in")
    assert [t for _, t in outbox.sent] == ["Bea from our team has joined the chat."]


async def test_closing_ends_the_conversation_and_the_next_message_starts_a_new_one(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator, outbox: Outbox,
) -> None:
    await botkit_engine.respond(msg("agent")).collect()
    first = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert first is not None
    bea = await agent(botkit_engine)
    await botkit_engine.claim(first.id, bea)

    await botkit_engine.close(first.id, bea)
    reply = await botkit_engine.respond(msg("new question")).collect()

    second = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert second is not None
    assert second.id != first.id
    assert reply == "I am a scripted reply."
    assert "closed" in outbox.sent[-1][1]


async def test_a_team_message_for_a_channel_without_its_adapter_is_stored_and_logged(
    botkit_engine: DialogueEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    await botkit_engine.respond(msg("agent")).collect()
    conversation = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert conversation is not None
    bea = await agent(botkit_engine)

    await botkit_engine.claim(conversation.id, bea)

    stored = await botkit_engine.transcript("test", "chat-1")
    assert stored[-1].role == "agent"
    assert "no test adapter in this process" in caplog.text


def _persona_with_hours(folder: Path, hours: str) -> PersonaRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pine.toml").write_text(
        'name = "pine"\ndisplay_name = "Pine"\nsystem_prompt = "You are Pine."\n'
        f'escalation_keywords = ["agent"]\nsupport_hours = "{hours}"\n', encoding="utf-8",
    )
    return PersonaRegistry.from_dir(folder)


async def test_outside_support_hours_the_user_is_told_when_and_the_bot_carries_on(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator, tmp_path: Path,
) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%a")
    botkit_engine.personas = _persona_with_hours(tmp_path / "p", f"{tomorrow} 10:00-11:00 UTC")

    notice = await botkit_engine.respond(msg("agent please")).collect()
    reply = await botkit_engine.respond(msg("ok, then: where is my parcel?")).collect()

    assert "tomorrow at 10:00" in notice
    assert await state(botkit_engine) == "bot"
    assert reply == "I am a scripted reply."


def test_a_persona_with_unreadable_support_hours_is_refused_by_field(tmp_path: Path) -> None:
    file = tmp_path / "pine.toml"
    file.write_text('name = "pine"\nsystem_prompt = "x"\nsupport_hours = "Mon 9-5"\n',
                    encoding="utf-8")

    with pytest.raises(PersonaError, match="support_hours"):
        load_persona(file)


def test_the_shipped_pine_knows_the_teams_hours() -> None:
    pine = load_persona(Path(__file__).resolve().parent.parent / "personas" / "pine.toml")

    assert pine.support_hours is not None
    assert "America/New_York" in pine.support_hours.describe()


async def test_a_topic_the_persona_hands_to_people_is_queued_without_asking(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator, tmp_path: Path,
) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "pine.toml").write_text(
        'name = "pine"\ndisplay_name = "Pine"\nsystem_prompt = "You are Pine."\n'
        'handoff_topics = ["lawyer", "chargeback"]\n', encoding="utf-8",
    )
    botkit_engine.personas = PersonaRegistry.from_dir(folder)

    notice = await botkit_engine.respond(msg("My LAWYER will hear about this")).collect()
    normal = await botkit_engine.respond(msg("fine", chat="chat-2")).collect()

    assert "person from our team" in notice
    assert await state(botkit_engine) == "waiting_for_agent"
    conversation = await botkit_engine.store.latest_conversation("test", "chat-1")
    assert conversation is not None
    events = await botkit_engine.store.state_events(conversation.id)
    assert events[0].reason == "a topic the persona hands to people"
    assert normal == "I am a scripted reply."  # other chats are untouched
    assert len(scripted_generator.requests) == 1
