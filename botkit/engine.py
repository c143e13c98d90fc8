"""The dialogue engine: one message in, one streamed reply out.

This is the path every channel shares (see DESIGN.md): clean and check the input,
store the user's turn (once per platform message id), build the prompt within the
token budget, stream the generator's reply, and store the reply once it is complete.
A failed reply leaves the user's turn and no half reply; a cancelled one (the server
stopping, the user leaving) is stored as far as it was sent, flagged ``interrupted``,
so the transcript shows what the user saw and training never uses it. No platform SDK
is imported here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from botkit.context import build_prompt
from botkit.errors import EmptyMessageError, GenerationTimeout, MessageTooLongError
from botkit.generation import ChatMessage, GenerationRequest, Generator
from botkit.handoff_rules import asks_for_human, closed_notice, handoff_notice
from botkit.memory import (
    ConsoleUserRecord,
    ConversationRecord,
    ConversationStore,
    MessageRecord,
    StateConflict,
)
from botkit.personas import Persona, PersonaRegistry

#: Delivers a message from the team to a conversation's chat on its platform:
#: ``deliver(conversation, text)``. Adapters register one per channel.
Deliverer = Callable[[ConversationRecord, str], Awaitable[None]]
#: States in which a human owns the chat and the bot stays silent.
HUMAN_STATES = ("waiting_for_agent", "agent")

log = logging.getLogger(__name__)
#: One line per turn (conversation, persona, tokens, timings); message text only at DEBUG.
turn_log = logging.getLogger("botkit.turns")

# Roles stored in memory that the model sees as the assistant speaking.
_ASSISTANT_ROLES = {"assistant", "agent"}


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A user's message, normalised by a channel adapter."""

    channel: str
    """The adapter's name, e.g. ``terminal``, ``telegram``."""
    chat_key: str
    """The platform's chat, channel or thread id: one conversation at a time per key."""
    user_key: str
    """The platform's id of the person who wrote it."""
    text: str
    platform_message_id: str | None = None
    """Used to answer a platform's retried delivery only once."""
    user_name: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def clean_text(text: str) -> str:
    """Make user text safe to store and tokenise.

    Lone surrogates (from a broken client) become U+FFFD, ``\\r\\n`` becomes ``\\n``,
    and control characters other than newline and tab are removed.
    """
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc"
    ).strip()


class Reply:
    """A reply being streamed: iterate it for text pieces, then read what was stored.

    ``async for piece in reply`` yields the text as it is generated. Afterwards
    ``text`` holds the whole reply, ``message_id`` the stored row (None when nothing was
    stored), ``duplicate`` is True when the platform message was already answered, and
    ``notice`` is True when the text is botkit's own (e.g. "message too long"), not the
    model's. ``aclose()`` (or leaving the ``async with`` block) cancels generation.
    """

    def __init__(self) -> None:
        self._pieces: AsyncIterator[str] | None = None
        self.text = ""
        self.message_id: int | None = None
        self.conversation_id: int | None = None
        self.duplicate = False
        self.notice = False
        self.persona: str | None = None
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        """Seconds from ``respond()`` to the first piece of text."""
        self.duration_s: float | None = None
        """Seconds from ``respond()`` to the stored reply (None until it is complete)."""
        self.prompt_tokens = 0
        self.reply_tokens = 0
        self.handoff: str | None = None
        """``waiting_for_agent`` or ``agent`` when a person owns (or was asked to own) the
        chat: the bot did not answer (or answered only with the handoff notice)."""

    def __aiter__(self) -> AsyncIterator[str]:
        assert self._pieces is not None, "a Reply comes from DialogueEngine.respond()"
        return self._pieces

    async def aclose(self) -> None:
        if self._pieces is not None:
            await self._pieces.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Reply:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def collect(self) -> str:
        """Consume the whole reply and return its text."""
        async for _ in self:
            pass
        return self.text


