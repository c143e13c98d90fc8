"""persona_versions: personas edited and published from the operator console.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Each published edit stores the persona's whole TOML with a per-persona version number,
who published it and why; the newest version overrides the persona's file at start, and
``botkit persona export`` writes the newest versions back to files.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "persona_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("persona", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_persona_versions"),
        sa.UniqueConstraint("persona", "version", name="uq_persona_versions_persona_version"),
    )
    op.create_index("ix_persona_versions_persona", "persona_versions", ["persona"])


def downgrade() -> None:
    op.drop_index("ix_persona_versions_persona", "persona_versions")
    op.drop_table("persona_versions")
