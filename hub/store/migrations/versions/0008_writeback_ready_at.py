"""write-back items know when they are ready

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.store.tables


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # items queued before: ready and capped as of their last re-arm, so the prompt sync takes them at once
    with op.batch_alter_table('writebacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ready_at', hub.store.tables.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('cap_at', hub.store.tables.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE writebacks SET ready_at = updated_at, cap_at = updated_at")
    with op.batch_alter_table('writebacks', schema=None) as batch_op:
        batch_op.alter_column('ready_at', existing_type=hub.store.tables.UTCDateTime(timezone=True), nullable=False)
        batch_op.alter_column('cap_at', existing_type=hub.store.tables.UTCDateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_writebacks_ready', ['connector', 'state', 'ready_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('writebacks', schema=None) as batch_op:
        batch_op.drop_index('ix_writebacks_ready')
        batch_op.drop_column('cap_at')
        batch_op.drop_column('ready_at')