class DialogueEngine:
    """Turns :class:`IncomingMessage` into streamed replies, remembering everything in SQL."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        generator: Generator,
        personas: PersonaRegistry,
        default_persona: str = "pine",
        max_message_chars: int = 4000,
        generation_timeout_s: float = 120.0,
    ) -> None:
        self.store = store
        self.generator = generator
        self.personas = personas
        self.default_persona = personas[default_persona].name
        self.max_message_chars = max_message_chars
        self.generation_timeout_s = generation_timeout_s
        self._adapter_versions: dict[str, str] = {}
        self._deliverers: dict[str, Deliverer] = {}

    async def load_adapters(self) -> None:
        """Load every persona's LoRA adapter into the generator (off the event loop)."""
        for persona in self.personas.values():
            if persona.adapter is not None:
                version = await asyncio.to_thread(
                    self.generator.load_adapter, persona.name, str(persona.adapter)
                )
                self._adapter_versions[persona.name] = version
                log.info("persona %s uses adapter %s (%s)", persona.name, persona.adapter, version)

    # -- human handoff -----------------------------------------------------------------

    def register_delivery(self, channel: str, deliver: Deliverer) -> None:
        """How messages from the team reach ``channel``'s chats (adapters call this)."""
        self._deliverers[channel] = deliver

    async def _ask_for_human(
        self, conversation: ConversationRecord, persona: Persona, message: IncomingMessage,
        reply: Reply, reason: str,
    ) -> str:
        """Queue the chat for a person (or say when people are around); the user's notice."""
        now = datetime.now(UTC)
        hours = persona.support_hours
        if hours is not None and not hours.is_open(now):
            return closed_notice(hours, now)
        try:
            await self.store.change_state(
                conversation.id, "waiting_for_agent", actor=f"user:{message.user_key}",
                expect=("bot",), reason=reason,
            )
        except StateConflict as exc:
            log.info("conversation %s: %s", conversation.id, exc)
        reply.handoff = "waiting_for_agent"
        log.info("conversation %s (%s) is waiting for a person", conversation.id,
                 conversation.channel)
        return handoff_notice(persona.display_name, hours, now)

    async def _deliver(self, conversation: ConversationRecord, text: str) -> bool:
        deliver = self._deliverers.get(conversation.channel)
        if deliver is None:
            # The web widget reads new messages from memory itself; other channels need
            # their adapter running in this process.
            if conversation.channel != "web":
                log.warning("no %s adapter in this process delivers to conversation %s; "
                            "the message is stored only", conversation.channel, conversation.id)
            return False
        try:
            await deliver(conversation, text)
        except Exception:
            log.exception("delivering to conversation %s (%s) failed", conversation.id,
                          conversation.channel)
            return False
        return True

    async def _team_message(
        self, conversation: ConversationRecord, agent: ConsoleUserRecord, text: str
    ) -> MessageRecord:
        record = await self.store.add_message(
            conversation.id, role="agent", text=text, agent_id=agent.id,
            token_count=self.generator.count_text(text),
        )
        assert record is not None
        await self._deliver(conversation, text)
        return record

    async def claim(self, conversation_id: int, agent: ConsoleUserRecord) -> ConversationRecord:
        """``agent`` takes the conversation over; a second claim gets StateConflict."""
        conversation = await self.store.change_state(
            conversation_id, "agent", actor=f"agent:{agent.username}",
            expect=("waiting_for_agent", "bot"), agent_id=agent.id, reason="claimed",
        )
        await self._team_message(
            conversation, agent, f"{agent.name} from our team has joined the chat."
        )
        return conversation

    async def agent_reply(
        self, conversation_id: int, agent: ConsoleUserRecord, text: str
    ) -> MessageRecord:
        """Store ``agent``'s reply with their identity and deliver it on the chat's channel."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise StateConflict(conversation_id, "closed", "agent")
        if conversation.state != "agent" or (
            conversation.agent_id != agent.id and agent.role != "operator"
        ):
            raise StateConflict(conversation_id, conversation.state, "agent")
        return await self._team_message(conversation, agent, self.check_input(text))

    async def hand_back(self, conversation_id: int, agent: ConsoleUserRecord) -> ConversationRecord:
        """Give the conversation back to the bot, with a note so it carries on sensibly."""
        conversation = await self.store.change_state(
            conversation_id, "bot", actor=f"agent:{agent.username}",
            expect=("agent", "waiting_for_agent"), reason="handed back",
        )
        persona = self.persona(conversation.persona)
        await self.store.add_message(
            conversation.id, role="system",
            text=(f"A member of the support team ({agent.name}) answered the user above and "
                  f"has handed the conversation back to you, {persona.display_name}. "
                  "Continue helping the user from here."),
        )
        await self._deliver(conversation, f"{persona.display_name} is back to help you. "
                                          "Ask me anything.")
        return conversation

    async def close(self, conversation_id: int, agent: ConsoleUserRecord) -> ConversationRecord:
        """End the conversation; the user's next message starts a new one."""
        conversation = await self.store.change_state(
            conversation_id, "closed", actor=f"agent:{agent.username}", reason="closed",
        )
        await self._deliver(conversation, "This conversation has been closed. Write again any "
                                          "time to start a new one.")
        return conversation

    async def _store_interrupted(
        self, reply: Reply, conversation_id: int, persona: Persona, text: str
    ) -> None:
        """Keep what the user already saw of a reply that was cut off."""
        try:
            record = await asyncio.shield(self.store.add_message(
                conversation_id,
                role="assistant",
                text=text,
                token_count=self.generator.count_text(text),
                persona=persona.name,
                adapter_version=self._adapter_versions.get(persona.name),
                interrupted=True,
            ))
        except (Exception, asyncio.CancelledError) as exc:
            _shielded_store_error(exc)
            return
        reply.message_id = record.id if record else None
        reply.reply_tokens = (record.token_count or 0) if record else 0

    def persona(self, name: str | None = None) -> Persona:
        return self.personas[name or self.default_persona]

    def check_input(self, text: str) -> str:
        """The cleaned text, or an :class:`InputError` saying why it cannot be used."""
        cleaned = clean_text(text)
        if not cleaned:
            raise EmptyMessageError("the message is empty")
        if len(cleaned) > self.max_message_chars:
            raise MessageTooLongError(len(cleaned), self.max_message_chars)
        return cleaned

    async def new_conversation(
        self, channel: str, chat_key: str, user_key: str, *, persona: str | None = None,
        user_name: str | None = None,
    ) -> ConversationRecord:
        """Close the chat's current conversation and start a fresh one (``/reset``)."""
        user = await self.store.upsert_user(channel, user_key, user_name)
        return await self.store.start_conversation(
            channel, chat_key, persona=self.persona(persona).name, user_id=user.id
        )

    async def transcript(self, channel: str, chat_key: str) -> list[MessageRecord]:
        """The messages of the chat's open conversation, oldest first (for ``--resume``)."""
        conversation = await self.store.latest_conversation(channel, chat_key)
        if conversation is None:
            return []
        return await self.store.messages(conversation.id)

    def respond(self, message: IncomingMessage, *, persona: str | None = None) -> Reply:
        """Answer ``message``; iterate the returned :class:`Reply` to stream it.

        Raises (on first iteration) :class:`EmptyMessageError` for an empty message and
        :class:`GenerationTimeout` when the model stalls; a too long message gets a polite
        notice instead of a model reply and is not sent to the model.
        """
        reply = Reply()
        reply._pieces = self._respond(message, persona, reply)
        return reply

    async def _respond(
        self, message: IncomingMessage, persona_name: str | None, reply: Reply
    ) -> AsyncIterator[str]:
        try:
            text = self.check_input(message.text)
        except MessageTooLongError as exc:
            reply.notice = True
            reply.text = (
                f"Sorry, your message is too long for me ({exc.length:,} characters; "
                f"the limit is {exc.limit:,}). Could you shorten it or send it in parts?"
            )
            yield reply.text
            return

        user = await self.store.upsert_user(message.channel, message.user_key, message.user_name)
        conversation = await self.store.current_conversation(
            message.channel, message.chat_key,
            persona=self.persona(persona_name).name, user_id=user.id,
        )
        persona = self.persona(conversation.persona)
        reply.conversation_id = conversation.id
        reply.persona = persona.name
        stored = await self.store.add_message(
            conversation.id,
            role="user",
            text=text,
            user_id=user.id,
            token_count=self.generator.count_text(text),
            platform_message_id=message.platform_message_id,
        )
        if stored is None:
            log.info(
                "%s message %s in chat %s was already answered; ignoring the retry",
                message.channel, message.platform_message_id, message.chat_key,
            )
            reply.duplicate = True
            return

        if conversation.state in HUMAN_STATES:
            # A person owns the chat: the message is stored for them, the bot says nothing.
            reply.handoff = conversation.state
            _log_turn(reply, message, "handoff")
            return
        reason = _handoff_reason(persona, text)
        if reason is not None:
            notice = await self._ask_for_human(conversation, persona, message, reply, reason)
            reply.notice = True
            reply.text = notice
            if reply.first_token_s is None:
                reply.first_token_s = time.perf_counter() - reply.started
            yield notice
            record = await self.store.add_message(
                conversation.id, role="assistant", text=notice, persona=persona.name,
                token_count=self.generator.count_text(notice),
            )
            reply.message_id = record.id if record else None
            reply.duration_s = time.perf_counter() - reply.started
            _log_turn(reply, message, "handoff")
            return

        history = await self.store.messages(conversation.id)
        prompt = build_prompt(persona, [_as_chat(m) for m in history], self.generator)
        if prompt.dropped_turns:
            log.debug(
                "conversation %s: %d old turns left out", conversation.id, prompt.dropped_turns
            )
        reply.prompt_tokens = prompt.prompt_tokens
        adapter = persona.name if persona.name in self._adapter_versions else None
        request = GenerationRequest(
            messages=prompt.messages,
            sampling=persona.generation.sampling(),
            adapter=adapter,
            request_id=uuid.uuid4().hex,
        )

        pieces: list[str] = []
        stream = self.generator.stream(request)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.generation_timeout_s):
                        piece = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise GenerationTimeout(
                        f"the model produced nothing for {self.generation_timeout_s:g} s; "
                        "the reply was abandoned"
                    ) from None
                if reply.first_token_s is None:
                    reply.first_token_s = time.perf_counter() - reply.started
                pieces.append(piece)
                reply.text += piece
                yield piece
        except BaseException as exc:
            cancelled = _is_cancel(exc)
            await stream.aclose()  # type: ignore[attr-defined]
            if cancelled and pieces:
                await self._store_interrupted(reply, conversation.id, persona, "".join(pieces))
            _log_turn(reply, message, "cancelled" if cancelled else "error")
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

        # A complete reply is stored; a failed one leaves no trace, and one cut off
        # (cancelled: the server stopping, the user resetting) is kept as far as it was
        # sent, flagged ``interrupted`` (never used for training).
        text_out = "".join(pieces)
        record = await self.store.add_message(
            conversation.id,
            role="assistant",
            text=text_out,
            token_count=self.generator.count_text(text_out),
            persona=persona.name,
            adapter_version=self._adapter_versions.get(persona.name),
        )
        reply.message_id = record.id if record else None
        reply.reply_tokens = (record.token_count or 0) if record else 0
        reply.duration_s = time.perf_counter() - reply.started
        _log_turn(reply, message, "ok")


