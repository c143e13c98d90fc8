"""The console's own read queries: the conversation browser, a conversation's user, exports.

They run on the store's engine (``ConversationStore.engine``, meant for such reports)
and return plain data; database failures come out as botkit's MemoryStoreError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from botkit.memory import ConversationStore
from botkit.memory.db import map_errors
from botkit.memory.models import Conversation, ConversationEvent, Feedback, Message, User

PAGE_SIZE = 50


@dataclass(frozen=True)
class Filters:
    """What the conversation browser searches by; empty fields do not filter."""

    user: str = ""
    """Part of a user's display name or platform id (case-insensitive), or a
    conversation id as ``#123``."""
    channel: str = ""
    persona: str = ""
    date_from: date | None = None
    """Conversations active on or after this day (UTC)."""
    date_to: date | None = None
    """Conversations started on or before this day (UTC)."""
    feedback: str = ""
    """``up``: has a +1; ``down``: has a -1."""
    page: int = 1

    @property
    def active(self) -> bool:
        return any((self.user, self.channel, self.persona, self.date_from, self.date_to,
                    self.feedback))


@dataclass(frozen=True)
class ConversationRow:
    id: int
    channel: str
    chat_key: str
    persona: str
    state: str
    created_at: datetime
    updated_at: datetime
    user_name: str | None
    user_external_id: str | None
    messages: int
    thumbs_up: int
    thumbs_down: int


@dataclass(frozen=True)
class SearchResult:
    rows: list[ConversationRow]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class ConversationUser:
    id: int
    channel: str
    external_id: str
    display_name: str | None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


