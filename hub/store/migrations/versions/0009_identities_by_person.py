"""identities are found by person and connector in one index

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # every answer reads its person's record id in each write-back target by (person, connector); with an
    # index on the person alone, SQLite's planner (without statistics) chose the unique (connector, crm_id)
    # index and read every identity of the connector
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index('ix_identities_person_id')
        batch_op.create_index('ix_identities_person', ['person_id', 'connector', 'crm_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index('ix_identities_person')
        batch_op.create_index('ix_identities_person_id', ['person_id'], unique=False)
