"""botkit on Discord: the ``discord`` channel adapter, on discord.py 2.7.

Answers DMs always and, in servers, messages that mention the bot, reply to it, or are
posted in the channels configured to be answered in full; threads are answered in the
thread. Replies stream: a typing indicator, then the first part sent as a reply and
edited as text arrives (at most every ``edit_interval_s``), the final text always
landing; long replies are split at 2000 characters with code fences kept balanced.
Every message is sent with ``AllowedMentions.none()``: the model can never ping
``@everyone``, a role or a user. Slash commands: ``/ask``, ``/reset``, ``/persona``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from botkit.adapters import Adapter, Clock, MonotonicClock
from botkit.engine import IncomingMessage
from botkit.errors import (
    AdapterError,
    ConfigError,
    EmptyMessageError,
    GenerationTimeout,
    GeneratorBusy,
)
from botkit_discord.render import readable_mentions, split_message, strip_own_mention

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine

__all__ = ["DiscordAdapter", "DiscordSettings"]

log = logging.getLogger(__name__)
CHANNEL = "discord"
TOKEN_ENV = "BOTKIT_DISCORD_TOKEN"
PORTAL = "https://discord.com/developers/applications"
INTENT_HELP = (
    "Discord is not sending message text to this bot: turn on 'Message Content Intent' "
    f"under Bot > Privileged Gateway Intents in the developer portal ({PORTAL}), then "
    "restart botkit. Until then the bot answers only DMs, mentions and slash commands."
)
NO_MENTIONS = discord.AllowedMentions.none()
T = TypeVar("T")


@dataclass(frozen=True)
class DiscordSettings:
    """``[adapters.discord]``. The token comes from BOTKIT_DISCORD_TOKEN only."""

    persona: str | None = None
    """Persona for Discord conversations (default: ``[bot] default_persona``)."""
    answer_channels: tuple[int, ...] = ()
    """Channel ids where every message is answered (and threads inside them)."""
    command_guilds: tuple[int, ...] = ()
    """Guild ids to sync the slash commands to at start (instant); empty: global sync
    (Discord may take up to an hour to show new commands everywhere)."""
    edit_interval_s: float = 1.5
    """Least time between two edits of a streaming reply."""
    max_ratelimit_timeout_s: float = 60.0
    """discord.py waits out 429s up to this long; longer ones raise RateLimited, which
    the adapter waits out itself for a final reply."""
    max_retries: int = 5
    """Retries of a final reply after RateLimited before it is given up (logged)."""


def _ids(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"[adapters.discord] {key} must be a list of ids")
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"[adapters.discord] {key} must be a list of numeric ids") from None


class DiscordAdapter(Adapter):
    """The Discord channel. ``http`` replaces discord.py's HTTP client in tests (a
    :class:`discord.http.HTTPClient` subclass that answers like Discord); ``clock``
    replaces the time for edit pacing."""

    name = "discord"

    def __init__(
        self,
        engine: DialogueEngine,
        config: Any = None,
        *,
        token: str | None = None,
        http: Any = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(engine, config)
        self.settings: DiscordSettings = self.config
        self.token = token or os.environ.get(TOKEN_ENV, "")
        if not self.token:
            raise ConfigError(
                f"the Discord adapter needs the bot token (developer portal > Bot > Reset "
                f"Token) in {TOKEN_ENV}"
            )
        self.clock: Clock = clock or MonotonicClock()
        intents = discord.Intents.default()
        intents.message_content = True
        self.client = discord.Client(
            intents=intents, allowed_mentions=NO_MENTIONS,
            max_ratelimit_timeout=self.settings.max_ratelimit_timeout_s,
        )
        if http is not None:
            self.client.http = http
            self.client._connection.http = http
        self.tree = app_commands.CommandTree(self.client)
        self._add_commands()
        self.client.event(self.on_message)
        self.client.event(self.on_ready)
        self._gateway: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._intent_warned = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_edit: dict[int, float] = {}

    @classmethod
    def validate_config(cls, raw: dict[str, Any]) -> DiscordSettings:
        known = {f.name for f in fields(DiscordSettings)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"[adapters.discord] has unknown key(s): {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        values = dict(raw)
        for key in ("answer_channels", "command_guilds"):
            if key in values:
                values[key] = _ids(values[key], key)
        settings = DiscordSettings(**values)
        if settings.persona is not None and not isinstance(settings.persona, str):
            raise ConfigError("[adapters.discord] persona must be a persona name")
        for key in ("edit_interval_s", "max_ratelimit_timeout_s"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[adapters.discord] {key} must be a positive number")
        if settings.max_ratelimit_timeout_s < 30:
            raise ConfigError("[adapters.discord] max_ratelimit_timeout_s must be at least 30 "
                              "(discord.py's minimum)")
        if not isinstance(settings.max_retries, int) or settings.max_retries < 0:
            raise ConfigError("[adapters.discord] max_retries must be a whole number >= 0")
        return settings

    # -- lifecycle -------------------------------------------------------------------------

    async def login(self) -> None:
        """Check the token with Discord (``GET /users/@me``); register team delivery."""
        persona = self.settings.persona
        if persona is not None and persona not in self.engine.personas:
            raise ConfigError(f"[adapters.discord] persona {persona!r} is not a loaded persona")
        try:
            await self.client.login(self.token)
        except discord.LoginFailure:
            raise AdapterError(
                f"Discord refused the token in {TOKEN_ENV}; reset it in the developer portal "
                f"({PORTAL}, Bot > Reset Token) and set it again"
            ) from None
        except (discord.HTTPException, OSError) as exc:
            raise AdapterError(f"cannot reach Discord to log in: {exc}") from None
        self.engine.register_delivery(CHANNEL, self.deliver)

    async def start(self) -> None:
        await self.login()
        self._gateway = asyncio.create_task(self._connect())
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({self._gateway, ready}, timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._gateway in done:
            ready.cancel()
            self._gateway.result()  # raises the gateway's failure
            raise AdapterError("the Discord gateway closed before the bot was ready")
        if not done:
            ready.cancel()
            log.warning("discord: not ready after 60 s; still trying to connect")

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error("discord: %s", INTENT_HELP)
            raise AdapterError(INTENT_HELP) from None

    async def stop(self, grace_s: float = 30.0) -> None:
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.client.close()
        if self._gateway is not None:
            self._gateway.cancel()
            with contextlib.suppress(BaseException):
                await self._gateway

    async def deliver(self, conversation: Any, text: str) -> None:
        """Send a message from the support team (human handoff) to the conversation's
        channel, thread or DM."""
        key = conversation.chat_key
        target: Any
        if key.startswith("dm:"):
            user_id = int(key[3:])
            user = self.client.get_user(user_id) or await self.client.fetch_user(user_id)
            target = user.dm_channel or await user.create_dm()
        else:
            channel_id = int(key)
            target = (self.client.get_channel(channel_id)
                      or await self.client.fetch_channel(channel_id))
        for chunk in split_message(text) or ["…"]:
            await self.call(target.send, chunk, allowed_mentions=NO_MENTIONS, final=True)

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("discord: logged in as %s (%s)", user, user.id if user else "?")
        try:
            if self.settings.command_guilds:
                for guild_id in self.settings.command_guilds:
                    guild = discord.Object(id=guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except discord.HTTPException as exc:
            log.warning("discord: syncing slash commands failed: %s", exc)
        self._ready.set()

    # -- messages --------------------------------------------------------------------------

    def _addressed(self, message: discord.Message) -> bool:
        me = self.client.user
        if me is None:
            return False
        if isinstance(message.channel, discord.DMChannel):
            return True
        if me in message.mentions:
            return True
        reference = message.reference
        if reference is not None:
            resolved = reference.resolved or reference.cached_message
            if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
                return True
        channel_ids = {message.channel.id}
        parent = getattr(message.channel, "parent_id", None)
        if parent:
            channel_ids.add(parent)
        return bool(channel_ids & set(self.settings.answer_channels))

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return
        if not self._addressed(message):
            if message.guild is not None and _lost_text(message):
                self._warn_intent()
            return
        if not message.content and not message.attachments:
            if _lost_text(message):
                self._warn_intent()
            return
        task = asyncio.create_task(self._guarded(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _warn_intent(self) -> None:
        if not self._intent_warned:
            self._intent_warned = True
            log.error("discord: a message arrived without its text. %s", INTENT_HELP)

    async def _guarded(self, message: discord.Message) -> None:
        try:
            await self._answer(message)
        except Exception:
            log.exception("discord: message %s in channel %s failed", message.id,
                          message.channel.id)

    def _text(self, message: discord.Message) -> str:
        me = self.client.user
        text = strip_own_mention(message.content, me.id) if me else message.content
        names = {u.id: u.display_name for u in message.mentions if not me or u.id != me.id}
        roles = {r.id: r.name for r in message.role_mentions}
        channels = {c.id: getattr(c, "name", str(c.id)) for c in message.channel_mentions}
        return readable_mentions(text, names, roles, channels).strip()

    def _incoming(self, author: discord.abc.User, channel: Any, text: str,
                  message_id: int | None) -> IncomingMessage:
        if isinstance(channel, discord.DMChannel) or channel is None:
            chat_key = f"dm:{author.id}"
        else:
            chat_key = str(channel.id)  # a thread has its own id: its own conversation
        return IncomingMessage(
            channel=CHANNEL, chat_key=chat_key, user_key=str(author.id), text=text,
            platform_message_id=None if message_id is None else str(message_id),
            user_name=getattr(author, "display_name", None) or author.name,
        )

    async def _answer(self, message: discord.Message) -> None:
        text = self._text(message)
        incoming = self._incoming(message.author, message.channel, text, message.id)
        stream = _Stream(self, message.channel, reply_to=message)
        reply = self.engine.respond(incoming, persona=self.settings.persona)
        try:
            async with stream.typing():
                async with reply:
                    async for piece in reply:
                        await stream.add(piece)
            if reply.duplicate or (reply.handoff and not reply.text):
                # A retry, or a person owns the chat: the bot has nothing to say.
                stream.abandon()
                return
            await stream.finish(reply.text)
        except EmptyMessageError:
            await stream.finish(self._help())
        except GeneratorBusy:
            await stream.finish("Sorry, I'm very busy right now. Please try again in a minute.")
        except GenerationTimeout:
            await stream.finish("Sorry, I couldn't finish that answer. Please try again.")
        except (discord.DiscordException, asyncio.CancelledError):
            raise
        except Exception:
            await stream.finish("Sorry, something went wrong on my side. Please try again.")
            raise
        finally:
            stream.abandon()  # an update still running after a failure or a cancel

    def _help(self) -> str:
        persona = self.engine.persona(self.settings.persona)
        return (f"I'm {persona.display_name}. Mention me, reply to my messages or use "
                "`/ask`; `/reset` starts a new conversation.")

    async def call(self, method: Callable[..., Awaitable[T]], *args: Any, final: bool,
                   **kwargs: Any) -> T | None:
        """A Discord call; a RateLimited (a 429 longer than discord.py waits) is waited out
        and a final call retried; an interim one (an edit) is skipped."""
        attempts = self.settings.max_retries + 1 if final else 1
        for _ in range(attempts):
            try:
                return await method(*args, **kwargs)
            except discord.RateLimited as exc:
                log.warning("discord: rate limited for %.1f s", exc.retry_after)
                if not final:
                    return None
                await self.clock.sleep(exc.retry_after)
        log.error("discord: gave up a reply after %d rate-limited attempts", attempts)
        return None

    def edit_delay(self, key: int) -> float:
        return max(0.0, self._next_edit.get(key, 0.0) - self.clock.now())

    def booked_edit(self, key: int) -> None:
        self._next_edit[key] = self.clock.now() + self.settings.edit_interval_s

    # -- slash commands --------------------------------------------------------------------

    def _add_commands(self) -> None:
        @self.tree.command(name="ask", description="Ask the bot a question")
        @app_commands.describe(question="What do you want to know?")
        async def ask(interaction: discord.Interaction[Any], question: str) -> None:
            await self._ask(interaction, question)

        @self.tree.command(name="reset", description="Start a new conversation")
        async def reset(interaction: discord.Interaction[Any]) -> None:
            incoming = self._incoming(interaction.user, interaction.channel, "", None)
            persona = self.engine.persona(self.settings.persona)
            await self.engine.new_conversation(
                CHANNEL, incoming.chat_key, incoming.user_key, persona=persona.name,
                user_name=incoming.user_name,
            )
            await interaction.response.send_message(
                "Started a new conversation.", ephemeral=True, allowed_mentions=NO_MENTIONS,
            )

        @self.tree.command(name="persona", description="Who is answering here")
        async def persona(interaction: discord.Interaction[Any]) -> None:
            incoming = self._incoming(interaction.user, interaction.channel, "", None)
            current = await self.engine.store.latest_conversation(CHANNEL, incoming.chat_key)
            name = current.persona if current and current.persona in self.engine.personas \
                else self.settings.persona
            chosen = self.engine.persona(name)
            tuned = " (fine-tuned)" if chosen.adapter is not None else ""
            await interaction.response.send_message(
                f"You are talking to **{chosen.display_name}** (persona `{chosen.name}`"
                f"{tuned}).", ephemeral=True, allowed_mentions=NO_MENTIONS,
            )

    async def _ask(self, interaction: discord.Interaction[Any], question: str) -> None:
        # Generation can take longer than the 3 s Discord allows: acknowledge at once.
        await interaction.response.defer(thinking=True)
        incoming = self._incoming(interaction.user, interaction.channel, question,
                                  interaction.id)
        reply = self.engine.respond(incoming, persona=self.settings.persona)
        failure: Exception | None = None
        try:
            text = await reply.collect()
        except EmptyMessageError:
            text = self._help()
        except GeneratorBusy:
            text = "Sorry, I'm very busy right now. Please try again in a minute."
        except GenerationTimeout:
            text = "Sorry, I couldn't finish that answer. Please try again."
        except Exception as exc:  # answered, not left "thinking..."; then logged by the tree
            text = "Sorry, something went wrong on my side. Please try again."
            failure = exc
        chunks = split_message(text or "…")
        await self.call(interaction.edit_original_response, content=chunks[0],
                        allowed_mentions=NO_MENTIONS, final=True)
        for chunk in chunks[1:]:
            await self.call(interaction.followup.send, chunk, allowed_mentions=NO_MENTIONS,
                            final=True)
        if failure is not None:
            raise failure


def _lost_text(message: discord.Message) -> bool:
    """Whether a message looks stripped of its text by a missing Message Content Intent:
    a user's message with nothing in it. System messages (joins, pins, ...) and sticker,
    poll or forwarded messages have no text of their own."""
    return (not message.is_system() and not message.content and not message.attachments
            and not message.embeds and not message.stickers and message.poll is None
            and not message.message_snapshots)


class _Stream:
    """One reply being shown: the first part sent as a reply, edited as text arrives (at
    most every ``edit_interval_s``), the rest sent when the reply is complete."""

    def __init__(self, adapter: DiscordAdapter, channel: Any, *,
                 reply_to: discord.Message) -> None:
        self.adapter = adapter
        self.channel = channel
        self.reply_to = reply_to
        self.text = ""
        self.shown = ""
        self.first: discord.Message | None = None
        self.first_part = ""
        self._changed = asyncio.Event()
        self._updater: asyncio.Task[None] | None = None
        # Held while the first part is being sent: cancelling that send midway could
        # leave the message posted but unknown here, and sent again by finish().
        self._sending = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def typing(self) -> Any:
        try:
            typing = self.channel.typing()
            await typing.__aenter__()
        except discord.HTTPException:
            typing = None
        try:
            yield
        finally:
            if typing is not None:
                with contextlib.suppress(Exception):
                    await typing.__aexit__(None, None, None)

    async def add(self, piece: str) -> None:
        self.text += piece
        self._changed.set()
        if self._updater is None:
            self._updater = asyncio.create_task(self._update_loop())

    async def _update_loop(self) -> None:
        adapter = self.adapter
        key = self.channel.id
        while True:
            await self._changed.wait()
            delay = adapter.edit_delay(key)
            if delay > 0:
                await adapter.clock.sleep(delay)
            self._changed.clear()
            text = self.text
            if not text.strip() or text == self.shown:
                continue
            part = split_message(text)[0]
            adapter.booked_edit(key)
            if self.first is None:
                async with self._sending:
                    self.first = await adapter.call(
                        self.reply_to.reply, part, mention_author=False,
                        allowed_mentions=NO_MENTIONS, final=False,
                    )
                if self.first is not None:
                    self.first_part = part
            elif await adapter.call(self.first.edit, content=part,
                                    allowed_mentions=NO_MENTIONS, final=False) is not None:
                self.first_part = part
            self.shown = text

    def abandon(self) -> None:
        if self._updater is not None and not self._updater.done():
            self._updater.cancel()

    async def finish(self, text: str) -> None:
        if self._updater is not None:
            async with self._sending:  # a first part on its way lands first
                self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
        adapter = self.adapter
        chunks = split_message(text) or ["…"]
        if self.first is None:
            self.first = await adapter.call(
                self.reply_to.reply, chunks[0], mention_author=False,
                allowed_mentions=NO_MENTIONS, final=True,
            )
        elif self.first_part != chunks[0]:
            delay = adapter.edit_delay(self.channel.id)
            if delay > 0:
                await adapter.clock.sleep(delay)
            adapter.booked_edit(self.channel.id)
            await adapter.call(self.first.edit, content=chunks[0],
                               allowed_mentions=NO_MENTIONS, final=True)
        for chunk in chunks[1:]:
            await adapter.call(self.channel.send, chunk, allowed_mentions=NO_MENTIONS,
                               final=True)

