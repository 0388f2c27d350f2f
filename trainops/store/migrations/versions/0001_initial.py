"""The first schema: events (one per delivery) and runs (one per run key).

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full rather than from ``tables``: a migration is history and
must build the same schema however the models change later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("forge", sa.String(32), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("repo", sa.Text(), nullable=True),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("forge", "delivery_id", name="uq_events_forge_delivery_id"),
    )
    op.create_index("ix_events_status_id", "events", ["status", "id"])
    op.create_index("ix_events_repo", "events", ["repo"])

    op.create_table(
        "runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("run_key", sa.String(255), nullable=False),
        sa.Column("event_id", ID, nullable=True),
        sa.Column("forge", sa.String(32), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("clone_url", sa.Text(), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("branch", sa.Text(), nullable=True),
        sa.Column("mr_number", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queued_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires", sa.Double(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("superseded_by", sa.String(64), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("run_id", name="uq_runs_run_id"),
        sa.UniqueConstraint("run_key", name="uq_runs_run_key"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_runs_event_id_events", ondelete="SET NULL"
        ),
    )
    op.create_index(
        "ix_runs_status_priority_queued_at_id", "runs", ["status", "priority", "queued_at", "id"]
    )
    op.create_index("ix_runs_group_key_status", "runs", ["group_key", "status"])
    op.create_index("ix_runs_repo_queued_at", "runs", ["repo", "queued_at"])
    op.create_index("ix_runs_queued_at", "runs", ["queued_at"])
    op.create_index("ix_runs_event_id", "runs", ["event_id"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("events")
