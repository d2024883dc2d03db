"""jobs.diarization: the speaker diarization a job asked for

NULL: not diarized. Otherwise a JSON object: ``num_speakers`` or ``min_speakers`` /
``max_speakers``, and ``known`` (name -> voice print) for the known speakers it named.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("diarization", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "diarization")
