"""jobs.task (transcribe | translate) and jobs.temperature, for the OpenAI-compatible routes

``task`` is Whisper's task: ``translate`` turns speech in any language into English text
(multilingual models only). ``temperature`` is the sampling temperature a client asked
for; NULL keeps Whisper's fallback schedule (0.0, 0.2, ... 1.0).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("task", sa.String(length=16), nullable=False, server_default="transcribe"),
    )
    op.add_column("jobs", sa.Column("temperature", sa.Float(), nullable=True))
    op.create_check_constraint("jobs_task_valid", "jobs", "task IN ('transcribe', 'translate')")


def downgrade() -> None:
    op.drop_constraint("jobs_task_valid", "jobs", type_="check")
    op.drop_column("jobs", "temperature")
    op.drop_column("jobs", "task")
