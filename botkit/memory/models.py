"""The conversation database as SQLAlchemy 2 declarative models.

These classes are the schema botkit expects; Alembic revisions in ``migrations/`` are
what actually creates it, so every change here ships a revision (see
``migrations/README.md``). Timestamps are stored in UTC and always come back
timezone-aware, on SQLite (which has no time zones) as on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Who owns a conversation: the bot, nobody yet (queued for a human), a human agent, or closed.
CONVERSATION_STATES = ("bot", "waiting_for_agent", "agent", "closed")
#: Who wrote a message.
MESSAGE_ROLES = ("user", "assistant", "system", "agent")
#: What a console account may do: agents take over conversations; operators also edit
#: personas and browse every conversation.
CONSOLE_ROLES = ("agent", "operator")

# Stable constraint names, so a later revision can drop or alter a constraint by name on
# both backends (SQLite batch mode needs them).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT ids on PostgreSQL (messages grow without bound); SQLite only autoincrements an
# ``INTEGER PRIMARY KEY``, which is 64-bit there anyway.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; botkit stores aware UTC timestamps")
        value = value.astimezone(UTC)
        # SQLite keeps the text without an offset; what goes in is UTC by construction.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A person on one channel; the same human on Telegram and Discord is two users."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    # Step 3 (training-data export) leaves out everything written by a user who opted out.
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conversation(Base):
    """One thread of dialogue in one chat; ``/reset`` closes it and opens the next."""

    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("state IN ('bot', 'waiting_for_agent', 'agent', 'closed')", name="state"),
        Index(None, "channel", "chat_key"),
        # At most one open conversation per chat, enforced by the database so that two
        # botkit processes answering the same chat cannot each open their own.
        Index(
            "uq_conversations_open_chat",
            "channel",
            "chat_key",
            unique=True,
            sqlite_where=text("state != 'closed'"),
            postgresql_where=text("state != 'closed'"),
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    chat_key: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    persona: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32), default="bot", server_default="bot")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The human agent who owns the conversation while its state is ``agent``.
    agent_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("console_users.id", ondelete="SET NULL"), index=True
    )


class Message(Base):
    """One turn. ``dedupe_key`` makes a platform's retry of the same message a no-op."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant', 'system', 'agent')", name="role"),
        Index(None, "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    # CASCADE rather than SET NULL: deleting a user must not leave their words behind.
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int | None] = mapped_column(Integer)
    persona: Mapped[str | None] = mapped_column(String(128))
    adapter_version: Mapped[str | None] = mapped_column(String(255))
    platform_message_id: Mapped[str | None] = mapped_column(String(255))
    # f"{channel}:{chat_key}:{platform_message_id}"; unique across conversations so a retry
    # after /reset is still recognised.
    dedupe_key: Mapped[str | None] = mapped_column(String(640), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A bot reply cut off (the server stopped mid-reply): stored as far as the user saw it,
    # never used for training.
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The console account that wrote an ``agent`` message.
    agent_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("console_users.id", ondelete="SET NULL")
    )


class Feedback(Base):
    """A thumbs up (+1) or down (-1) on one message, usually a bot reply."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("score IN (-1, 1)", name="score"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsoleUser(Base):
    """An account of the operator console: a support agent or an operator."""

    __tablename__ = "console_users"
    __table_args__ = (CheckConstraint("role IN ('agent', 'operator')", name="role"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConversationEvent(Base):
    """The audit trail of handoff: each change of a conversation's state, by whom."""

    __tablename__ = "conversation_events"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    # "user:<channel id>", "agent:<username>", "bot" or "system"
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PersonaVersion(Base):
    """A persona as published from the console: the whole TOML, numbered per persona.

    The newest version of a persona overrides its file when botkit starts; ``botkit
    persona export`` writes the newest versions back to TOML files.
    """

    __tablename__ = "persona_versions"
    __table_args__ = (UniqueConstraint("persona", "version"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    persona: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = [
    "CONSOLE_ROLES",
    "PersonaVersion",
    "ConsoleUser",
    "ConversationEvent",
    "CONVERSATION_STATES",
    "MESSAGE_ROLES",
    "Base",
    "Conversation",
    "Feedback",
    "Message",
    "UTCDateTime",
    "User",
]