class ConsoleQueries:
    def __init__(self, store: ConversationStore) -> None:
        self._engine = store.engine
        self._sessions = async_sessionmaker(store.engine, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        with map_errors(self._engine.url):
            async with self._sessions() as session, session.begin():
                yield session

    # -- the conversation browser ------------------------------------------------------

    def _conditions(self, filters: Filters) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        text = filters.user.strip()
        if text.startswith("#") and text[1:].isascii() and text[1:].isdigit() \
                and len(text) <= 19:
            where.append(Conversation.id == int(text[1:]))
        elif text:
            pattern = _like(text)
            where.append(or_(
                func.lower(User.display_name).like(pattern, escape="\\"),
                func.lower(User.external_id).like(pattern, escape="\\"),
            ))
        if filters.channel:
            where.append(Conversation.channel == filters.channel)
        if filters.persona:
            where.append(Conversation.persona == filters.persona)
        if filters.date_from is not None:
            start = datetime.combine(filters.date_from, time.min, tzinfo=UTC)
            where.append(Conversation.updated_at >= start)
        if filters.date_to is not None:
            end = datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=UTC)
            where.append(Conversation.created_at < end)
        if filters.feedback in ("up", "down"):
            score = 1 if filters.feedback == "up" else -1
            where.append(exists(
                select(Feedback.id)
                .join(Message, Message.id == Feedback.message_id)
                .where(Message.conversation_id == Conversation.id, Feedback.score == score)
            ))
        return where

    async def search(self, filters: Filters) -> SearchResult:
        """Conversations matching ``filters``, most recently active first, a page at a time."""
        where = self._conditions(filters)
        counts = (
            select(
                Message.conversation_id.label("cid"),
                func.count(distinct(Message.id)).label("messages"),
            )
            .group_by(Message.conversation_id)
            .subquery()
        )
        votes = (
            select(
                Message.conversation_id.label("cid"),
                func.count(Feedback.id).filter(Feedback.score > 0).label("up"),
                func.count(Feedback.id).filter(Feedback.score < 0).label("down"),
            )
            .join(Feedback, Feedback.message_id == Message.id)
            .group_by(Message.conversation_id)
            .subquery()
        )
        base = select(Conversation.id).outerjoin(User, User.id == Conversation.user_id)
        if where:
            base = base.where(and_(*where))
        page = max(filters.page, 1)
        async with self._session() as session:
            total = await session.scalar(select(func.count()).select_from(base.subquery())) or 0
            query = (
                select(
                    Conversation, User.display_name, User.external_id,
                    func.coalesce(counts.c.messages, 0), func.coalesce(votes.c.up, 0),
                    func.coalesce(votes.c.down, 0),
                )
                .outerjoin(User, User.id == Conversation.user_id)
                .outerjoin(counts, counts.c.cid == Conversation.id)
                .outerjoin(votes, votes.c.cid == Conversation.id)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
                .limit(PAGE_SIZE)
                .offset((page - 1) * PAGE_SIZE)
            )
            if where:
                query = query.where(and_(*where))
            rows = (await session.execute(query)).all()
        return SearchResult(
            rows=[
                ConversationRow(
                    id=c.id, channel=c.channel, chat_key=c.chat_key, persona=c.persona,
                    state=c.state, created_at=c.created_at, updated_at=c.updated_at,
                    user_name=name, user_external_id=external_id, messages=int(n),
                    thumbs_up=int(up), thumbs_down=int(down),
                )
                for c, name, external_id, n, up, down in rows
            ],
            total=int(total),
            page=page,
            pages=max(1, -(-int(total) // PAGE_SIZE)),
        )

    async def choices(self) -> tuple[list[str], list[str]]:
        """The channels and personas that conversations exist for (the browser's menus)."""
        async with self._session() as session:
            channels = (await session.scalars(
                select(Conversation.channel).distinct().order_by(Conversation.channel)
            )).all()
            personas = (await session.scalars(
                select(Conversation.persona).distinct().order_by(Conversation.persona)
            )).all()
        return list(channels), list(personas)

    # -- one conversation --------------------------------------------------------------

    async def conversation_user(self, conversation_id: int) -> ConversationUser | None:
        async with self._session() as session:
            row = await session.scalar(
                select(User).join(Conversation, Conversation.user_id == User.id)
                .where(Conversation.id == conversation_id)
            )
            if row is None:
                return None
            return ConversationUser(row.id, row.channel, row.external_id, row.display_name)

    async def feedback_scores(self, conversation_id: int) -> dict[int, int]:
        """The newest score on each rated message of the conversation."""
        async with self._session() as session:
            rows = await session.execute(
                select(Feedback.message_id, Feedback.score)
                .join(Message, Message.id == Feedback.message_id)
                .where(Message.conversation_id == conversation_id)
                .order_by(Feedback.id)
            )
            return {message_id: score for message_id, score in rows}

    async def agent_took_part(self, conversation_id: int, username: str) -> bool:
        """Whether ``username`` ever changed the conversation's state (claimed it...)."""
        async with self._session() as session:
            found = await session.scalar(
                select(ConversationEvent.id).where(
                    ConversationEvent.conversation_id == conversation_id,
                    ConversationEvent.actor == f"agent:{username}",
                ).limit(1)
            )
            return found is not None

    async def user_footprint(self, channel: str, external_id: str) -> dict[str, Any] | None:
        """What forgetting a user would delete, roughly: their name and conversation count."""
        async with self._session() as session:
            user = await session.scalar(
                select(User).where(User.channel == channel, User.external_id == external_id)
            )
            if user is None:
                return None
            conversations = await session.scalar(
                select(func.count(Conversation.id)).where(Conversation.user_id == user.id)
            ) or 0
            messages = await session.scalar(
                select(func.count(Message.id)).where(or_(
                    Message.user_id == user.id,
                    Message.conversation_id.in_(
                        select(Conversation.id).where(Conversation.user_id == user.id)
                    ),
                ))
            ) or 0
        return {
            "display_name": user.display_name,
            "created_at": user.created_at,
            "conversations": int(conversations),
            "messages": int(messages),
        }

    async def export_conversation(self, conversation_id: int) -> dict[str, Any] | None:
        """One conversation as JSON-ready data: its user, messages (with feedback), events."""
        async with self._session() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                return None
            user = (await session.get(User, conversation.user_id)
                    if conversation.user_id is not None else None)
            messages = (await session.scalars(
                select(Message).where(Message.conversation_id == conversation_id)
                .order_by(Message.id)
            )).all()
            feedback = (await session.scalars(
                select(Feedback).join(Message, Message.id == Feedback.message_id)
                .where(Message.conversation_id == conversation_id).order_by(Feedback.id)
            )).all()
            events = (await session.scalars(
                select(ConversationEvent)
                .where(ConversationEvent.conversation_id == conversation_id)
                .order_by(ConversationEvent.id)
            )).all()
        on: dict[int, list[dict[str, Any]]] = {}
        for row in feedback:
            on.setdefault(row.message_id, []).append(_columns(row, exclude=("message_id",)))
        return {
            "conversation": _columns(conversation),
            "user": None if user is None else _columns(user),
            "messages": [
                {**_columns(m, exclude=("dedupe_key",)), "feedback": on.get(m.id, [])}
                for m in messages
            ],
            "events": [_columns(e) for e in events],
            "exported_at": datetime.now(UTC).isoformat(),
        }


def _columns(row: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(row, column.key)
        data[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return data
