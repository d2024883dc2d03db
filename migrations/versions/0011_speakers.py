"""speakers: an owner's known speakers (a clip, and the voice print computed from it)

Jobs name them in ``jobs.diarization``: ``known_speakers`` (the names, as the client sent
them) and ``speaker_ids`` (the speakers they resolved to at submit).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "speakers",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("clip_path", sa.Text(), nullable=False),
        sa.Column("clip_seconds", sa.Float(), nullable=False),
        sa.Column("voice_print", postgresql.ARRAY(sa.REAL()), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("owner", "name", name="uq_speakers_owner_name"),
    )


def downgrade() -> None:
    op.drop_table("speakers")
