"""The Telegram adapter on the real python-telegram-bot ``Application`` and ``Updater``,
with real update payloads; only the Bot API's network edge is replaced (fakes.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from botkit.engine import DialogueEngine
from botkit.errors import AdapterError, ConfigError
from botkit.testing import ScriptedGenerator
from botkit_telegram import TelegramAdapter
from botkit_telegram.render import visible_length
from tests.adapters.telegram.fakes import (
    BOT_USERNAME,
    TOKEN,
    FakeBotAPI,
    FakeClock,
    command,
    group_message,
    mention,
    private_message,
)


@dataclass
class Harness:
    adapter: TelegramAdapter
    api: FakeBotAPI
    clock: FakeClock
    generator: ScriptedGenerator
    engine: DialogueEngine

    def push(self, update: dict[str, Any]) -> None:
        self.api.push_update(update)

    async def until(self, condition: Callable[[], bool], limit_s: float = 5.0) -> None:
        await eventually(condition, limit_s)

    def sent(self) -> list[str]:
        return [str(c.params["text"]) for c in self.api.called("sendMessage")]


async def eventually(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Let the adapter work until ``condition()`` holds; fail after ``limit_s``."""
    for _ in range(int(limit_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true after {limit_s} s")


@pytest.fixture
def settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def tg(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
    settings: dict[str, Any],
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    api = FakeBotAPI(clock=clock)
    adapter = TelegramAdapter(botkit_engine, settings, token=TOKEN, request=api, clock=clock)
    await adapter.start()
    try:
        yield Harness(adapter, api, clock, scripted_generator, botkit_engine)
    finally:
        await adapter.stop(grace_s=5)


async def test_a_private_message_is_answered_with_a_draft_stream_ending_in_send_message(
    tg: Harness,
) -> None:
    tg.generator.replies.append("We ship to **Canada** in 5 days.")
    tg.generator.delay_s = 0.01

    tg.push(private_message("Do you ship to Canada?", update_id=1))
    await tg.until(lambda: bool(tg.sent()))

    methods = [c.method for c in tg.api.calls if c.method not in ("getMe", "setMyCommands",
                                                                  "deleteWebhook")]
    assert methods[0] == "sendChatAction"
    assert "sendMessageDraft" in methods
    assert methods[-1] == "sendMessage"
    final = tg.api.called("sendMessage")[-1].params
    assert final["text"] == "We ship to <b>Canada</b> in 5 days."
    assert final["parse_mode"] == "HTML"
    assert final["chat_id"] == 42
    drafts = tg.api.called("sendMessageDraft")
    assert len({d.params["draft_id"] for d in drafts}) == 1
    stored = await tg.engine.transcript("telegram", "42")
    assert [m.text for m in stored] == ["Do you ship to Canada?",
                                        "We ship to **Canada** in 5 days."]


async def test_bot_commands_are_registered_at_start(tg: Harness) -> None:
    commands = tg.api.called("setMyCommands")[0].params["commands"]

    assert [c["command"] for c in commands] == ["start", "reset", "help"]


async def test_a_group_message_without_mention_is_ignored_and_a_mention_is_answered(
    tg: Harness,
) -> None:
    tg.generator.replies.append("From 9 to 6.")
    tg.push(group_message("when do you open?", update_id=1, message_id=10))
    text = f"@{BOT_USERNAME} when do you open?"
    tg.push(group_message(text, update_id=2, message_id=11, entities=mention(text)))

    await tg.until(lambda: bool(tg.sent()))
    await asyncio.sleep(0.05)

    assert len(tg.generator.requests) == 1
    assert tg.generator.requests[0].messages[-1].content == "when do you open?"
    first = tg.api.called("sendMessage")[0].params
    assert first["reply_parameters"]["message_id"] == 11
    assert tg.api.called("sendMessageDraft") == []  # drafts are for private chats only


async def test_a_reply_to_the_bot_in_a_group_is_answered(tg: Harness) -> None:
    tg.push(group_message("and on Sundays?", update_id=1, message_id=20, reply_to_bot=True))

    await tg.until(lambda: bool(tg.sent()))

    assert tg.generator.requests[0].messages[-1].content == "and on Sundays?"


async def test_a_mention_of_another_account_is_not_ours(tg: Harness) -> None:
    text = "@someone_else when do you open?"
    tg.push(group_message(text, update_id=1, entities=mention(text, "someone_else")))
    await asyncio.sleep(0.3)

    assert tg.generator.requests == []
    assert tg.sent() == []


async def test_start_sends_the_greeting_and_reset_starts_a_new_conversation(
    tg: Harness,
) -> None:
    tg.push(private_message("/start", update_id=1, message_id=1, entities=command("/start")))
    await tg.until(lambda: len(tg.sent()) == 1)
    tg.push(private_message("hello", update_id=2, message_id=2))
    await tg.until(lambda: len(tg.sent()) == 2)
    before = await tg.engine.store.latest_conversation("telegram", "42")

    tg.push(private_message("/reset", update_id=3, message_id=3, entities=command("/reset")))
    await tg.until(lambda: len(tg.sent()) == 3)

    after = await tg.engine.store.latest_conversation("telegram", "42")
    assert tg.sent()[0] == "Hi! I'm Pine. How can I help?"
    assert "new conversation" in tg.sent()[2]
    assert before is not None
    assert after is not None
    assert after.id != before.id
    assert await tg.engine.transcript("telegram", "42") == []


async def test_a_group_command_for_another_bot_is_ignored(tg: Harness) -> None:
    text = "/start@other_bot"
    tg.push(group_message(text, update_id=1, entities=command(text)))
    await asyncio.sleep(0.3)

    assert tg.sent() == []


async def test_a_long_reply_is_split_into_messages_under_4096_utf16_units(
    tg: Harness,
) -> None:
    paragraph = ("Our tents are tested in wind and rain 🌧️ before they ship. " * 20).strip()
    reply = "\n\n".join([paragraph] * 9)  # about 10,000 characters, emoji included
    assert len(reply) > 10_000
    tg.generator.replies.append(reply)

    tg.push(private_message("tell me about tents", update_id=1))
    await tg.until(lambda: len(tg.sent()) >= 3, limit_s=10)
    await asyncio.sleep(0.05)

    chunks = tg.sent()
    assert len(chunks) == 3
    assert all(visible_length(c) <= 4096 for c in chunks)
    assert all(c.strip() for c in chunks)
    assert " ".join(chunks).split() == reply.split()
    for draft in tg.api.called("sendMessageDraft"):
        assert visible_length(str(draft.params["text"])) <= 4096


async def test_a_429_is_waited_out_once_and_nothing_is_lost(tg: Harness) -> None:
    tg.adapter._drafts_work = False
    tg.api.fail("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    tg.generator.replies.append("Here is your answer.")

    tg.push(private_message("question", update_id=1))
    await tg.until(lambda: len(tg.api.called("sendMessage")) == 2)
    await asyncio.sleep(0.05)

    attempts = tg.api.called("sendMessage")
    assert len(attempts) == 2
    assert attempts[0].params["text"] == attempts[1].params["text"] == "Here is your answer."
    assert attempts[1].at - attempts[0].at >= 7


async def test_group_edits_are_paced_under_a_fake_clock(tg: Harness) -> None:
    words = " ".join(f"word{i}" for i in range(60))
    tg.generator.replies.append(words)
    tg.generator.delay_s = 0.005
    text = f"@{BOT_USERNAME} talk"

    tg.push(group_message(text, update_id=1, message_id=5, entities=mention(text)))
    await tg.until(lambda: any(
        c.method == "editMessageText" and c.params["text"] == words for c in tg.api.calls
    ), limit_s=10)

    updates = tg.api.called("sendMessage", "editMessageText")
    assert updates[0].method == "sendMessage"
    times = [c.at for c in updates]
    assert all(b - a >= 1.5 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    for start in times:
        assert sum(1 for t in times if start <= t < start + 60) <= 20
    assert updates[-1].params["text"] == words


async def test_message_is_not_modified_counts_as_success(
    tg: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    tg.generator.replies.append("one two three")
    text = f"@{BOT_USERNAME} hi"
    # Every edit answers "not modified": the streamed text was already the final one.
    for _ in range(5):
        tg.api.fail("editMessageText", 400, "Bad Request: message is not modified")

    with caplog.at_level(logging.WARNING):
        tg.push(group_message(text, update_id=1, entities=mention(text)))
        await tg.until(lambda: bool(tg.api.called("editMessageText")))
        await asyncio.sleep(0.2)

    assert len(tg.sent()) == 1  # no plain-text resend, no second message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_failing_update_is_logged_with_its_id_and_others_are_still_served(
    tg: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Any) -> str:
        raise RuntimeError("the model fell over")

    tg.generator.replies.extend([broken, "I'm fine now."])
    with caplog.at_level(logging.ERROR, logger="botkit_telegram"):
        tg.push(private_message("first", update_id=31, message_id=1))
        await tg.until(lambda: any("update 31" in r.getMessage() for r in caplog.records))
        tg.push(private_message("second", update_id=32, message_id=2))
        await tg.until(lambda: "I'm fine now." in tg.sent())

    failed = [r.getMessage() for r in caplog.records if "update 31" in r.getMessage()]
    assert len(failed) == 1
    assert "the model fell over" in failed[0]


async def test_memory_forget_removes_a_telegram_users_conversations(tg: Harness) -> None:
    tg.push(private_message("my address is 1 Pine Road", update_id=1))
    await tg.until(lambda: bool(tg.sent()))

    removed = await tg.engine.store.forget_user("telegram", "42")

    assert removed["messages"] == 2
    assert await tg.engine.transcript("telegram", "42") == []


async def test_html_refused_by_telegram_falls_back_to_plain_text(tg: Harness) -> None:
    tg.adapter._drafts_work = False
    tg.generator.replies.append("Use **bold** wisely")
    tg.api.fail("sendMessage", 400, "Bad Request: can't parse entities: unsupported tag")

    tg.push(private_message("hi", update_id=1))
    await tg.until(lambda: len(tg.sent()) == 2)

    retry = tg.api.called("sendMessage")[1].params
    assert retry["text"] == "Use bold wisely"
    assert "parse_mode" not in retry


async def test_a_replayed_update_is_answered_once(tg: Harness) -> None:
    update = private_message("hello", update_id=99, message_id=7)
    tg.push(update)
    await tg.until(lambda: len(tg.sent()) == 1)

    tg.push(update)
    await asyncio.sleep(0.3)

    assert len(tg.sent()) == 1
    assert len(tg.generator.requests) == 1


async def test_a_redelivered_message_after_a_restart_is_answered_once(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    for _ in range(2):  # a new adapter has no memory of update ids; the database does
        clock = FakeClock()
        api = FakeBotAPI(clock=clock)
        adapter = TelegramAdapter(botkit_engine, {}, token=TOKEN, request=api, clock=clock)
        await adapter.start()
        api.push_update(private_message("hello", update_id=5, message_id=77))
        await asyncio.sleep(0.4)
        await adapter.stop(grace_s=5)

    assert len(scripted_generator.requests) == 1


async def test_typing_is_refreshed_until_the_first_text(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator,
) -> None:
    api = FakeBotAPI()
    adapter = TelegramAdapter(botkit_engine, {"typing_interval_s": 0.05, "drafts": False},
                              token=TOKEN, request=api)
    scripted_generator.replies.append("late answer")
    scripted_generator.delay_s = 0.3  # the model is slow to start
    await adapter.start()
    try:
        api.push_update(private_message("hi", update_id=1))
        await eventually(lambda: bool(api.called("sendMessage")))
    finally:
        await adapter.stop(grace_s=5)

    typing = api.called("sendChatAction")
    assert len(typing) >= 3
    assert all(c.params["action"] == "typing" for c in typing)


async def test_a_bad_token_fails_at_start_with_a_clear_message(
    botkit_engine: DialogueEngine,
) -> None:
    api = FakeBotAPI(token_valid=False)
    adapter = TelegramAdapter(botkit_engine, {}, token=TOKEN, request=api)

    with pytest.raises(AdapterError, match="BOTKIT_TELEGRAM_TOKEN"):
        await adapter.start()
    await adapter.stop()


def test_no_token_is_a_config_error(
    botkit_engine: DialogueEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOTKIT_TELEGRAM_TOKEN", raising=False)

    with pytest.raises(ConfigError, match="BOTKIT_TELEGRAM_TOKEN"):
        TelegramAdapter(botkit_engine, {})


@pytest.mark.parametrize(("settings_", "message"), [
    ({"mode": "carrier-pigeon"}, "mode"),
    ({"groups": "some"}, "groups"),
    ({"mode": "webhook", "webhook_url": "http://insecure.example/telegram/webhook"}, "https"),
    ({"edit_interval_s": 0}, "edit_interval_s"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_settings_are_refused_by_name(
    botkit_engine: DialogueEngine, settings_: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TelegramAdapter(botkit_engine, settings_, token=TOKEN, request=FakeBotAPI())


async def test_privacy_mode_is_reported_when_groups_all_cannot_see_everything(
    botkit_engine: DialogueEngine, caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeBotAPI(can_read_all_group_messages=False)
    adapter = TelegramAdapter(botkit_engine, {"groups": "all"}, token=TOKEN, request=api)
    with caplog.at_level(logging.WARNING, logger="botkit_telegram"):
        await adapter.start()
        await adapter.stop()

    assert any("privacy mode" in r.getMessage() and "/setprivacy" in r.getMessage()
               for r in caplog.records)


# --- webhook --------------------------------------------------------------------------


@pytest.fixture
async def webhook(
    botkit_engine: DialogueEngine, scripted_generator: ScriptedGenerator, tmp_path: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeBotAPI]]:
    from dataclasses import replace

    from botkit.config import load_config
    from botkit.server.app import create_app

    api = FakeBotAPI()
    adapter = TelegramAdapter(
        botkit_engine, {"mode": "webhook", "webhook_url": "https://bot.example/telegram/webhook"},
        token=TOKEN, webhook_secret="s3cret-token_1", request=api,
    )
    base = load_config(None, environ={})
    config = replace(base, bot=replace(base.bot, data_dir=str(tmp_path)))
    app = create_app(botkit_engine, config, adapters=[adapter])
    await adapter.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            yield client, api
    finally:
        await adapter.stop(grace_s=5)


async def test_webhook_mode_registers_the_url_with_its_secret(
    webhook: tuple[httpx.AsyncClient, FakeBotAPI],
) -> None:
    _, api = webhook

    registered = api.called("setWebhook")[0].params
    assert registered["url"] == "https://bot.example/telegram/webhook"
    assert registered["secret_token"] == "s3cret-token_1"


@pytest.mark.parametrize("secret", [None, "", "wrong", "s3cret-token_2"])
async def test_a_webhook_call_without_the_right_secret_gets_403_and_runs_nothing(
    webhook: tuple[httpx.AsyncClient, FakeBotAPI], scripted_generator: ScriptedGenerator,
    secret: str | None,
) -> None:
    client, api = webhook
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}

    response = await client.post("/telegram/webhook", json=private_message("hi", update_id=1),
                                 headers=headers)
    await asyncio.sleep(0.2)

    assert response.status_code == 403
    assert scripted_generator.requests == []
    assert api.called("sendMessage") == []


async def test_a_webhook_update_with_the_secret_is_answered(
    webhook: tuple[httpx.AsyncClient, FakeBotAPI],
) -> None:
    client, api = webhook

    response = await client.post(
        "/telegram/webhook", json=private_message("hi", update_id=1),
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1"},
    )
    await eventually(lambda: bool(api.called("sendMessage")))

    assert response.status_code == 200
    assert api.called("sendMessage")[0].params["text"] == "I am a scripted reply."


def test_an_adapters_telegram_table_enables_it_for_botkit_serve(
    tmp_path: Any, botkit_engine: DialogueEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botkit.adapters import create_adapter
    from botkit.config import load_config
    from botkit.server.run import enabled_adapters

    path = tmp_path / "botkit.toml"
    path.write_text('[adapters.telegram]\ngroups = "off"\n', encoding="utf-8")
    config = load_config(path, environ={})
    monkeypatch.setenv("BOTKIT_TELEGRAM_TOKEN", TOKEN)

    adapter = create_adapter("telegram", botkit_engine, config.adapters["telegram"])

    assert enabled_adapters(config) == ["web", "telegram"]
    assert isinstance(adapter, TelegramAdapter)
    assert adapter.settings.groups == "off"


def test_a_webhook_secret_in_the_config_file_is_refused(tmp_path: Any) -> None:
    from botkit.config import load_config

    path = tmp_path / "botkit.toml"
    path.write_text('[adapters.telegram]\nwebhook_secret = "x"\n', encoding="utf-8")

    with pytest.raises(ConfigError, match="BOTKIT_TELEGRAM_WEBHOOK_SECRET"):
        load_config(path, environ={})


async def test_handoff_the_bot_goes_quiet_and_the_agents_messages_reach_the_chat(
    tg: Harness,
) -> None:
    tg.push(private_message("can I talk to a human?", update_id=1, message_id=1))
    await tg.until(lambda: len(tg.sent()) == 1)
    tg.push(private_message("hello??", update_id=2, message_id=2))
    await asyncio.sleep(0.3)
    conversation = (await tg.engine.store.handoff_queue())[0].conversation
    bea = await tg.engine.store.add_console_user("bea", role="agent", password_hash="x",
                                                 display_name="Bea")

    await tg.engine.claim(conversation.id, bea)
    await tg.engine.agent_reply(conversation.id, bea, "Hi, this is **Bea**.")

    assert "person from our team" in tg.sent()[0]
    assert tg.generator.requests == []  # the bot never answered
    assert tg.sent()[1:] == ["Bea from our team has joined the chat.",
                             "Hi, this is <b>Bea</b>."]
    assert all(c.params["chat_id"] == 42 for c in tg.api.called("sendMessage"))

    await tg.engine.hand_back(conversation.id, bea)
    tg.generator.replies.append("Happy to help again.")
    tg.push(private_message("one more thing", update_id=3, message_id=3))
    await tg.until(lambda: "Happy to help again." in tg.sent())

    assert "Pine is back" in tg.sent()[3]
    assert len(tg.generator.requests) == 1  # the bot answers again after the hand-back
