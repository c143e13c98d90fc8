"""The terminal adapter driven through real text streams."""

from __future__ import annotations

import io

from botkit.engine import DialogueEngine
from botkit.terminal import TerminalAdapter
from botkit.testing import ScriptedGenerator


def terminal(engine: DialogueEngine, lines: str) -> tuple[TerminalAdapter, io.StringIO]:
    out = io.StringIO()
    adapter = TerminalAdapter(engine, stdin=io.StringIO(lines), stdout=out, user="alice")
    return adapter, out


async def test_chat_greets_answers_resets_and_exits(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.extend(["Hello Alice.", "Fresh start."])
    adapter, out = terminal(botkit_engine, "hello\n/reset\nhi again\n/exit\nnever read\n")
    await adapter.run()

    screen = out.getvalue()
    assert "Pine> Hi! I'm Pine. How can I help?" in screen
    assert "Pine> Hello Alice.\n" in screen
    assert "(new conversation)" in screen
    assert "Pine> Fresh start.\n" in screen
    assert len(scripted_generator.requests) == 2
    # After /reset the model no longer sees the first exchange.
    assert [m.content for m in scripted_generator.requests[1].messages[1:]] == ["hi again"]


async def test_end_of_input_leaves_cleanly(botkit_engine: DialogueEngine):
    adapter, out = terminal(botkit_engine, "")
    await adapter.run()
    assert out.getvalue().endswith("you> \n")


async def test_resume_shows_the_earlier_conversation_and_continues_it(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.extend(["The window is 45 days.", "Yes, with tags."])
    first, _ = terminal(botkit_engine, "what is the return window?\n")
    await first.run()

    again, out = terminal(botkit_engine, "unworn only?\n/exit\n")
    await again.run(resume=True)

    screen = out.getvalue()
    assert "(resuming: 2 earlier messages)" in screen
    assert "you> what is the return window?" in screen
    assert "Pine> The window is 45 days." in screen
    prompt = scripted_generator.requests[1].messages
    assert [m.content for m in prompt[1:]] == [
        "what is the return window?", "The window is 45 days.", "unworn only?",
    ]


async def test_once_prints_only_the_reply(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    scripted_generator.replies.append("Use Forgot password? on the sign-in page.")
    adapter, out = terminal(botkit_engine, "")
    await adapter.once("How do I reset my password?")
    assert out.getvalue() == "Use Forgot password? on the sign-in page.\n"


async def test_too_long_message_is_refused_politely_and_chat_goes_on(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    adapter, out = terminal(botkit_engine, "y" * 5000 + "\nshort\n/exit\n")
    await adapter.run()
    screen = out.getvalue()
    assert "too long for me" in screen
    assert screen.count("I am a scripted reply.") == 1


async def test_handoff_in_the_terminal_the_bot_steps_aside_and_the_team_is_printed(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator
):
    adapter, out = terminal(botkit_engine, "I want a human\nhello?\n")
    await adapter.run()
    conversation = (await botkit_engine.store.handoff_queue())[0].conversation
    bea = await botkit_engine.store.add_console_user("bea", role="agent", password_hash="x")

    await botkit_engine.claim(conversation.id, bea)
    await botkit_engine.agent_reply(conversation.id, bea, "Hi, Bea here.")

    screen = out.getvalue()
    assert "Pine> Pine here: I'm passing you to a person from our team." in screen
    assert "you> (a person from the team has the chat; their replies appear here)" in screen
    assert "team> bea from our team has joined the chat." in screen.lower()
    assert "team> Hi, Bea here.\n" in screen
    assert scripted_generator.requests == []
