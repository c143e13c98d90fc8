"""The dialogue engine on a real SQLite file, with the scripted generator as its model."""

from __future__ import annotations

import asyncio

import pytest

from botkit.engine import DialogueEngine, IncomingMessage, clean_text
from botkit.errors import EmptyMessageError, GenerationTimeout, UnknownPersonaError
from botkit.testing import ScriptedGenerator


def msg(text: str, *, pid: str | None = None, chat: str = "chat-1", user: str = "u1"):
    return IncomingMessage(
        channel="test", chat_key=chat, user_key=user, text=text, platform_message_id=pid
    )


async def roles_and_texts(engine: DialogueEngine, chat: str = "chat-1") -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in await engine.transcript("test", chat)]


async def test_reply_streams_in_pieces_and_both_turns_are_stored(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.append("Use Forgot password? on the sign-in page.")
    reply = botkit_engine.respond(msg("How do I reset my password?"))
    pieces = [piece async for piece in reply]

    assert len(pieces) > 3
    assert "".join(pieces) == "Use Forgot password? on the sign-in page."
    assert reply.message_id is not None
    assert await roles_and_texts(botkit_engine) == [
        ("user", "How do I reset my password?"),
        ("assistant", "Use Forgot password? on the sign-in page."),
    ]


async def test_prompt_is_system_prompt_then_history(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.extend(["First answer.", "Second answer."])
    await botkit_engine.respond(msg("first question")).collect()
    await botkit_engine.respond(msg("second question")).collect()

    prompt = scripted_generator.requests[-1].messages
    assert prompt[0].role == "system"
    assert prompt[0].content.startswith("You are Pine")
    assert [(m.role, m.content) for m in prompt[1:]] == [
        ("user", "first question"),
        ("assistant", "First answer."),
        ("user", "second question"),
    ]
    # The injected system prompt is never written back into history.
    assert all(role != "system" for role, _ in await roles_and_texts(botkit_engine))


async def test_persona_sampling_parameters_reach_the_generator(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    await botkit_engine.respond(msg("hi")).collect()
    sampling = scripted_generator.requests[0].sampling
    assert sampling.temperature == 0.0
    assert sampling.max_new_tokens == 64


async def test_repeated_platform_message_id_is_answered_once(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    first = botkit_engine.respond(msg("hello", pid="m-42"))
    assert await first.collect() == "I am a scripted reply."
    retry = botkit_engine.respond(msg("hello", pid="m-42"))

    assert await retry.collect() == ""
    assert retry.duplicate
    assert len(scripted_generator.requests) == 1
    assert len(await roles_and_texts(botkit_engine)) == 2


async def test_a_cancelled_reply_is_stored_as_far_as_it_was_sent_and_flagged_interrupted(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.append("one two three four five six seven eight")
    async with botkit_engine.respond(msg("tell me a story")) as reply:
        async for _piece in reply:
            break  # the user left after the first piece

    stored = await botkit_engine.transcript("test", "chat-1")
    assert scripted_generator.cancelled == 1
    assert [(m.role, m.text, m.interrupted) for m in stored] == [
        ("user", "tell me a story", False), ("assistant", "one ", True),
    ]
    assert reply.message_id == stored[1].id
    dialogues = await botkit_engine.store.training_conversations(feedback=False)
    assert dialogues == []  # an interrupted reply is never training data


async def test_a_task_cancelled_mid_reply_stores_the_partial_reply_interrupted(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.append("one two three four five six seven eight")
    scripted_generator.delay_s = 0.05
    seen: list[str] = []

    async def consume() -> None:
        async with botkit_engine.respond(msg("tell me a story")) as reply:
            async for piece in reply:
                seen.append(piece)

    task = asyncio.create_task(consume())
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stored = await botkit_engine.transcript("test", "chat-1")
    assert stored[-1].interrupted
    assert stored[-1].text == "".join(seen)


async def test_a_reply_cancelled_before_its_first_piece_stores_no_bot_turn(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.stall_after = 0  # the model never produces anything

    async def consume() -> None:
        await botkit_engine.respond(msg("tell me a story")).collect()

    task = asyncio.create_task(consume())
    for _ in range(100):
        if scripted_generator.requests:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await roles_and_texts(botkit_engine) == [("user", "tell me a story")]


async def test_stalled_generator_times_out_with_a_clear_error(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.stall_after = 2
    botkit_engine.generation_timeout_s = 0.2
    reply = botkit_engine.respond(msg("hello?"))
    with pytest.raises(GenerationTimeout, match="produced nothing for 0.2 s"):
        await reply.collect()
    assert await roles_and_texts(botkit_engine) == [("user", "hello?")]
    # The engine is still usable afterwards.
    scripted_generator.stall_after = None
    assert await botkit_engine.respond(msg("still there?")).collect() == "I am a scripted reply."


async def test_empty_message_is_an_error_and_stores_nothing(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    for text in ["", "   \n\t ", "\x00\x07\x1b"]:
        with pytest.raises(EmptyMessageError):
            await botkit_engine.respond(msg(text)).collect()
    assert scripted_generator.requests == []
    assert await roles_and_texts(botkit_engine) == []


async def test_100k_character_message_gets_a_polite_reply_and_skips_the_model(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    reply = botkit_engine.respond(msg("x" * 100_000))
    text = await reply.collect()

    assert "too long" in text
    assert "100,000" in text
    assert "4,000" in text
    assert reply.notice
    assert scripted_generator.requests == []
    # The conversation is intact: the next normal message is answered.
    assert await botkit_engine.respond(msg("short one")).collect() == "I am a scripted reply."


async def test_control_characters_and_lone_surrogates_are_cleaned_before_storage(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    await botkit_engine.respond(msg("bad\x00 \ud800text\x1b[31m ok\r\nline2 😀")).collect()
    stored = (await roles_and_texts(botkit_engine))[0][1]
    assert stored == "bad \ufffdtext[31m ok\nline2 😀"
    assert scripted_generator.requests[0].messages[-1].content == stored


def test_clean_text_keeps_valid_surrogate_pairs_and_tabs():
    assert clean_text("a\tb\U0001F600c") == "a\tb\U0001F600c"
    assert clean_text("\udc00") == "\ufffd"


async def test_long_conversation_drops_oldest_turns_instead_of_failing(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator._context_window = 300  # 64 of it reserved for the reply
    scripted_generator.default = "word " * 20
    for turn in range(30):
        await botkit_engine.respond(msg(f"question number {turn} " + "filler " * 20)).collect()

    prompt = scripted_generator.requests[-1].messages
    assert prompt[-1].content.startswith("question number 29")
    assert scripted_generator.count_tokens(prompt) <= 300 - 64
    assert len(prompt) < 60
    assert prompt[1].role == "user"  # never starts with an orphaned reply


async def test_new_conversation_starts_fresh_history(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    await botkit_engine.respond(msg("remember me")).collect()
    await botkit_engine.new_conversation("test", "chat-1", "u1")
    await botkit_engine.respond(msg("new start")).collect()

    assert [m.content for m in scripted_generator.requests[-1].messages[1:]] == ["new start"]


async def test_conversations_of_different_chats_are_separate(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    await botkit_engine.respond(msg("in chat A", chat="A")).collect()
    await botkit_engine.respond(msg("in chat B", chat="B", user="u2")).collect()
    assert [t for _, t in await roles_and_texts(botkit_engine, "A")][0] == "in chat A"
    assert [t for _, t in await roles_and_texts(botkit_engine, "B")][0] == "in chat B"


async def test_unknown_persona_is_a_clear_error(botkit_engine: DialogueEngine):
    with pytest.raises(UnknownPersonaError, match="unknown persona 'nobody'.*pine"):
        await botkit_engine.respond(msg("hi"), persona="nobody").collect()


async def test_concurrent_conversations_are_each_answered(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.delay_s = 0.01
    scripted_generator.default = lambda request: f"echo: {request.messages[-1].content}"
    replies = await asyncio.gather(
        *(botkit_engine.respond(msg(f"q{i}", chat=f"c{i}")).collect() for i in range(5))
    )
    assert replies == [f"echo: q{i}" for i in range(5)]


async def test_persona_adapters_are_loaded_and_requested(
    tmp_path, botkit_db_url: str, scripted_generator: ScriptedGenerator
):
    from botkit.memory import ConversationStore
    from botkit.personas import PersonaRegistry
    from botkit.testing import PINE_TEST_PERSONA, write_test_personas

    folder = write_test_personas(tmp_path / "personas")
    (folder / "pine.toml").write_text(
        PINE_TEST_PERSONA.replace('greeting', 'adapter = "adapters/pine"\ngreeting', 1)
    )
    store = await ConversationStore.open(botkit_db_url)
    try:
        engine = DialogueEngine(
            store=store, generator=scripted_generator,
            personas=PersonaRegistry.from_dir(folder),
        )
        await engine.load_adapters()
        reply = engine.respond(msg("hi"))
        await reply.collect()
        assert scripted_generator.adapters == {"pine": str(folder / "adapters" / "pine")}
        assert scripted_generator.requests[0].adapter == "pine"
        stored = (await engine.transcript("test", "chat-1"))[-1]
        assert stored.adapter_version == "scripted-pine"
        assert stored.persona == "pine"
    finally:
        await store.close()
