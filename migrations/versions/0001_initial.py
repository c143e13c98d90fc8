"""Initial schema: users, conversations, messages, feedback.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand to be read: it is the schema of ``botkit/memory/models.py`` at the
start. Constraint names follow the naming convention there, so later revisions can
refer to them on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT ids on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("channel", "external_id", name="uq_users_channel_external_id"),
    )

    op.create_table(
        "conversations",
        sa.Column("id", ID, primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("chat_key", sa.String(255), nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("persona", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False, server_default="bot"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("closed_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_conversations_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "state IN ('bot', 'waiting_for_agent', 'agent', 'closed')",
            name="ck_conversations_state",
        ),
    )
    op.create_index("ix_conversations_channel_chat_key", "conversations", ["channel", "chat_key"])
    op.create_index("ix_conversations_user_id", "conversations", ["user_id"])
    # One open conversation per chat, even with several botkit processes.
    op.create_index(
        "uq_conversations_open_chat",
        "conversations",
        ["channel", "chat_key"],
        unique=True,
        sqlite_where=sa.text("state != 'closed'"),
        postgresql_where=sa.text("state != 'closed'"),
    )

    op.create_table(
        "messages",
        sa.Column("id", ID, primary_key=True),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("persona", sa.String(128), nullable=True),
        sa.Column("adapter_version", sa.String(255), nullable=True),
        sa.Column("platform_message_id", sa.String(255), nullable=True),
        # f"{channel}:{chat_key}:{platform_message_id}": a platform retry is stored once.
        sa.Column("dedupe_key", sa.String(640), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_messages_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("dedupe_key", name="uq_messages_dedupe_key"),
        sa.CheckConstraint(
            "role IN ('user', 'assistant', 'system', 'agent')", name="ck_messages_role"
        ),
    )
    op.create_index("ix_messages_conversation_id_id", "messages", ["conversation_id", "id"])
    op.create_index("ix_messages_user_id", "messages", ["user_id"])

    op.create_table(
        "feedback",
        sa.Column("id", ID, primary_key=True),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_feedback_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_feedback_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint("score IN (-1, 1)", name="ck_feedback_score"),
    )
    op.create_index("ix_feedback_message_id", "feedback", ["message_id"])
    op.create_index("ix_feedback_user_id", "feedback", ["user_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("users")
