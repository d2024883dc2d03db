"""priorities and fairness: a job's priority, and outbox rows held per owner

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("priority", sa.String(length=8), server_default="normal", nullable=False),
    )
    op.add_column("outbox", sa.Column("owner", sa.String(length=64), nullable=True))
    op.add_column(
        "outbox",
        sa.Column("held", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_index(
        "ix_outbox_held",
        "outbox",
        ["queue", "owner", "id"],
        postgresql_where=sa.text("held"),
    )


def downgrade() -> None:
    # Held messages would never be published without the fairness release: publish them.
    op.execute("UPDATE outbox SET held = false WHERE held")
    op.drop_index("ix_outbox_held", table_name="outbox")
    op.drop_column("outbox", "held")
    op.drop_column("outbox", "owner")
    op.drop_column("jobs", "priority")
