"""indexes for the auto-reply cap and the duplicate check

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Outgoing recipients are compared lower-cased; older rows are brought in line.
    op.execute(sa.text("UPDATE messages SET recipients = lower(recipients) "
                       "WHERE direction = 'out'"))
    op.create_index("ix_messages_recipients_received_at", "messages",
                    ["recipients", "received_at"])
    # With direction last: SQLite (no statistics) otherwise prefers ix_messages_outbox_due
    # for "direction = ?" and scans every incoming message.
    op.create_index("ix_messages_message_id_content_sha256", "messages",
                    ["message_id", "content_sha256", "direction"])


def downgrade() -> None:
    op.drop_index("ix_messages_message_id_content_sha256", table_name="messages")
    op.drop_index("ix_messages_recipients_received_at", table_name="messages")
