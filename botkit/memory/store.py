"""ConversationStore: everything the engine remembers, behind one async API.

The engine and the handoff code see frozen records, never ORM objects or sessions, so
no lazy load can fire after a session has closed and nothing here leaks SQLAlchemy
errors: each public method runs inside ``map_errors``. Rules that must hold across
several botkit processes (a platform retry stored once, one open conversation per
chat) are enforced by UNIQUE constraints in the database, not by checks in Python.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import URL, Select, delete, func, or_, select, update
from sqlalchemy import text as sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from botkit.errors import MemoryStoreError, MigrationError
from botkit.memory import migrate
from botkit.memory.db import create_engine, describe_url, map_errors, normalize_url, probe
from botkit.memory.models import (
    CONSOLE_ROLES,
    CONVERSATION_STATES,
    MESSAGE_ROLES,
    ConsoleUser,
    Conversation,
    ConversationEvent,
    Feedback,
    Message,
    PersonaVersion,
    User,
    utcnow,
)
from botkit.memory.training import (
    TrainingDialogue,
    TrainingSelection,
    select_training_dialogues,
)

logger = logging.getLogger(__name__)

# Two processes racing to open the same chat's conversation: the loser retries once more.
_OPEN_ATTEMPTS = 3


@dataclass(frozen=True)
class UserRecord:
    id: int
    channel: str
    external_id: str
    display_name: str | None
    opted_out: bool
    created_at: datetime


@dataclass(frozen=True)
class ConversationRecord:
    id: int
    channel: str
    chat_key: str
    user_id: int | None
    persona: str
    state: str
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    agent_id: int | None = None
    """The console account that owns the conversation while its state is ``agent``."""


@dataclass(frozen=True)
class MessageRecord:
    id: int
    conversation_id: int
    user_id: int | None
    role: str
    text: str
    token_count: int | None
    persona: str | None
    adapter_version: str | None
    platform_message_id: str | None
    created_at: datetime
    interrupted: bool = False
    """A bot reply cut off when the server stopped: the text is what was sent so far."""
    agent_id: int | None = None
    """The console account that wrote an ``agent`` message."""


@dataclass(frozen=True)
class ConsoleUserRecord:
    id: int
    username: str
    display_name: str | None
    role: str
    password_hash: str
    disabled: bool
    created_at: datetime

    @property
    def name(self) -> str:
        return self.display_name or self.username


@dataclass(frozen=True)
class ConversationEventRecord:
    id: int
    conversation_id: int
    from_state: str
    to_state: str
    actor: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class PersonaVersionRecord:
    id: int
    persona: str
    version: int
    source: str
    """The persona's whole TOML as published."""
    author: str
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class QueueItem:
    """A conversation waiting for (or owned by) a human, as the console lists it."""

    conversation: ConversationRecord
    since: datetime
    """When it entered its current state."""
    user_name: str | None
    last_user_text: str | None
    """The user's newest message: what they want, at a glance."""


class StateConflict(MemoryStoreError):
    """A handoff change that lost a race or does not apply to the current state."""

    def __init__(self, conversation_id: int, current: str, wanted: str) -> None:
        super().__init__(
            f"conversation {conversation_id} is {current.replace('_', ' ')}, so it cannot "
            f"become {wanted.replace('_', ' ')}"
        )
        self.conversation_id = conversation_id
        self.current = current
        self.wanted = wanted


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    message_id: int
    user_id: int | None
    score: int
    comment: str | None
    created_at: datetime


def _record(cls: type[Any], row: Any) -> Any:
    return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


def _user(row: User) -> UserRecord:
    return _record(UserRecord, row)


def _conversation(row: Conversation) -> ConversationRecord:
    return _record(ConversationRecord, row)


def _message(row: Message) -> MessageRecord:
    return _record(MessageRecord, row)


def _feedback(row: Feedback) -> FeedbackRecord:
    return _record(FeedbackRecord, row)


def _jsonable(record: Any) -> dict[str, Any]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in dataclasses.asdict(record).items()
    }


def dedupe_key(channel: str, chat_key: str, platform_message_id: str) -> str:
    """The UNIQUE key that makes a platform's retry of one message a no-op."""
    return f"{channel}:{chat_key}:{platform_message_id}"


