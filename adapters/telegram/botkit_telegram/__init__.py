"""botkit on Telegram: the ``telegram`` channel adapter, on python-telegram-bot 22.

Receives updates by long polling (default) or by webhook on the botkit server
(``/telegram/webhook``, with Telegram's secret token checked in constant time), answers
every private chat and, in groups, messages that mention the bot, reply to it or use its
commands. Replies stream: in private chats as a draft (``sendMessageDraft``) finished by
``sendMessage``; in groups as a first message edited as text arrives. Every outgoing
call is paced per chat and globally, a 429 is waited out, and the final reply is never
dropped. Replies are sent as Telegram HTML (see :mod:`botkit_telegram.render`) with a
plain-text fallback, split at 4096 UTF-16 units.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dtm
import hmac
import logging
import os
import re
import secrets
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from telegram import BotCommand, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.request import BaseRequest

from botkit.adapters import Adapter, Clock, MonotonicClock
from botkit.engine import IncomingMessage
from botkit.errors import (
    AdapterError,
    ConfigError,
    EmptyMessageError,
    GenerationTimeout,
    GeneratorBusy,
)
from botkit.server.http import read_json
from botkit_telegram.render import split_html, split_plain, to_html, to_plain

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine

__all__ = ["Clock", "Pacer", "TelegramAdapter", "TelegramSettings"]

log = logging.getLogger(__name__)
CHANNEL = "telegram"
TOKEN_ENV = "BOTKIT_TELEGRAM_TOKEN"
SECRET_ENV = "BOTKIT_TELEGRAM_WEBHOOK_SECRET"
WEBHOOK_PATH = "/telegram/webhook"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
_UPDATES = ["message", "edited_message"]
T = TypeVar("T")


@dataclass(frozen=True)
class TelegramSettings:
    """``[adapters.telegram]``. The token comes from BOTKIT_TELEGRAM_TOKEN only."""

    mode: str = "polling"
    """``polling`` (no public URL needed) or ``webhook`` (Telegram posts to the server)."""
    webhook_url: str = ""
    """Public https URL that reaches this server's ``/telegram/webhook`` (webhook mode).
    The secret token comes from BOTKIT_TELEGRAM_WEBHOOK_SECRET."""
    groups: str = "mentions"
    """In groups, answer ``mentions`` (mentions, replies to the bot, commands), ``all``
    messages (needs privacy mode off in @BotFather), or ``off`` (private chats only)."""
    persona: str | None = None
    """Persona for Telegram chats (default: ``[bot] default_persona``)."""
    base_url: str = "https://api.telegram.org/bot"
    """Bot API server; for a self-hosted one, e.g. ``http://127.0.0.1:8081/bot`` (the
    token is appended, or put ``{token}`` where it goes)."""
    drafts: bool = True
    """Stream private replies with sendMessageDraft (off: typing, then the whole reply)."""
    edit_interval_s: float = 1.5
    """Least time between two updates of a streaming reply in one chat."""
    typing_interval_s: float = 4.0
    """How often the typing indicator is refreshed until the first text shows."""
    private_per_s: float = 1.0
    """Messages per second to one private chat."""
    group_per_minute: float = 20.0
    """Messages per minute to one group."""
    global_per_s: float = 30.0
    """Messages per second to all chats together."""
    max_retries: int = 5
    """Retries of a reply after 429s or network errors before it is given up (logged)."""


class Pacer:
    """When the next call to a chat may go: per-chat spacing, a group's per-minute window
    and a global rate; a 429 pauses every chat (Telegram's flood control is per bot)."""

    def __init__(
        self, clock: Clock, *, private_per_s: float = 1.0, group_per_minute: float = 20.0,
        global_per_s: float = 30.0, edit_interval_s: float = 1.5,
    ) -> None:
        self.clock = clock
        self.private_gap = 1.0 / private_per_s
        self.group_per_minute = int(group_per_minute)
        self.global_gap = 1.0 / global_per_s
        self.edit_gap = edit_interval_s
        self._next_chat: dict[int, float] = {}
        self._next_edit: dict[int, float] = {}
        self._group_window: dict[int, collections.deque[float]] = {}
        self._next_global = 0.0
        self._paused_until = 0.0

    def reserve(self, chat_id: int, *, group: bool, edit: bool = False) -> float:
        """Book the earliest allowed slot for one call and return it (a clock time)."""
        now = self.clock.now()
        slot = max(now, self._next_global, self._paused_until, self._next_chat.get(chat_id, 0.0))
        if edit:
            slot = max(slot, self._next_edit.get(chat_id, 0.0))
        if group:
            window = self._group_window.setdefault(chat_id, collections.deque())
            while window and window[0] <= slot - 60.0:
                window.popleft()
            if len(window) >= self.group_per_minute:
                slot = max(slot, window[-self.group_per_minute] + 60.0)
            window.append(slot)
        self._next_chat[chat_id] = slot + (0.0 if group else self.private_gap)
        if edit:
            self._next_edit[chat_id] = slot + self.edit_gap
        self._next_global = slot + self.global_gap
        return slot

    async def wait(self, chat_id: int, *, group: bool, edit: bool = False) -> None:
        slot = self.reserve(chat_id, group=group, edit=edit)
        delay = slot - self.clock.now()
        if delay > 0:
            await self.clock.sleep(delay)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.clock.now() + seconds)

    def edit_delay(self, chat_id: int) -> float:
        """Seconds until the chat's next edit may go (0 if now)."""
        return max(0.0, self._next_edit.get(chat_id, 0.0) - self.clock.now())


