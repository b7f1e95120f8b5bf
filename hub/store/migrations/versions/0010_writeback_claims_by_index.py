"""the write-back claims' indexes end in the id, their tie-break

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a claim takes the first rows of one of these indexes (by readiness or by due time, then id); without
    # the id PostgreSQL read and sorted every queued item to find them
    with op.batch_alter_table('writebacks', schema=None) as batch_op:
        batch_op.drop_index('ix_writebacks_due')
        batch_op.drop_index('ix_writebacks_ready')
        batch_op.create_index('ix_writebacks_due', ['connector', 'state', 'next_attempt_at', 'id'], unique=False)
        batch_op.create_index('ix_writebacks_ready', ['connector', 'state', 'ready_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('writebacks', schema=None) as batch_op:
        batch_op.drop_index('ix_writebacks_ready')
        batch_op.drop_index('ix_writebacks_due')
        batch_op.create_index('ix_writebacks_ready', ['connector', 'state', 'ready_at'], unique=False)
        batch_op.create_index('ix_writebacks_due', ['connector', 'state', 'next_attempt_at'], unique=False)
