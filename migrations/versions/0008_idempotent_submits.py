"""idempotent submits: Idempotency-Key per owner, the audio's hash and an options digest

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner", "key"),
    )
    op.create_index("ix_idempotency_keys_job_id", "idempotency_keys", ["job_id"])
    op.add_column("jobs", sa.Column("audio_sha256", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("options_digest", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_jobs_dedupe",
        "jobs",
        ["owner", "audio_sha256"],
        postgresql_where=sa.text("status = 'completed' AND audio_sha256 IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_dedupe", table_name="jobs")
    op.drop_column("jobs", "options_digest")
    op.drop_column("jobs", "audio_sha256")
    op.drop_index("ix_idempotency_keys_job_id", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
