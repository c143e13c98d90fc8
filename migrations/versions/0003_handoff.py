"""Human handoff: console accounts, the audit trail of state changes, agent ownership.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``console_users`` are the operator console's accounts (agents and operators, with a
scrypt password hash); ``conversation_events`` records every change of a conversation's
state (bot, waiting_for_agent, agent, closed) with who made it and why;
``conversations.agent_id`` is the agent who owns a conversation and
``messages.agent_id`` the agent who wrote an ``agent`` message.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("role IN ('agent', 'operator')", name="ck_console_users_role"),
        sa.PrimaryKeyConstraint("id", name="pk_console_users"),
        sa.UniqueConstraint("username", name="uq_console_users_username"),
    )
    op.create_table(
        "conversation_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], ondelete="CASCADE",
            name="fk_conversation_events_conversation_id_conversations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_events"),
    )
    op.create_index(
        "ix_conversation_events_conversation_id", "conversation_events", ["conversation_id"]
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("agent_id", ID, nullable=True))
        batch.create_index("ix_conversations_agent_id", ["agent_id"])
        batch.create_foreign_key(
            "fk_conversations_agent_id_console_users", "console_users", ["agent_id"], ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("agent_id", ID, nullable=True))
        batch.create_foreign_key(
            "fk_messages_agent_id_console_users", "console_users", ["agent_id"], ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("fk_messages_agent_id_console_users", type_="foreignkey")
        batch.drop_column("agent_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint("fk_conversations_agent_id_console_users", type_="foreignkey")
        batch.drop_index("ix_conversations_agent_id")
        batch.drop_column("agent_id")
    op.drop_index("ix_conversation_events_conversation_id", "conversation_events")
    op.drop_table("conversation_events")
    op.drop_table("console_users")
