"""reminders and escalations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("send_on", sa.Date(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recipient_role", sa.String(length=20), nullable=False),
        sa.Column("deadline", sa.String(length=40), nullable=False),
        sa.Column("deadline_date", sa.Date(), nullable=False),
        sa.Column("escalation", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("recipient_address", sa.String(length=320), nullable=True),
        sa.Column("outbox_message_id", sa.String(length=500), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"],
                                name=op.f("fk_reminders_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminders")),
        sa.UniqueConstraint("case_id", "key", name="uq_reminders_case_id_key"),
    )
    op.create_index("ix_reminders_state_due_at", "reminders", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_reminders_state_due_at", table_name="reminders")
    op.drop_table("reminders")
