"""retention and re-run: jobs.attempts_base, and indexes the retention sweep reads by

``attempts_base`` is ``attempts`` at the job's latest re-run: ``attempts`` itself never goes
down (it is the fencing token), so the attempt cap counts ``attempts - attempts_base``.
``finished_at`` is set exactly on final jobs; the two partial indexes let the sweep find the
oldest finished jobs (and those that still hold audio) without reading the others.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("attempts_base", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_index(
        "ix_jobs_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_finished_with_audio",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL AND audio_path IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_with_audio", table_name="jobs")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_column("jobs", "attempts_base")
