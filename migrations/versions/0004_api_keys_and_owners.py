"""api keys, and an owner on every job

Jobs created before keys existed belong to the owner ``legacy``, which no key has unless
an operator creates one for it (``steno keys create --name NAME --owner legacy``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])
    op.add_column(
        "jobs",
        sa.Column("owner", sa.String(length=64), nullable=False, server_default="legacy"),
    )
    op.alter_column("jobs", "owner", server_default=None)
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.create_index("ix_jobs_owner_created_at", "jobs", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_created_at", table_name="jobs")
    op.create_index("ix_jobs_created_at", "jobs", ["created_at", "id"])
    op.drop_column("jobs", "owner")
    op.drop_index("ix_api_keys_owner", table_name="api_keys")
    op.drop_table("api_keys")
