"""webhooks: a URL and signing key per job, secrets per API key, events and deliveries

The trigger ``jobs_webhook_event`` records one ``webhook_events`` row in the transaction of
every UPDATE that moves a job with a ``webhook_url`` into a final state, whichever code path
made that UPDATE (complete, fail, fail_fetch, cancel, the attempt cap at claim or reap). A
second run of a job's task can't move it again (every transition is a conditional UPDATE),
so each outcome yields exactly one event.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")

EVENT_FUNCTION = """
CREATE FUNCTION steno_job_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (webhook_id, job_id, key_id, type, url, job)
    VALUES (
        'msg_' || replace(gen_random_uuid()::text, '-', ''),
        NEW.id,
        NEW.webhook_key_id,
        'job.' || NEW.status,
        NEW.webhook_url,
        to_jsonb(NEW)
    );
    RETURN NULL;
END
$$
"""

EVENT_TRIGGER = """
CREATE TRIGGER jobs_webhook_event
AFTER UPDATE OF status ON jobs
FOR EACH ROW
WHEN (
    NEW.webhook_url IS NOT NULL
    AND OLD.status IS DISTINCT FROM NEW.status
    AND NEW.status IN ('completed', 'failed', 'cancelled')
)
EXECUTE FUNCTION steno_job_webhook_event()
"""


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_url", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("webhook_key_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "jobs_webhook_key_id_fkey",
        "jobs",
        "api_keys",
        ["webhook_key_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("key_id", sa.UUID(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("job", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("round_start", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name="webhook_events_state_valid"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id"),
    )
    op.create_index("ix_webhook_events_job_id", "webhook_events", ["job_id"])
    op.create_index(
        "ix_webhook_events_due",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["webhook_events.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id", "id"])
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])
    op.execute(EVENT_FUNCTION)
    op.execute(EVENT_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_webhook_event ON jobs")
    op.execute("DROP FUNCTION IF EXISTS steno_job_webhook_event()")
    op.drop_index("ix_webhook_deliveries_event_id", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_job", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_events_due", table_name="webhook_events")
    op.drop_index("ix_webhook_events_job_id", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_table("webhook_secrets")
    op.drop_constraint("jobs_webhook_key_id_fkey", "jobs", type_="foreignkey")
    op.drop_column("jobs", "webhook_key_id")
    op.drop_column("jobs", "webhook_url")