def _retry_seconds(error: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta; take either without the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class TelegramAdapter(Adapter):
    """The Telegram channel. ``request`` and ``clock`` replace the network and the time
    in tests (a :class:`telegram.request.BaseRequest` that answers like the Bot API)."""

    name = "telegram"

    def __init__(
        self,
        engine: DialogueEngine,
        config: Any = None,
        *,
        token: str | None = None,
        webhook_secret: str | None = None,
        request: BaseRequest | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(engine, config)
        self.settings: TelegramSettings = self.config
        self.token = token or os.environ.get(TOKEN_ENV, "")
        if not self.token:
            raise ConfigError(
                f"the Telegram adapter needs the bot token from @BotFather in {TOKEN_ENV}"
            )
        self.webhook_secret = webhook_secret or os.environ.get(SECRET_ENV, "")
        if self.settings.mode == "webhook" and not _SECRET.match(self.webhook_secret):
            raise ConfigError(
                f"webhook mode needs {SECRET_ENV}: 1 to 256 characters of A-Z, a-z, 0-9, "
                "'_' or '-' (Telegram sends it back with every update)"
            )
        self.clock: Clock = clock or MonotonicClock()
        self.pacer = Pacer(
            self.clock, private_per_s=self.settings.private_per_s,
            group_per_minute=self.settings.group_per_minute,
            global_per_s=self.settings.global_per_s,
            edit_interval_s=self.settings.edit_interval_s,
        )
        builder = (
            ApplicationBuilder()
            .token(self.token)
            .base_url(self.settings.base_url)
            .concurrent_updates(True)
        )
        if request is not None:
            builder = builder.request(request).get_updates_request(request)
        if self.settings.mode == "webhook":
            builder = builder.updater(None)
        self.application: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self.application.add_handler(TypeHandler(Update, self._on_update))
        self.application.add_error_handler(self._on_error)
        self.bot_id = 0
        self.username = ""
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._started = False
        self._drafts_work = self.settings.drafts
        self._server: Any = None

    @classmethod
    def validate_config(cls, raw: dict[str, Any]) -> TelegramSettings:
        known = {f.name: f for f in fields(TelegramSettings)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"[adapters.telegram] has unknown key(s): {', '.join(unknown)} "
                              f"(known: {', '.join(known)})")
        settings = TelegramSettings(**raw)
        for key, value in raw.items():
            default = known[key].default
            kind = type(default) if default is not None else str
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"[adapters.telegram] {key} must be a {kind.__name__}, "
                                  f"not {value!r}")
        if settings.mode not in ("polling", "webhook"):
            raise ConfigError('[adapters.telegram] mode must be "polling" or "webhook"')
        if settings.groups not in ("mentions", "all", "off"):
            raise ConfigError('[adapters.telegram] groups must be "mentions", "all" or "off"')
        if settings.mode == "webhook" and not settings.webhook_url.startswith("https://"):
            raise ConfigError("[adapters.telegram] webhook mode needs webhook_url, an https:// "
                              f"URL that reaches this server's {WEBHOOK_PATH}")
        for key in ("edit_interval_s", "typing_interval_s", "private_per_s",
                    "group_per_minute", "global_per_s"):
            if getattr(settings, key) <= 0:
                raise ConfigError(f"[adapters.telegram] {key} must be positive")
        return settings

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        persona = self.settings.persona
        if persona is not None and persona not in self.engine.personas:
            raise ConfigError(f"[adapters.telegram] persona {persona!r} is not a loaded persona")
        try:
            await self.application.initialize()  # getMe
        except InvalidToken as exc:
            raise AdapterError(
                f"Telegram refused the token in {TOKEN_ENV} ({exc.message}); copy it again "
                "from @BotFather"
            ) from None
        except NetworkError as exc:
            raise AdapterError(f"cannot reach the Telegram Bot API at "
                               f"{self.settings.base_url}: {exc.message}") from None
        me = self.application.bot.bot
        self.bot_id, self.username = me.id, me.username or ""
        if self.settings.groups == "all" and not me.can_read_all_group_messages:
            log.warning(
                "telegram: @%s has privacy mode on, so in groups it sees only commands, "
                "replies to it and mentions, not every message as [adapters.telegram] "
                "groups = \"all\" expects; turn it off in @BotFather (/setprivacy, Disable), "
                "then remove and re-add the bot to each group", self.username,
            )
        await self._call_quietly(self.application.bot.set_my_commands, [
            BotCommand("start", "say hello"),
            BotCommand("reset", "start a new conversation"),
            BotCommand("help", "what this bot does"),
        ])
        await self.application.start()
        self._started = True
        self.engine.register_delivery(CHANNEL, self.deliver)
        if self.settings.mode == "webhook":
            await self.application.bot.set_webhook(
                url=self.settings.webhook_url, secret_token=self.webhook_secret,
                allowed_updates=_UPDATES,
            )
            log.info("telegram: @%s receives updates at %s", self.username,
                     self.settings.webhook_url)
        else:
            updater = self.application.updater
            assert updater is not None
            await updater.start_polling(
                allowed_updates=_UPDATES, error_callback=self._on_polling_error,
            )
            log.info("telegram: @%s is polling for updates", self.username)

    async def stop(self, grace_s: float = 30.0) -> None:
        if not self._started:
            with contextlib.suppress(Exception):
                await self.application.shutdown()
            return
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        # Application.stop() waits for the updates being handled: replies finish.
        try:
            async with asyncio.timeout(grace_s):
                await self.application.stop()
        except TimeoutError:
            log.warning("telegram: replies still running after %g s were cancelled", grace_s)
        await self.application.shutdown()
        self._started = False

    def _on_polling_error(self, error: TelegramError) -> None:
        # PTB retries polling with a growing back-off; say so once per failure.
        log.warning("telegram: polling failed (%s); retrying", error)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("telegram: update %s failed: %r", update_id, context.error,
                  exc_info=context.error)

    # -- the webhook -------------------------------------------------------------------------

    def http_routes(self, server: Any) -> Sequence[BaseRoute]:
        self._server = server
        if self.settings.mode != "webhook":
            return ()
        return [Route(WEBHOOK_PATH, self._webhook, methods=["POST"])]

    async def _webhook(self, request: Request) -> Response:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if not hmac.compare_digest(given.encode(), self.webhook_secret.encode()):
            log.warning("telegram: webhook call with a missing or wrong secret from %s",
                        request.client.host if request.client else "?")
            return JSONResponse({"error": {"code": "forbidden", "message": "wrong secret"}},
                                status_code=403)
        max_bytes = self._server.config.server.max_body_bytes if self._server else 1 << 20
        data = await read_json(request, max(max_bytes, 1 << 20))
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # a malformed update must not make Telegram retry forever
            log.warning("telegram: ignoring a malformed update: %s", exc)
            return JSONResponse({"ok": True})
        await self.application.update_queue.put(update)
        return JSONResponse({"ok": True})

    # -- updates -----------------------------------------------------------------------------

    def _first_time(self, update_id: int) -> bool:
        if update_id in self._seen:
            return False
        self._seen[update_id] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        return True

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self._first_time(update.update_id):
            log.info("telegram: update %s was already handled", update.update_id)
            return
        message = update.message
        if message is None or message.from_user is None or message.from_user.is_bot:
            return
        text = message.text
        if not text:
            return
        group = message.chat.type in _GROUPS
        if group and self.settings.groups == "off":
            return
        command, text, addressed = self._parse(message)
        if command is not None:
            if command in ("start", "help", "reset"):
                await self._command(command, message)
            elif not group:
                await self._command("help", message)
            return
        if group and not addressed and self.settings.groups != "all":
            return
        await self._answer(message, text, group=group)

    def _parse(self, message: Message) -> tuple[str | None, str, bool]:
        """(command or None, the text without the bot's mention, addressed to the bot?)."""
        text = message.text or ""
        username = self.username.lower()
        addressed = bool(
            message.reply_to_message is not None
            and message.reply_to_message.from_user is not None
            and message.reply_to_message.from_user.id == self.bot_id
        )
        cuts: list[tuple[int, int]] = []
        command: str | None = None
        for entity, value in message.parse_entities(
            [MessageEntityType.MENTION, MessageEntityType.BOT_COMMAND]
        ).items():
            start = _utf16_to_index(text, entity.offset)
            end = _utf16_to_index(text, entity.offset + entity.length)
            if entity.type == MessageEntityType.MENTION and value[1:].lower() == username:
                addressed = True
                cuts.append((start, end))
            elif entity.type == MessageEntityType.BOT_COMMAND and entity.offset == 0:
                name, _, target = value[1:].partition("@")
                if target and target.lower() != username:
                    return None, "", False  # another bot's command
                command = name.lower()
                addressed = True
        for start, end in sorted(cuts, reverse=True):
            text = text[:start] + text[end:]
        text = re.sub(r"^[\s,:]+", "", text).strip()
        return command, text, addressed

    def _incoming(self, message: Message, text: str) -> IncomingMessage:
        user = message.from_user
        assert user is not None
        chat_key = str(message.chat.id)
        if message.is_topic_message and message.message_thread_id:
            chat_key += f":{message.message_thread_id}"  # each forum topic, its own talk
        return IncomingMessage(
            channel=CHANNEL, chat_key=chat_key, user_key=str(user.id), text=text,
            platform_message_id=str(message.message_id), user_name=user.full_name,
        )

    async def _command(self, command: str, message: Message) -> None:
        persona = self.engine.persona(self.settings.persona)
        group = message.chat.type in _GROUPS
        if command == "reset":
            incoming = self._incoming(message, "/reset")
            await self.engine.new_conversation(
                CHANNEL, incoming.chat_key, incoming.user_key, persona=persona.name,
                user_name=incoming.user_name,
            )
            text = "Started a new conversation. What can I help you with?"
        elif command == "start":
            text = persona.greeting or f"Hi, I'm {persona.display_name}."
        else:
            how = ("mention me or reply to one of my messages" if group
                   else "just write your question")
            text = (f"I'm {persona.display_name}. To ask me something, {how}.\n"
                    "/reset starts a new conversation.")
        await self._send_final(message, text, group=group)

    # -- replying --------------------------------------------------------------------------

    async def _answer(self, message: Message, text: str, *, group: bool) -> None:
        chat_id = message.chat.id
        thread_id = message.message_thread_id if message.is_topic_message else None
        stream = _Stream(self, message, group=group, thread_id=thread_id)
        outcome = "error"
        reply = self.engine.respond(self._incoming(message, text), persona=self.settings.persona)
        try:
            async with reply:
                async for piece in reply:
                    stream.add(piece)
            if reply.duplicate or (reply.handoff and not reply.text):
                # A retry, or a person owns the chat: the bot has nothing to say.
                outcome = "duplicate" if reply.duplicate else "handoff"
                await stream.abandon()
                return
            await stream.finish(reply.text)
            outcome = "ok"
        except EmptyMessageError:
            await stream.abandon()
            await self._command("help", message)
            outcome = "ok"
        except GeneratorBusy:
            outcome = "busy"
            await stream.finish("Sorry, I'm very busy right now. Please try again in a minute.")
        except GenerationTimeout:
            await stream.finish("Sorry, I couldn't finish that answer. Please try again.")
        except (TelegramError, asyncio.CancelledError):
            await stream.abandon()
            raise
        except Exception:
            # The user hears something; the error handler logs the update id and the cause.
            await stream.finish("Sorry, something went wrong on my side. Please try again.")
            raise
        except BaseException:
            await stream.abandon()
            raise
        finally:
            metrics = getattr(self._server, "metrics", None)
            if metrics is not None and outcome not in ("duplicate", "handoff"):
                metrics.observe_reply(CHANNEL, outcome, first_token_s=reply.first_token_s,
                                      duration_s=reply.duration_s, tokens=reply.reply_tokens)
            log.debug("telegram: chat %s answered (%s)", chat_id, outcome)

    async def _send_final(self, message: Message, text: str, *, group: bool,
                          thread_id: int | None = None) -> list[Message]:
        """Send ``text`` whole (split as needed), HTML first, plain text if that fails."""
        html_chunks = split_html(to_html(text))
        try:
            return await self._send_chunks(message, html_chunks, ParseMode.HTML, group=group)
        except BadRequest as exc:
            if "parse" not in exc.message.lower() and "entit" not in exc.message.lower():
                raise
            log.warning("telegram: HTML refused (%s); sending plain text", exc.message)
            return await self._send_chunks(
                message, split_plain(to_plain(to_html(text))), None, group=group
            )

    async def _send_chunks(self, message: Message, chunks: Sequence[str], parse_mode: str | None,
                           *, group: bool) -> list[Message]:
        sent: list[Message] = []
        for index, chunk in enumerate(chunks):
            reply_to = (ReplyParameters(message.message_id, allow_sending_without_reply=True)
                        if group and index == 0 else None)
            result = await self.call(
                message.chat.id, group, self.application.bot.send_message, final=True,
                chat_id=message.chat.id, text=chunk, parse_mode=parse_mode,
                reply_parameters=reply_to,
                message_thread_id=message.message_thread_id if message.is_topic_message
                else None,
            )
            if result is not None:
                sent.append(result)
        return sent

    async def deliver(self, conversation: Any, text: str) -> None:
        """Send a message from the support team (human handoff) to the conversation's chat."""
        chat, _, thread = conversation.chat_key.partition(":")
        chat_id = int(chat)
        group = chat_id < 0  # Telegram's group and channel ids are negative
        thread_id = int(thread) if thread else None
        try:
            chunks: Sequence[str] = split_html(to_html(text))
            mode: str | None = ParseMode.HTML
            for chunk in chunks:
                await self.call(chat_id, group, self.application.bot.send_message, final=True,
                                chat_id=chat_id, text=chunk, parse_mode=mode,
                                message_thread_id=thread_id)
        except BadRequest as exc:
            log.warning("telegram: HTML refused (%s); sending plain text", exc.message)
            for chunk in split_plain(to_plain(to_html(text))):
                await self.call(chat_id, group, self.application.bot.send_message, final=True,
                                chat_id=chat_id, text=chunk, message_thread_id=thread_id)

    async def call(
        self, chat: int, group: bool, method: Callable[..., Awaitable[T]], /, *,
        final: bool, edit: bool = False, **kwargs: Any,
    ) -> T | None:
        """One paced Bot API call. A 429 pauses every chat for its ``retry_after``; a final
        call is then retried, an interim one (a draft, an edit) skipped. "message is not
        modified" counts as done."""
        attempts = self.settings.max_retries + 1 if final else 1
        for attempt in range(attempts):
            await self.pacer.wait(chat, group=group, edit=edit)
            try:
                return await method(**kwargs)
            except RetryAfter as exc:
                wait = _retry_seconds(exc)
                self.pacer.pause(wait)
                log.warning("telegram: flood control, waiting %g s (%s)", wait,
                            getattr(method, "__name__", "call"))
                if not final:
                    return None
            except BadRequest as exc:
                if "not modified" in exc.message.lower():
                    return None
                raise
            except Forbidden as exc:
                log.warning("telegram: chat %s does not accept messages (%s)", chat,
                            exc.message)
                return None
            except NetworkError as exc:
                if attempt + 1 >= attempts:
                    raise
                log.warning("telegram: network error (%s); retrying", exc.message)
                await self.clock.sleep(min(2.0 ** attempt, 30.0))
        log.error("telegram: gave up sending to chat %s after %d attempts", chat, attempts)
        return None

    async def _call_quietly(self, method: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await method(*args)
        except TelegramError as exc:
            log.warning("telegram: %s failed: %s", getattr(method, "__name__", "call"), exc)


class _Stream:
    """One reply being shown: the typing indicator, then a draft (private) or an edited
    message (groups) updated at most every ``edit_interval_s``, then the final text."""

    def __init__(self, adapter: TelegramAdapter, message: Message, *, group: bool,
                 thread_id: int | None) -> None:
        self.adapter = adapter
        self.message = message
        self.chat_id = message.chat.id
        self.group = group
        self.thread_id = thread_id
        self.text = ""
        self.shown = ""
        self.first_message: Message | None = None
        self.draft_id = secrets.randbelow(2**31 - 2) + 1
        self._changed = asyncio.Event()
        self._visible = asyncio.Event()
        self._typing = asyncio.create_task(self._keep_typing())
        self._updater = asyncio.create_task(self._update_loop())

    def add(self, piece: str) -> None:
        self.text += piece
        self._changed.set()

    async def _keep_typing(self) -> None:
        adapter = self.adapter
        while not self._visible.is_set():
            await adapter._call_quietly(
                lambda: adapter.application.bot.send_chat_action(
                    self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id,
                )
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(adapter.settings.typing_interval_s):
                    await self._visible.wait()

    async def _update_loop(self) -> None:
        adapter = self.adapter
        while True:
            await self._changed.wait()
            # Wait for the chat's next edit slot first, then show the newest text.
            delay = adapter.pacer.edit_delay(self.chat_id)
            if delay > 0:
                await adapter.clock.sleep(delay)
            self._changed.clear()
            text = self.text
            if not text.strip() or text == self.shown:
                continue
            # The first chunk's worth only: the rest is sent when the reply is complete.
            html = split_html(to_html(text))[0]
            if not self.group and adapter._drafts_work:
                try:
                    await adapter.call(
                        self.chat_id, False, adapter.application.bot.send_message_draft,
                        final=False, edit=True, chat_id=self.chat_id, draft_id=self.draft_id,
                        text=html, parse_mode=ParseMode.HTML, message_thread_id=self.thread_id,
                    )
                except BadRequest as exc:
                    log.info("telegram: drafts unavailable (%s); sending whole replies",
                             exc.message)
                    adapter._drafts_work = False
                    continue
            elif self.group:
                if self.first_message is None:
                    self.first_message = await adapter.call(
                        self.chat_id, True, adapter.application.bot.send_message, final=False,
                        edit=True, chat_id=self.chat_id, text=html, parse_mode=ParseMode.HTML,
                        reply_parameters=ReplyParameters(self.message.message_id,
                                                         allow_sending_without_reply=True),
                        message_thread_id=self.thread_id,
                    )
                else:
                    await adapter.call(
                        self.chat_id, True, adapter.application.bot.edit_message_text,
                        final=False, edit=True, chat_id=self.chat_id,
                        message_id=self.first_message.message_id, text=html,
                        parse_mode=ParseMode.HTML,
                    )
            else:
                continue  # no drafts: the reply is sent whole at the end
            self.shown = text
            self._visible.set()

    async def _stop_tasks(self) -> None:
        self._visible.set()
        for task in (self._typing, self._updater):
            task.cancel()
        await asyncio.gather(self._typing, self._updater, return_exceptions=True)

    async def abandon(self) -> None:
        await self._stop_tasks()

    async def finish(self, text: str) -> None:
        """Show the complete reply: the streamed message is edited to its final first part
        (groups) and the rest follows as new messages; a draft is finished by sendMessage."""
        await self._stop_tasks()
        adapter = self.adapter
        if not text.strip():
            text = "…"
        if self.first_message is None:
            await adapter._send_final(self.message, text, group=self.group)
            return
        chunks = split_html(to_html(text))
        try:
            await adapter.call(
                self.chat_id, True, adapter.application.bot.edit_message_text, final=True,
                edit=True, chat_id=self.chat_id, message_id=self.first_message.message_id,
                text=chunks[0], parse_mode=ParseMode.HTML,
            )
            rest = chunks[1:]
            if rest:
                await adapter._send_chunks(self.message, rest, ParseMode.HTML, group=False)
        except BadRequest as exc:
            log.warning("telegram: HTML refused (%s); sending plain text", exc.message)
            plain = split_plain(to_plain(to_html(text)))
            await adapter.call(
                self.chat_id, True, adapter.application.bot.edit_message_text, final=True,
                edit=True, chat_id=self.chat_id, message_id=self.first_message.message_id,
                text=plain[0],
            )
            if plain[1:]:
                await adapter._send_chunks(self.message, plain[1:], None, group=False)


def _utf16_to_index(text: str, units: int) -> int:
    """The str index of the character at UTF-16 offset ``units`` (Telegram's offsets)."""
    count = 0
    for index, char in enumerate(text):
        if count >= units:
            return index
        count += 2 if ord(char) > 0xFFFF else 1
    return len(text)
