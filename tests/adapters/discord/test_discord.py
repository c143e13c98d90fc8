"""The Discord adapter on a real discord.py ``Client``, with real gateway payloads fed
through its connection state and real ``Interaction`` objects; only Discord's network
edge (REST and interaction webhooks) is replaced (fakes.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from discord.webhook.async_ import async_context

from botkit.engine import DialogueEngine
from botkit.errors import AdapterError, ConfigError
from botkit.testing import ScriptedGenerator
from botkit_discord import DiscordAdapter
from botkit_discord.render import split_message
from tests.adapters.discord.fakes import (
    ANN,
    ANN_ID,
    BEN,
    BEN_ID,
    BOT,
    DM_CHANNEL_ID,
    GENERAL_ID,
    GUILD_ID,
    HELP_ID,
    OTHER_BOT,
    THREAD_ID,
    TOKEN,
    Call,
    FakeClock,
    FakeDiscordHTTP,
    FakeWebhookAdapter,
    Inbox,
    bot_reply_payload,
    dm_message,
    guild_message,
    interaction,
    interaction_payload,
    mention,
)

STAFF_ROLE_ID = GUILD_ID + 100
NO_PINGS = {"parse": []}
MESSAGES = "/channels/{channel_id}/messages"


@dataclass
class Harness:
    adapter: DiscordAdapter
    http: FakeDiscordHTTP
    hooks: FakeWebhookAdapter
    clock: FakeClock
    generator: ScriptedGenerator
    engine: DialogueEngine
    inbox: Inbox

    def deliver(self, payload: dict[str, Any]) -> None:
        """A MESSAGE_CREATE from the gateway; ``on_message`` runs as in production."""
        self.inbox.message(payload)

    async def until(self, condition: Callable[[], bool], limit_s: float = 5.0) -> None:
        await eventually(condition, limit_s)

    async def settle(self) -> None:
        """Let everything the adapter started finish."""
        await eventually(lambda: not self.adapter._tasks)
        await asyncio.sleep(0.05)

    async def command(self, payload: dict[str, Any], *,
                      fails: bool = False) -> discord.Interaction[Any]:
        """Run a slash command as discord.py does on INTERACTION_CREATE (responses go
        through the fake webhook adapter)."""
        token = async_context.set(self.hooks)
        try:
            received = interaction(self.adapter.client, payload)
            await self.adapter.tree._call(received)
        finally:
            async_context.reset(token)
        assert received.command_failed == fails
        return received

    def texts(self, channel_id: int | None = None) -> list[str]:
        return self.http.texts(channel_id)


async def eventually(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Let the adapter work until ``condition()`` holds; fail after ``limit_s``."""
    for _ in range(int(limit_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true after {limit_s} s")


def pings(call: Call) -> dict[str, Any]:
    """The request's ``allowed_mentions``, less a ``replied_user: false`` (a reply that does
    not ping its author says so explicitly; it pings nobody all the same)."""
    assert isinstance(call.json, dict)
    allowed = dict(call.json["allowed_mentions"])
    if allowed.get("replied_user") is False:
        del allowed["replied_user"]
    return allowed


def final_texts(http: FakeDiscordHTTP) -> list[str]:
    """What the bot's messages show in the end: the first one's last edit (if it was
    edited), then the others as sent."""
    sent = http.texts()
    edits = http.edits()
    if sent and edits:
        sent[0] = str(edits[-1].content)
    return sent


@pytest.fixture
def settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def dc(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
    settings: dict[str, Any],
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    http = FakeDiscordHTTP(clock=clock)
    hooks = FakeWebhookAdapter(clock=clock)
    adapter = DiscordAdapter(botkit_engine, settings, token=TOKEN, http=http, clock=clock)
    inbox = Inbox(adapter.client)
    try:
        await adapter.login()
        inbox.guild_create()
        await adapter.on_ready()
        yield Harness(adapter, http, hooks, clock, scripted_generator, botkit_engine, inbox)
    finally:
        await adapter.stop(grace_s=5)


# -- messages ---------------------------------------------------------------------------


async def test_a_dm_is_answered_with_typing_then_a_reply_in_the_dm(dc: Harness) -> None:
    dc.generator.replies.append("We ship to Canada in 5 days.")

    dc.deliver(dm_message("Do you ship to Canada?", message_id=501))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    paths = [c.path for c in dc.http.calls if c.path.startswith("/channels/")]
    assert paths[0] == "/channels/{channel_id}/typing"
    assert dc.http.calls[-1].path.startswith(MESSAGES)
    first = dc.http.sent()[0]
    assert first.channel_id == DM_CHANNEL_ID
    assert first.json is not None
    assert first.json["message_reference"]["message_id"] == 501
    assert pings(first) == NO_PINGS
    assert final_texts(dc.http) == ["We ship to Canada in 5 days."]
    stored = await dc.engine.transcript("discord", f"dm:{ANN_ID}")
    assert [m.text for m in stored] == ["Do you ship to Canada?", "We ship to Canada in 5 days."]
    assert dc.generator.requests[0].messages[-1].content == "Do you ship to Canada?"


async def test_the_slash_commands_are_synced_when_ready(dc: Harness) -> None:
    assert sorted(c["name"] for c in dc.http.synced) == ["ask", "persona", "reset"]
    sync = dc.http.called("PUT", "/applications/{application_id}/commands")
    assert len(sync) == 1


@pytest.mark.parametrize("settings", [{"command_guilds": [GUILD_ID]}])
async def test_command_guilds_get_the_commands_at_once(dc: Harness) -> None:
    sync = dc.http.called("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")

    assert len(sync) == 1
    assert str(GUILD_ID) in sync[0].url
    assert sorted(c["name"] for c in dc.http.synced) == ["ask", "persona", "reset"]


async def test_a_guild_message_without_mention_is_ignored_and_one_with_it_answered_once(
    dc: Harness,
) -> None:
    dc.generator.replies.append("From 9 to 6.")
    dc.deliver(guild_message("when do you open?", message_id=601))
    dc.deliver(guild_message(f"{mention()} when do you open?", message_id=602,
                             mentions=[BOT]))

    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    assert len(dc.generator.requests) == 1
    assert dc.generator.requests[0].messages[-1].content == "when do you open?"
    sent = dc.http.sent()
    assert len(sent) == 1
    assert sent[0].channel_id == GENERAL_ID
    assert sent[0].json is not None
    assert sent[0].json["message_reference"]["message_id"] == 602
    stored = await dc.engine.transcript("discord", str(GENERAL_ID))
    assert [m.text for m in stored] == ["when do you open?", "From 9 to 6."]


async def test_a_reply_to_the_bot_is_answered_without_a_mention(dc: Harness) -> None:
    earlier = bot_reply_payload("We open at 9.", message_id=700)

    dc.deliver(guild_message("and on Sundays?", message_id=701, reply_to=earlier))
    await dc.until(lambda: bool(dc.texts()))

    assert dc.generator.requests[0].messages[-1].content == "and on Sundays?"


async def test_a_reply_to_someone_else_is_not_for_the_bot(dc: Harness) -> None:
    earlier = guild_message("I love tents", message_id=710, author=BEN)

    dc.deliver(guild_message("me too", message_id=711, reply_to=earlier))
    await asyncio.sleep(0.2)

    assert dc.generator.requests == []
    assert dc.texts() == []


async def test_a_mention_in_a_thread_is_answered_in_the_thread_as_its_own_conversation(
    dc: Harness,
) -> None:
    dc.generator.replies.append("The 4-person tent.")

    dc.deliver(guild_message(f"{mention()} which tent for four?", message_id=801,
                             channel_id=THREAD_ID, mentions=[BOT]))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    typing = dc.http.called("POST", "/channels/{channel_id}/typing")
    assert [c.channel_id for c in typing] == [THREAD_ID]
    assert {c.channel_id for c in dc.http.sent()} == {THREAD_ID}
    assert [m.text for m in await dc.engine.transcript("discord", str(THREAD_ID))] == [
        "which tent for four?", "The 4-person tent."]
    assert await dc.engine.transcript("discord", str(GENERAL_ID)) == []


@pytest.mark.parametrize("settings", [{"answer_channels": [HELP_ID]}])
async def test_every_message_in_an_answer_channel_is_answered(dc: Harness) -> None:
    dc.deliver(guild_message("is the shop open?", message_id=851, channel_id=HELP_ID))
    dc.deliver(guild_message("is the shop open?", message_id=852, channel_id=GENERAL_ID))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    assert len(dc.generator.requests) == 1
    assert [c.channel_id for c in dc.http.sent()] == [HELP_ID]


async def test_another_bot_is_ignored_even_when_it_mentions_us(dc: Harness) -> None:
    dc.deliver(guild_message(f"{mention()} hello fellow bot", message_id=901,
                             author=OTHER_BOT, mentions=[BOT]))
    dc.deliver(dm_message("hello fellow bot", message_id=902, author=OTHER_BOT))
    await asyncio.sleep(0.2)

    assert dc.generator.requests == []
    assert dc.http.calls[-1].path.startswith("/applications/")  # nothing after the sync


async def test_only_the_bots_own_mention_is_stripped_and_others_become_names(
    dc: Harness,
) -> None:
    text = (f"{mention()} can you ask {mention(BEN_ID)} and <@&{STAFF_ROLE_ID}> "
            f"to look at <#{HELP_ID}>?")

    dc.deliver(guild_message(text, message_id=1001, mentions=[BOT, BEN],
                             mention_roles=[STAFF_ROLE_ID]))
    await dc.until(lambda: bool(dc.generator.requests))

    seen = dc.generator.requests[0].messages[-1].content
    assert seen == "can you ask @Ben and @Staff to look at #help?"


async def test_everyone_in_the_models_output_pings_nobody(dc: Harness) -> None:
    dc.generator.replies.append(f"@everyone and @here: the sale starts now, <@{ANN_ID}>!")
    dc.generator.delay_s = 0.005

    dc.deliver(dm_message("any news?", message_id=1101))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    written = dc.http.sent() + dc.http.edits()
    assert written
    assert all(pings(c) == NO_PINGS for c in written)
    assert final_texts(dc.http)[0].startswith("@everyone")


async def test_a_long_reply_with_code_is_split_with_balanced_fences(dc: Harness) -> None:
    code = "\n".join(f"    print('line {n:03} of the example')" for n in range(110))
    reply = ("Here is the script you asked for:\n\n```python\n" + code + "\n```\n\n"
             + "Run it with python3 and it prints every line. " * 20).strip()
    assert len(reply) > 4500
    dc.generator.replies.append(reply)

    dc.deliver(dm_message("write me a script", message_id=1201))
    await dc.until(lambda: len(dc.texts()) >= 3, limit_s=10)
    await dc.settle()

    sent = dc.http.sent()
    chunks = final_texts(dc.http)
    assert len(chunks) == 3
    assert all(len(c) <= 2000 for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    assert chunks[1].startswith("```python\n")
    assert all(f"line {n:03} of" in "".join(chunks) for n in range(110))
    assert all(len(str(c.content)) <= 2000 for c in dc.http.edits())
    assert ["message_reference" in (c.json or {}) for c in sent] == [True, False, False]
    assert all(pings(c) == NO_PINGS for c in sent + dc.http.edits())


async def test_edits_of_a_streamed_reply_are_paced_on_the_clock(dc: Harness) -> None:
    reply = " ".join(f"word{n}" for n in range(40))
    dc.generator.replies.append(reply)
    dc.generator.delay_s = 0.005

    dc.deliver(dm_message("talk to me", message_id=1301))
    await dc.until(lambda: dc.generator.completed == 1)
    await dc.settle()

    first = dc.http.sent()
    edits = dc.http.edits()
    assert len(first) == 1
    assert len(edits) >= 2
    times = [first[0].at] + [e.at for e in edits]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 1.5
    assert str(edits[-1].content) == reply


async def test_a_429_on_the_reply_is_waited_out_and_nothing_is_lost(
    dc: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    dc.generator.replies.append("Here is your answer.")
    dc.http.rate_limit("POST", MESSAGES, retry_after=75.0)
    start = dc.clock.now()

    with caplog.at_level(logging.WARNING, logger="botkit_discord"):
        dc.deliver(dm_message("question", message_id=1401))
        await dc.until(lambda: bool(dc.texts()))
        await dc.settle()

    limited = [c for c in dc.http.calls if c.rate_limited]
    assert limited
    assert dc.texts() == ["Here is your answer."]
    assert dc.http.sent()[0].at >= limited[0].at + 75.0
    assert dc.clock.now() - start >= 75.0
    assert any("rate limited" in r.getMessage() for r in caplog.records)


async def test_a_429_on_a_later_part_is_waited_out_and_the_part_sent(dc: Harness) -> None:
    reply = "\n\n".join(["A paragraph about tents and tarps. " * 20] * 6)
    parts = split_message(reply)
    assert len(parts) == 3
    dc.generator.replies.append(reply)
    dc.http.rate_limit("POST", MESSAGES, retry_after=40.0, after=1)  # the reply goes out

    dc.deliver(dm_message("tell me everything", message_id=1451))
    await dc.until(lambda: len(dc.texts()) == 3)
    await dc.settle()

    limited = [c for c in dc.http.calls if c.rate_limited]
    assert len(limited) == 1
    assert limited[0].content == parts[1]
    assert dc.http.sent()[1].at >= limited[0].at + 40.0
    assert final_texts(dc.http) == parts


async def test_a_redelivered_message_is_answered_once(dc: Harness) -> None:
    payload = dm_message("hello", message_id=1501)
    dc.deliver(payload)
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    dc.deliver(payload)
    await asyncio.sleep(0.2)
    await dc.settle()

    assert len(dc.texts()) == 1
    assert len(dc.generator.requests) == 1
    assert len(await dc.engine.transcript("discord", f"dm:{ANN_ID}")) == 2


async def test_a_message_delivered_twice_at_once_is_answered_once(dc: Harness) -> None:
    payload = dm_message("hello", message_id=1551)
    dc.deliver(payload)
    dc.deliver(payload)  # e.g. replayed by a gateway RESUME

    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    assert len(dc.texts()) == 1
    assert len(dc.generator.requests) == 1


async def test_a_failing_message_is_logged_and_the_next_one_still_answered(
    dc: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: Any) -> str:
        raise RuntimeError("the model fell over")

    dc.generator.replies.extend([broken, "I'm fine now."])
    with caplog.at_level(logging.ERROR, logger="botkit_discord"):
        dc.deliver(dm_message("first", message_id=1601))
        await dc.until(lambda: any("1601" in r.getMessage() for r in caplog.records))
        dc.deliver(dm_message("second", message_id=1602))
        await dc.until(lambda: "I'm fine now." in dc.texts())

    failed = [r for r in caplog.records if "1601" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert "the model fell over" in str(failed[0].exc_info[1])
    assert any("went wrong" in t for t in dc.texts())  # the user is told, not left waiting


async def test_forgetting_a_discord_user_removes_their_messages(dc: Harness) -> None:
    dc.deliver(dm_message("my address is 1 Pine Road", message_id=1701))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()

    removed = await dc.engine.store.forget_user("discord", str(ANN_ID))

    assert removed["messages"] == 2
    assert await dc.engine.transcript("discord", f"dm:{ANN_ID}") == []


# -- slash commands ---------------------------------------------------------------------


async def test_ask_is_deferred_then_answered_by_editing_the_original(dc: Harness) -> None:
    dc.generator.replies.append("We open at 9.")

    await dc.command(interaction_payload("ask", {"question": "when do you open?"},
                                         interaction_id=2001))

    assert [c["type"] for c in dc.hooks.callbacks()] == [5]  # deferred, "thinking..."
    edits = dc.hooks.edits()
    assert [e.content for e in edits] == ["We open at 9."]
    assert pings(edits[0]) == NO_PINGS
    assert dc.hooks.calls.index(edits[0]) > 0
    assert dc.generator.requests[0].messages[-1].content == "when do you open?"
    stored = await dc.engine.transcript("discord", str(GENERAL_ID))
    assert [m.text for m in stored] == ["when do you open?", "We open at 9."]
    assert dc.texts() == []  # nothing through the channel


async def test_a_long_ask_answer_continues_in_followups(dc: Harness) -> None:
    reply = "\n\n".join(["Tents, tarps and stoves are all on sale this week. " * 15] * 6)
    dc.generator.replies.append(reply)

    await dc.command(interaction_payload("ask", {"question": "what is on sale?"},
                                         interaction_id=2101))

    parts = [str(c.content) for c in dc.hooks.edits() + dc.hooks.followups()]
    assert len(parts) >= 3
    assert all(len(p) <= 2000 for p in parts)
    assert " ".join(parts).split() == reply.split()
    assert all(pings(c) == NO_PINGS for c in dc.hooks.edits() + dc.hooks.followups())


async def test_a_failing_ask_is_answered_with_an_apology_and_logged(
    dc: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: Any) -> str:
        raise RuntimeError("the model fell over")

    dc.generator.replies.append(broken)
    with caplog.at_level(logging.ERROR):
        await dc.command(interaction_payload("ask", {"question": "hi"}, interaction_id=2151),
                         fails=True)

    assert [c["type"] for c in dc.hooks.callbacks()] == [5]
    assert ["went wrong" in str(e.content) for e in dc.hooks.edits()] == [True]
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert any("the model fell over" in str(r.exc_info[1]) for r in logged if r.exc_info)


async def test_ask_in_a_dm_uses_the_dm_conversation(dc: Harness) -> None:
    await dc.command(interaction_payload("ask", {"question": "hi"}, interaction_id=2201,
                                         channel_id=DM_CHANNEL_ID, dm=True))

    assert [m.text for m in await dc.engine.transcript("discord", f"dm:{ANN_ID}")] == [
        "hi", "I am a scripted reply."]


async def test_reset_starts_a_new_conversation(dc: Harness) -> None:
    dc.deliver(dm_message("hello", message_id=2301))
    await dc.until(lambda: bool(dc.texts()))
    await dc.settle()
    before = await dc.engine.store.latest_conversation("discord", f"dm:{ANN_ID}")

    await dc.command(interaction_payload("reset", interaction_id=2302,
                                         channel_id=DM_CHANNEL_ID, dm=True))

    after = await dc.engine.store.latest_conversation("discord", f"dm:{ANN_ID}")
    assert before is not None
    assert after is not None
    assert after.id != before.id
    assert await dc.engine.transcript("discord", f"dm:{ANN_ID}") == []
    answer = dc.hooks.callbacks()[-1]
    assert answer["type"] == 4
    assert "new conversation" in answer["data"]["content"]
    assert answer["data"]["flags"] & 64  # ephemeral: only the user sees it


async def test_persona_says_who_is_answering(dc: Harness) -> None:
    await dc.command(interaction_payload("persona", interaction_id=2401))

    answer = dc.hooks.callbacks()[-1]
    assert answer["type"] == 4
    assert "**Pine**" in answer["data"]["content"]
    assert "`pine`" in answer["data"]["content"]
    assert answer["data"]["allowed_mentions"] == NO_PINGS


# -- start-up and diagnosis -------------------------------------------------------------


async def test_messages_without_text_report_the_missing_intent_once(
    dc: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="botkit_discord"):
        for n in range(3):  # what Discord sends without the Message Content Intent
            dc.deliver(guild_message("", message_id=2501 + n, author=BEN))
        await asyncio.sleep(0.1)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "Message Content Intent" in errors[0]
    assert "https://discord.com/developers/applications" in errors[0]
    assert dc.generator.requests == []


@pytest.mark.parametrize("settings", [{}, {"answer_channels": [GENERAL_ID]}])
async def test_system_messages_without_text_are_not_taken_for_a_missing_intent(
    dc: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="botkit_discord"):
        dc.deliver(guild_message("", message_id=2551, author=BEN, message_type=7))  # joined
        dc.deliver(guild_message("", message_id=2552, author=ANN, message_type=6))  # pinned
        await asyncio.sleep(0.1)
        await dc.settle()

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert dc.generator.requests == []
    assert dc.texts() == []


async def test_a_reply_sent_while_the_model_finishes_is_not_sent_twice(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    http = FakeDiscordHTTP(latency_s=0.05)  # the network is slower than the model
    adapter = DiscordAdapter(botkit_engine, {}, token=TOKEN, http=http)
    scripted_generator.replies.append("Hello there, how can I help you today?")
    try:
        await adapter.login()
        Inbox(adapter.client).message(dm_message("hi", message_id=2601))
        await eventually(lambda: bool(http.sent()))
        await eventually(lambda: not adapter._tasks)
    finally:
        await adapter.stop(grace_s=5)

    assert final_texts(http) == ["Hello there, how can I help you today?"]


async def test_stopping_mid_reply_leaves_no_task_behind(dc: Harness) -> None:
    dc.generator.stall_after = 3  # the model stops producing mid-sentence
    dc.generator.replies.append("one two three four five")

    dc.deliver(dm_message("hi", message_id=2701))
    await dc.until(lambda: bool(dc.texts()))
    await dc.adapter.stop(grace_s=0.1)
    await asyncio.sleep(0)

    left = [t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()]
    assert left == []


async def test_a_gateway_refusing_the_privileged_intent_fails_start_clearly(
    botkit_engine: DialogueEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    http = FakeDiscordHTTP()
    adapter = DiscordAdapter(botkit_engine, {}, token=TOKEN, http=http)

    async def refused(*, reconnect: bool = True) -> None:
        raise discord.PrivilegedIntentsRequired(shard_id=None)

    monkeypatch.setattr(adapter.client, "connect", refused)
    try:
        with pytest.raises(AdapterError, match="Message Content Intent") as failure:
            await adapter.start()
    finally:
        await adapter.stop(grace_s=1)

    assert "developer portal" in str(failure.value)


async def test_start_logs_in_connects_and_is_ready(
    botkit_engine: DialogueEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    http = FakeDiscordHTTP()
    adapter = DiscordAdapter(botkit_engine, {}, token=TOKEN, http=http)
    closed = asyncio.Event()

    async def gateway(*, reconnect: bool = True) -> None:  # READY, then events until closed
        adapter.client.dispatch("ready")
        await closed.wait()

    monkeypatch.setattr(adapter.client, "connect", gateway)
    try:
        await adapter.start()
        assert adapter._ready.is_set()
        assert http.called("GET", "/users/@me")
        assert sorted(c["name"] for c in http.synced) == ["ask", "persona", "reset"]
    finally:
        closed.set()
        await adapter.stop(grace_s=1)


async def test_a_bad_token_fails_at_start_with_a_clear_message(
    botkit_engine: DialogueEngine,
) -> None:
    http = FakeDiscordHTTP(token_valid=False)
    adapter = DiscordAdapter(botkit_engine, {}, token=TOKEN, http=http)

    try:
        with pytest.raises(AdapterError, match="BOTKIT_DISCORD_TOKEN"):
            await adapter.start()
    finally:
        await adapter.stop()

    assert [c.path for c in http.calls] == ["/users/@me"]


def test_no_token_is_a_config_error(
    botkit_engine: DialogueEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BOTKIT_DISCORD_TOKEN", raising=False)

    with pytest.raises(ConfigError, match="BOTKIT_DISCORD_TOKEN"):
        DiscordAdapter(botkit_engine, {})


@pytest.mark.parametrize(("settings_", "message"), [
    ({"answer_channels": "general"}, "answer_channels"),
    ({"command_guilds": 5}, "command_guilds"),
    ({"edit_interval_s": 0}, "edit_interval_s"),
    ({"max_ratelimit_timeout_s": 5}, "max_ratelimit_timeout_s"),
    ({"max_retries": -1}, "max_retries"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_settings_are_refused_by_name(
    botkit_engine: DialogueEngine, settings_: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        DiscordAdapter(botkit_engine, settings_, token=TOKEN)


async def test_an_unknown_persona_is_refused_at_login(botkit_engine: DialogueEngine) -> None:
    adapter = DiscordAdapter(botkit_engine, {"persona": "nobody"}, token=TOKEN,
                             http=FakeDiscordHTTP())

    with pytest.raises(ConfigError, match="nobody"):
        await adapter.login()
    await adapter.stop()


async def test_handoff_the_bot_goes_quiet_and_the_agents_messages_reach_the_channel(
    dc: Harness,
) -> None:
    dc.deliver(guild_message(f"{mention(BOT)} can I talk to a human?", message_id=901,
                             mentions=[BOT]))
    await dc.until(lambda: bool(dc.texts(GENERAL_ID)))
    await dc.settle()
    dc.deliver(guild_message(f"{mention(BOT)} hello??", message_id=902, mentions=[BOT]))
    await dc.settle()
    conversation = (await dc.engine.store.handoff_queue())[0].conversation
    bea = await dc.engine.store.add_console_user("bea", role="agent", password_hash="x",
                                                 display_name="Bea")

    await dc.engine.claim(conversation.id, bea)
    await dc.engine.agent_reply(conversation.id, bea, "Hi @everyone, Bea here.")

    texts = dc.texts(GENERAL_ID)
    assert "person from our team" in texts[0]
    assert dc.generator.requests == []  # the bot never answered
    assert texts[1:] == ["Bea from our team has joined the chat.", "Hi @everyone, Bea here."]
    assert all(pings(call) == NO_PINGS for call in dc.http.sent(GENERAL_ID))
