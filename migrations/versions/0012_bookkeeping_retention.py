"""bookkeeping retention: indexes for deleting published outbox rows and expired idempotency keys

Beat's retention sweep deletes outbox rows published more than a day ago and
``Idempotency-Key`` rows past ``STENO_IDEMPOTENCY_TTL_SECONDS``, oldest first, in batches.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_published",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_outbox_published", table_name="outbox")
