"""cases, audit trail, extensions and reference counters

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:49:28.979285
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=20), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deemed_received', sa.Date(), nullable=False),
    sa.Column('requester_name', sa.String(length=200), nullable=False),
    sa.Column('requester_email', sa.String(length=320), nullable=True),
    sa.Column('requester_phone', sa.String(length=40), nullable=True),
    sa.Column('service_area', sa.String(length=20), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('incident_date', sa.Date(), nullable=True),
    sa.Column('acknowledgement_due', sa.Date(), nullable=True),
    sa.Column('acknowledged_on', sa.Date(), nullable=True),
    sa.Column('response_due', sa.Date(), nullable=True),
    sa.Column('responded_on', sa.Date(), nullable=True),
    sa.Column('officer', sa.String(length=200), nullable=True),
    sa.Column('stage2_request_by', sa.Date(), nullable=True),
    sa.Column('stage2_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stage2_acknowledgement_due', sa.Date(), nullable=True),
    sa.Column('stage2_acknowledged_on', sa.Date(), nullable=True),
    sa.Column('stage2_response_due', sa.Date(), nullable=True),
    sa.Column('stage2_responded_on', sa.Date(), nullable=True),
    sa.Column('reviewer', sa.String(length=200), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('ombudsman', sa.String(length=200), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('classifier_label', sa.String(length=20), nullable=True),
    sa.Column('classifier_confidence', sa.Float(), nullable=True),
    sa.Column('flag_out_of_time', sa.Boolean(), nullable=False),
    sa.Column('flag_safeguarding', sa.Boolean(), nullable=False),
    sa.Column('flag_needs_triage', sa.Boolean(), nullable=False),
    sa.Column('flag_late_stage2', sa.Boolean(), nullable=False),
    sa.Column('flag_needs_letter', sa.Boolean(), nullable=False),
    sa.Column('related_ref', sa.String(length=20), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('ref', name=op.f('uq_cases_ref'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cases_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_cases_requester_email'), ['requester_email'], unique=False)
        batch_op.create_index(batch_op.f('ix_cases_status'), ['status'], unique=False)

    op.create_table('reference_counters',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('year', name=op.f('pk_reference_counters'))
    )
    op.create_table('case_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_events_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_events'))
    )
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.create_index('ix_case_events_case_id_id', ['case_id', 'id'], unique=False)

    op.create_table('case_extensions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('previous_due', sa.Date(), nullable=False),
    sa.Column('new_due', sa.Date(), nullable=False),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_extensions_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_extensions'))
    )
    with op.batch_alter_table('case_extensions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_extensions_case_id'), ['case_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('case_extensions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_extensions_case_id'))

    op.drop_table('case_extensions')
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.drop_index('ix_case_events_case_id_id')

    op.drop_table('case_events')
    op.drop_table('reference_counters')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_status'))
        batch_op.drop_index(batch_op.f('ix_cases_requester_email'))
        batch_op.drop_index(batch_op.f('ix_cases_kind'))

    op.drop_table('cases')
