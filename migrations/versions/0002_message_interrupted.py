"""messages.interrupted: a bot reply cut off when the server stopped mid-reply.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

On SIGTERM ``botkit serve`` lets replies in progress finish for a grace period; one
still running after it is stored as far as the user saw it, with this flag, so that a
transcript shows what happened and training leaves it out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("interrupted", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("interrupted")
