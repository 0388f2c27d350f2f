"""The outbox of reports to forges (commit statuses, living comments).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("forge", sa.String(32), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("sha", sa.String(64), nullable=True),
        sa.Column("mr_number", sa.Integer(), nullable=True),
        sa.Column("desired", JSON, nullable=False),
        sa.Column("delivered", JSON, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("delivered_version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("target", name="uq_reports_target"),
    )
    op.create_index("ix_reports_next_attempt_at", "reports", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_reports_next_attempt_at", table_name="reports")
    op.drop_table("reports")