def _handoff_reason(persona: Persona, text: str) -> str | None:
    """Why this message goes to a person (None: the bot answers it)."""
    if persona.escalation_keywords and asks_for_human(text, persona.escalation_keywords):
        return "asked for a human"
    if persona.handoff_topics and asks_for_human(text, persona.handoff_topics):
        return "a topic the persona hands to people"
    return None


def _shielded_store_error(exc: BaseException) -> None:
    log.warning("could not store an interrupted reply: %s", exc)


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _log_turn(reply: Reply, message: IncomingMessage, status: str) -> None:
    """One structured line per turn; the text goes in only when DEBUG logging is on."""
    if not turn_log.isEnabledFor(logging.INFO):
        return
    elapsed = time.perf_counter() - reply.started
    fields: dict[str, object] = {
        "event": "turn",
        "status": status,
        "channel": message.channel,
        "conversation_id": reply.conversation_id,
        "persona": reply.persona,
        "prompt_tokens": reply.prompt_tokens,
        "reply_tokens": reply.reply_tokens,
        "ttft_ms": None if reply.first_token_s is None else round(reply.first_token_s * 1000, 1),
        "reply_ms": round(elapsed * 1000, 1),
    }
    if turn_log.isEnabledFor(logging.DEBUG):
        fields["user_text"] = message.text
        fields["reply_text"] = reply.text
    turn_log.info(json.dumps(fields, ensure_ascii=False), extra={"turn": fields})


def _as_chat(message: MessageRecord) -> ChatMessage:
    role = "assistant" if message.role in _ASSISTANT_ROLES else message.role
    return ChatMessage(role, message.text)  # type: ignore[arg-type]