def _open_conversation(channel: str, chat_key: str) -> Select[Conversation]:
    return (
        select(Conversation)
        .where(
            Conversation.channel == channel,
            Conversation.chat_key == chat_key,
            Conversation.state != "closed",
        )
        .order_by(Conversation.id.desc())
        .limit(1)
    )


async def _lock_chat(session: AsyncSession, channel: str, chat_key: str) -> None:
    """Serialise opening and resetting one chat's conversation across processes.

    PostgreSQL only (an advisory lock released at commit); SQLite already lets one
    writer in at a time. Without it, simultaneous /resets of one chat collide on
    ``uq_conversations_open_chat`` instead of closing each other's conversation.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            sql("SELECT pg_advisory_xact_lock(hashtextextended(:chat, 0))"),
            {"chat": dedupe_key(channel, chat_key, "open-conversation")},
        )


class ConversationStore:
    """Users, conversations, messages and feedback in SQLite or PostgreSQL.

    Open with ``await ConversationStore.open(url)`` (or ``async with await ...open(url)``)
    and close with ``await store.close()``.
    """

    def __init__(self, engine: AsyncEngine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        sqlite_synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        auto_upgrade: bool = True,
    ) -> ConversationStore:
        """Connect, then bring the schema to botkit's head (or refuse when it is behind).

        Raises DatabaseUnavailable when the database cannot be reached and
        MigrationError when the schema is not the one this botkit needs.
        """
        db_url = normalize_url(url, password)
        engine = create_engine(
            db_url, sqlite_synchronous=sqlite_synchronous, busy_timeout_ms=busy_timeout_ms
        )
        try:
            await probe(engine)
            if auto_upgrade:
                await migrate.upgrade(db_url)
            else:
                at, needed = await migrate.current(db_url), migrate.head()
                if at != needed:
                    raise MigrationError(
                        f"the database schema is at {at or 'base (empty)'}, botkit needs "
                        f"{needed}; run `botkit db upgrade`"
                    )
        except BaseException:
            await engine.dispose()
            raise
        logger.info("conversation store open on %s", describe_url(db_url))
        return cls(engine, db_url)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The database URL with the password hidden, for logs and ``botkit config check``."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine, for code that needs its own queries (reports, exports)."""
        return self._engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    def _errors(self) -> Any:
        return map_errors(self._url)

    # -- users -------------------------------------------------------------------------

    async def upsert_user(
        self, channel: str, external_id: str, display_name: str | None = None
    ) -> UserRecord:
        """The user for (channel, external_id), created if new; a given name is updated."""
        with self._errors():
            async with self._transaction() as session:
                user = await session.scalar(
                    select(User).where(User.channel == channel, User.external_id == external_id)
                )
                if user is not None and display_name in (None, user.display_name):
                    return _user(user)
                # Insert-or-update in one statement, so two processes seeing a new user at
                # the same moment both end up with the same row.
                insert = (
                    postgresql.insert
                    if session.get_bind().dialect.name == "postgresql"
                    else sqlite.insert
                )
                values = insert(User).values(
                    channel=channel,
                    external_id=external_id,
                    display_name=display_name,
                    opted_out=False,
                    created_at=utcnow(),
                )
                name = func.coalesce(values.excluded.display_name, User.display_name)
                stmt = values.on_conflict_do_update(
                    index_elements=[User.channel, User.external_id],
                    set_={"display_name": name},
                ).returning(User)
                result = await session.scalars(stmt, execution_options={"populate_existing": True})
                return _user(result.one())

    async def set_opted_out(self, channel: str, external_id: str, opted_out: bool) -> bool:
        """Record whether a user opted out of training data; False if there is no such user.

        An opted-out user's conversations and messages are left out of every later
        training export (``training_conversations``); nothing already exported changes.
        """
        with self._errors():
            async with self._transaction() as session:
                found = await session.scalar(
                    update(User)
                    .where(User.channel == channel, User.external_id == external_id)
                    .values(opted_out=opted_out)
                    .returning(User.id)
                    .execution_options(synchronize_session=False)
                )
        if found is not None:
            logger.info("user %s on %s: opted_out=%s", external_id, channel, opted_out)
        return found is not None

    async def find_user(self, channel: str, external_id: str) -> UserRecord | None:
        with self._errors():
            async with self._transaction() as session:
                user = await session.scalar(
                    select(User).where(User.channel == channel, User.external_id == external_id)
                )
                return None if user is None else _user(user)

    # -- conversations -----------------------------------------------------------------

    async def latest_conversation(self, channel: str, chat_key: str) -> ConversationRecord | None:
        """The open (not closed) conversation of a chat, or None; creates nothing."""
        with self._errors():
            async with self._transaction() as session:
                found = await session.scalar(_open_conversation(channel, chat_key))
                return None if found is None else _conversation(found)

    async def current_conversation(
        self, channel: str, chat_key: str, *, persona: str, user_id: int | None
    ) -> ConversationRecord:
        """The open conversation of a chat, opened now if the chat has none."""
        with self._errors():
            for attempt in range(_OPEN_ATTEMPTS):
                try:
                    async with self._transaction() as session:
                        found = await session.scalar(_open_conversation(channel, chat_key))
                        if found is None:
                            await _lock_chat(session, channel, chat_key)
                            found = await session.scalar(_open_conversation(channel, chat_key))
                        if found is None:
                            found = Conversation(
                                channel=channel, chat_key=chat_key, user_id=user_id, persona=persona
                            )
                            session.add(found)
                            await session.flush()
                        return _conversation(found)
                except IntegrityError:
                    # Another process opened it between our SELECT and INSERT: use theirs.
                    if attempt == _OPEN_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

    async def start_conversation(
        self, channel: str, chat_key: str, *, persona: str, user_id: int | None
    ) -> ConversationRecord:
        """Close the chat's open conversation and open a new one, in one transaction (/reset)."""
        with self._errors():
            for attempt in range(_OPEN_ATTEMPTS):
                try:
                    async with self._transaction() as session:
                        await _lock_chat(session, channel, chat_key)
                        now = utcnow()
                        await session.execute(
                            update(Conversation)
                            .where(
                                Conversation.channel == channel,
                                Conversation.chat_key == chat_key,
                                Conversation.state != "closed",
                            )
                            .values(state="closed", closed_at=now, updated_at=now)
                            .execution_options(synchronize_session=False)
                        )
                        fresh = Conversation(
                            channel=channel, chat_key=chat_key, user_id=user_id, persona=persona
                        )
                        session.add(fresh)
                        await session.flush()
                        return _conversation(fresh)
                except IntegrityError:
                    # A concurrent /reset of the same chat won the race; close theirs too.
                    if attempt == _OPEN_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

    async def get_conversation(self, conversation_id: int) -> ConversationRecord | None:
        with self._errors():
            async with self._transaction() as session:
                found = await session.get(Conversation, conversation_id)
                return None if found is None else _conversation(found)

    async def set_state(self, conversation_id: int, state: str) -> ConversationRecord:
        """Move a conversation between bot, waiting_for_agent, agent and closed (handoff)."""
        if state not in CONVERSATION_STATES:
            known = ", ".join(CONVERSATION_STATES)
            raise ValueError(f"state must be one of {known}, not {state!r}")
        with self._errors():
            async with self._transaction() as session:
                found = await session.get(Conversation, conversation_id)
                if found is None:
                    raise MemoryStoreError(f"no conversation with id {conversation_id}")
                found.state = state
                found.updated_at = utcnow()
                if state == "closed" and found.closed_at is None:
                    found.closed_at = found.updated_at
                await session.flush()
                return _conversation(found)

    async def change_state(
        self,
        conversation_id: int,
        to_state: str,
        *,
        actor: str,
        expect: Sequence[str] | None = None,
        reason: str | None = None,
        agent_id: int | None = None,
    ) -> ConversationRecord:
        """Move a conversation to ``to_state`` if it is in one of ``expect``; record who.

        A compare-and-set in one transaction (``UPDATE ... WHERE state = <seen>``), so
        two agents claiming the same conversation, even from two processes on one
        PostgreSQL, cannot both win: the loser gets :class:`StateConflict`. ``agent_id``
        is kept while the state is ``agent`` and cleared otherwise.
        """
        if to_state not in CONVERSATION_STATES:
            known = ", ".join(CONVERSATION_STATES)
            raise ValueError(f"state must be one of {known}, not {to_state!r}")
        with self._errors():
            async with self._transaction() as session:
                found = await session.get(Conversation, conversation_id)
                if found is None:
                    raise MemoryStoreError(f"no conversation with id {conversation_id}")
                seen = found.state
                if (expect is not None and seen not in expect) or seen == "closed":
                    raise StateConflict(conversation_id, seen, to_state)
                now = utcnow()
                values: dict[str, Any] = {
                    "state": to_state, "updated_at": now,
                    "agent_id": agent_id if to_state == "agent" else None,
                }
                if to_state == "closed":
                    values["closed_at"] = now
                changed = await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id, Conversation.state == seen)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount != 1:  # type: ignore[attr-defined]
                    current = await session.scalar(
                        select(Conversation.state).where(Conversation.id == conversation_id)
                    )
                    raise StateConflict(conversation_id, current or "closed", to_state)
                session.add(ConversationEvent(
                    conversation_id=conversation_id, from_state=seen, to_state=to_state,
                    actor=actor, reason=reason, created_at=now,
                ))
                await session.flush()
                await session.refresh(found)
                return _conversation(found)

    async def state_events(self, conversation_id: int) -> list[ConversationEventRecord]:
        """The conversation's handoff history, oldest first."""
        with self._errors():
            async with self._transaction() as session:
                rows = await session.scalars(
                    select(ConversationEvent)
                    .where(ConversationEvent.conversation_id == conversation_id)
                    .order_by(ConversationEvent.id)
                )
                return [_record(ConversationEventRecord, row) for row in rows]

    async def handoff_queue(
        self, states: Sequence[str] = ("waiting_for_agent",), *, agent_id: int | None = None
    ) -> list[QueueItem]:
        """Conversations in ``states`` (longest waiting first), optionally one agent's."""
        since = (
            select(func.max(ConversationEvent.created_at))
            .where(ConversationEvent.conversation_id == Conversation.id)
            .scalar_subquery()
        )
        last_user = (
            select(Message.text)
            .where(Message.conversation_id == Conversation.id, Message.role == "user")
            .order_by(Message.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = (
            select(Conversation, since, User.display_name, last_user)
            .outerjoin(User, User.id == Conversation.user_id)
            .where(Conversation.state.in_(list(states)))
            .order_by(func.coalesce(since, Conversation.updated_at), Conversation.id)
        )
        if agent_id is not None:
            query = query.where(Conversation.agent_id == agent_id)
        with self._errors():
            async with self._transaction() as session:
                rows = (await session.execute(query)).all()
                return [
                    QueueItem(_conversation(c), when or c.updated_at, name, text)
                    for c, when, name, text in rows
                ]

    async def messages_after(self, conversation_id: int, after_id: int) -> list[MessageRecord]:
        """The conversation's messages newer than ``after_id``, oldest first (live views)."""
        with self._errors():
            async with self._transaction() as session:
                rows = await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation_id, Message.id > after_id)
                    .order_by(Message.id)
                )
                return [_message(row) for row in rows]

    # -- persona versions --------------------------------------------------------------

    async def add_persona_version(
        self, persona: str, source: str, *, author: str, comment: str | None = None
    ) -> PersonaVersionRecord:
        """Store a published persona as its next version number (1, 2, ...)."""
        with self._errors():
            for attempt in range(_OPEN_ATTEMPTS):
                try:
                    async with self._transaction() as session:
                        newest = await session.scalar(
                            select(func.max(PersonaVersion.version))
                            .where(PersonaVersion.persona == persona)
                        )
                        row = PersonaVersion(persona=persona, version=(newest or 0) + 1,
                                             source=source, author=author, comment=comment)
                        session.add(row)
                        await session.flush()
                        return _record(PersonaVersionRecord, row)
                except IntegrityError:
                    # Two operators published at once: the loser takes the next number.
                    if attempt == _OPEN_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")

    async def persona_versions(self, persona: str) -> list[PersonaVersionRecord]:
        """Every published version of ``persona``, newest first."""
        with self._errors():
            async with self._transaction() as session:
                rows = await session.scalars(
                    select(PersonaVersion).where(PersonaVersion.persona == persona)
                    .order_by(PersonaVersion.version.desc())
                )
                return [_record(PersonaVersionRecord, row) for row in rows]

    async def latest_persona_versions(self) -> list[PersonaVersionRecord]:
        """The newest version of every persona that has one."""
        newest = (
            select(PersonaVersion.persona, func.max(PersonaVersion.version).label("version"))
            .group_by(PersonaVersion.persona)
            .subquery()
        )
        with self._errors():
            async with self._transaction() as session:
                rows = await session.scalars(
                    select(PersonaVersion).join(
                        newest,
                        (PersonaVersion.persona == newest.c.persona)
                        & (PersonaVersion.version == newest.c.version),
                    ).order_by(PersonaVersion.persona)
                )
                return [_record(PersonaVersionRecord, row) for row in rows]

    # -- console accounts --------------------------------------------------------------

    async def add_console_user(
        self, username: str, *, role: str, password_hash: str, display_name: str | None = None
    ) -> ConsoleUserRecord:
        """A new console account; a taken username is a MemoryStoreError saying so."""
        if role not in CONSOLE_ROLES:
            raise ValueError(f"role must be one of {', '.join(CONSOLE_ROLES)}, not {role!r}")
        with self._errors():
            try:
                async with self._transaction() as session:
                    row = ConsoleUser(username=username, role=role, password_hash=password_hash,
                                      display_name=display_name)
                    session.add(row)
                    await session.flush()
                    return _record(ConsoleUserRecord, row)
            except IntegrityError:
                raise MemoryStoreError(f"the console user {username!r} exists already") from None

    async def console_user(
        self, *, username: str | None = None, user_id: int | None = None
    ) -> ConsoleUserRecord | None:
        with self._errors():
            async with self._transaction() as session:
                query = select(ConsoleUser)
                query = (query.where(ConsoleUser.username == username) if username is not None
                         else query.where(ConsoleUser.id == user_id))
                row = await session.scalar(query)
                return None if row is None else _record(ConsoleUserRecord, row)

    async def set_console_password(self, username: str, password_hash: str) -> bool:
        with self._errors():
            async with self._transaction() as session:
                changed = await session.execute(
                    update(ConsoleUser).where(ConsoleUser.username == username)
                    .values(password_hash=password_hash)
                )
                return bool(changed.rowcount)  # type: ignore[attr-defined]

    # -- messages ----------------------------------------------------------------------

    async def add_message(
        self,
        conversation_id: int,
        *,
        role: str,
        text: str,
        user_id: int | None = None,
        token_count: int | None = None,
        persona: str | None = None,
        adapter_version: str | None = None,
        platform_message_id: str | None = None,
        interrupted: bool = False,
        agent_id: int | None = None,
    ) -> MessageRecord | None:
        """Store one turn; None (and nothing stored) when this platform message was seen.

        The duplicate check is the UNIQUE ``dedupe_key``, so it holds across processes
        and across ``/reset`` (the key names the chat, not the conversation).
        """
        if role not in MESSAGE_ROLES:
            raise ValueError(f"role must be one of {', '.join(MESSAGE_ROLES)}, not {role!r}")
        key: str | None = None
        with self._errors():
            try:
                async with self._transaction() as session:
                    conversation = await session.get(Conversation, conversation_id)
                    if conversation is None:
                        raise MemoryStoreError(f"no conversation with id {conversation_id}")
                    if platform_message_id is not None:
                        key = dedupe_key(
                            conversation.channel, conversation.chat_key, platform_message_id
                        )
                    message = Message(
                        conversation_id=conversation_id,
                        user_id=user_id,
                        role=role,
                        text=text,
                        token_count=token_count,
                        persona=persona,
                        adapter_version=adapter_version,
                        platform_message_id=platform_message_id,
                        dedupe_key=key,
                        interrupted=interrupted,
                        agent_id=agent_id,
                    )
                    session.add(message)
                    conversation.updated_at = utcnow()
                    await session.flush()
                    return _message(message)
            except IntegrityError:
                if key is not None and await self._dedupe_key_exists(key):
                    logger.info("platform message %s already stored; skipped", key)
                    return None
                raise

    async def _dedupe_key_exists(self, key: str) -> bool:
        async with self._transaction() as session:
            found = await session.scalar(select(Message.id).where(Message.dedupe_key == key))
            return found is not None

    async def messages(
        self, conversation_id: int, *, limit: int | None = None
    ) -> list[MessageRecord]:
        """The conversation's messages, oldest first; with ``limit``, only the newest N."""
        query = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc())
        )
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._errors():
            async with self._transaction() as session:
                rows = (await session.scalars(query)).all()
                return [_message(row) for row in reversed(rows)]

    # -- feedback ----------------------------------------------------------------------

    async def add_feedback(
        self, message_id: int, *, user_id: int | None, score: int, comment: str | None = None
    ) -> int:
        """Record a thumbs up (+1) or down (-1) on a message; returns the feedback id."""
        if score not in (1, -1):
            raise ValueError(f"score must be +1 or -1, not {score!r}")
        with self._errors():
            async with self._transaction() as session:
                if await session.get(Message, message_id) is None:
                    raise MemoryStoreError(f"no message with id {message_id}")
                feedback = Feedback(
                    message_id=message_id, user_id=user_id, score=score, comment=comment
                )
                session.add(feedback)
                await session.flush()
                return feedback.id

    async def set_feedback(self, message_id: int, *, user_id: int, score: int) -> int:
        """A user's one vote on a message: a second vote replaces the first."""
        if score not in (1, -1):
            raise ValueError(f"score must be +1 or -1, not {score!r}")
        with self._errors():
            async with self._transaction() as session:
                if await session.get(Message, message_id) is None:
                    raise MemoryStoreError(f"no message with id {message_id}")
                await session.execute(
                    delete(Feedback).where(
                        Feedback.message_id == message_id, Feedback.user_id == user_id
                    )
                )
                feedback = Feedback(message_id=message_id, user_id=user_id, score=score)
                session.add(feedback)
                await session.flush()
                return feedback.id

    async def feedback_scores(self, message_ids: Sequence[int]) -> dict[int, int]:
        """The newest score given to each of ``message_ids`` (those without none are left out)."""
        if not message_ids:
            return {}
        with self._errors():
            async with self._transaction() as session:
                rows = await session.execute(
                    select(Feedback.message_id, Feedback.score)
                    .where(Feedback.message_id.in_(list(message_ids)))
                    .order_by(Feedback.id)
                )
                return {message_id: score for message_id, score in rows}

    async def chat_message(
        self, message_id: int, channel: str, chat_key: str
    ) -> MessageRecord | None:
        """Message ``message_id`` if it belongs to a conversation of that chat, else None.

        What a channel uses to check that a client names only its own messages.
        """
        with self._errors():
            async with self._transaction() as session:
                row = await session.scalar(
                    select(Message)
                    .join(Conversation, Conversation.id == Message.conversation_id)
                    .where(
                        Message.id == message_id,
                        Conversation.channel == channel,
                        Conversation.chat_key == chat_key,
                    )
                )
                return _message(row) if row is not None else None

    # -- training data -----------------------------------------------------------------

    async def training_conversations(
        self,
        *,
        persona: str | None = None,
        since: datetime | None = None,
        feedback: bool = True,
        agent_replies: bool = False,
    ) -> list[TrainingDialogue]:
        """Conversations worth fine-tuning on, oldest first; see ``training_selection``."""
        selection = await self.training_selection(
            persona=persona, since=since, feedback=feedback, agent_replies=agent_replies
        )
        return selection.dialogues

    async def training_selection(
        self,
        *,
        persona: str | None = None,
        since: datetime | None = None,
        feedback: bool = True,
        agent_replies: bool = False,
    ) -> TrainingSelection:
        """The training dialogues, and how many conversations opt-out held back.

        ``persona`` keeps one persona's conversations; ``since`` (timezone-aware) those
        active at or after it (``updated_at``, so a long-lived chat with new turns comes
        back whole). With ``feedback`` a dialogue runs up to its last bot reply rated +1;
        without, up to its last bot reply. A reply rated -1 ends it before that reply.
        ``agent_replies`` also takes a human agent's messages, as assistant turns, and
        runs up to the last of them. System messages are dropped and consecutive turns of
        one role merged. Conversations owned by a user who opted out are left out, and so
        is every message an opted-out user wrote anywhere; their +1 ratings do not count,
        while their -1 ratings still keep a reply out.

        Three queries whatever the size: conversations, their messages, their feedback.
        """
        with self._errors():
            async with self._transaction() as session:
                return await select_training_dialogues(
                    session,
                    persona=persona,
                    since=since,
                    feedback=feedback,
                    agent_replies=agent_replies,
                )

    # -- a user's data: export and forget --------------------------------------------

    async def export_user(self, channel: str, external_id: str) -> dict[str, Any]:
        """Everything stored about a user, as JSON-ready data (a data-access request).

        ``conversations`` are the ones they own, with every message and the feedback on
        each; ``other_messages`` are messages they wrote in conversations owned by
        someone else (other people's words there are not theirs to export);
        ``feedback_given`` is every rating they gave.
        """
        with self._errors():
            async with self._transaction() as session:
                user = await session.scalar(
                    select(User).where(User.channel == channel, User.external_id == external_id)
                )
                if user is None:
                    raise MemoryStoreError(f"no user {external_id!r} on channel {channel!r}")
                owned = (
                    await session.scalars(
                        select(Conversation)
                        .where(Conversation.user_id == user.id)
                        .order_by(Conversation.id)
                    )
                ).all()
                owned_ids = [conversation.id for conversation in owned]
                messages = (
                    await session.scalars(
                        select(Message)
                        .where(
                            or_(
                                Message.conversation_id.in_(owned_ids),
                                Message.user_id == user.id,
                            )
                        )
                        .order_by(Message.id)
                    )
                ).all()
                message_ids = [message.id for message in messages]
                feedback = (
                    await session.scalars(
                        select(Feedback)
                        .where(
                            or_(Feedback.message_id.in_(message_ids), Feedback.user_id == user.id)
                        )
                        .order_by(Feedback.id)
                    )
                ).all()

        feedback_on: dict[int, list[dict[str, Any]]] = {}
        for row in feedback:
            feedback_on.setdefault(row.message_id, []).append(_jsonable(_feedback(row)))

        def message_json(row: Message) -> dict[str, Any]:
            return {**_jsonable(_message(row)), "feedback": feedback_on.get(row.id, [])}

        return {
            "user": _jsonable(_user(user)),
            "conversations": [
                {
                    **_jsonable(_conversation(conversation)),
                    "messages": [
                        message_json(m) for m in messages if m.conversation_id == conversation.id
                    ],
                }
                for conversation in owned
            ],
            "other_messages": [
                message_json(m) for m in messages if m.conversation_id not in set(owned_ids)
            ],
            "feedback_given": [_jsonable(_feedback(f)) for f in feedback if f.user_id == user.id],
        }

    async def forget_user(self, channel: str, external_id: str) -> dict[str, int]:
        """Delete everything stored about a user, in every table, in one transaction.

        Goes: feedback they gave or that sits on their messages or in their
        conversations, their messages anywhere, every message of the conversations they
        own (bot replies included), those conversations, the user row. Explicit deletes
        rather than ON DELETE CASCADE alone, so the counts are exact and nothing depends
        on SQLite's foreign_keys pragma. An unknown user gives all zeros.
        """
        counts = {"feedback": 0, "messages": 0, "conversations": 0, "users": 0}
        with self._errors():
            async with self._transaction() as session:
                user_id = await session.scalar(
                    select(User.id).where(User.channel == channel, User.external_id == external_id)
                )
                if user_id is None:
                    return counts
                owned = select(Conversation.id).where(Conversation.user_id == user_id)
                their_message = or_(Message.user_id == user_id, Message.conversation_id.in_(owned))
                their_messages = select(Message.id).where(their_message)
                statements = {
                    "feedback": delete(Feedback).where(
                        or_(Feedback.user_id == user_id, Feedback.message_id.in_(their_messages))
                    ),
                    "messages": delete(Message).where(their_message),
                    "conversations": delete(Conversation).where(Conversation.user_id == user_id),
                    "users": delete(User).where(User.id == user_id),
                }
                for table, statement in statements.items():
                    result = await session.execute(
                        statement.execution_options(synchronize_session=False)
                    )
                    counts[table] = result.rowcount  # type: ignore[attr-defined]
        logger.info("forgot user %s on %s: %s", external_id, channel, counts)
        return counts


__all__ = [
    "ConversationRecord",
    "ConversationStore",
    "FeedbackRecord",
    "MessageRecord",
    "TrainingDialogue",
    "TrainingSelection",
    "UserRecord",
]
