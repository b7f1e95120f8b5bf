"""usage per minute: API calls per connector, shared by every hub process

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'usage',
        sa.Column('connector', sa.String(length=100), nullable=False),
        sa.Column('meter', sa.String(length=100), nullable=False),
        sa.Column('minute', sa.Integer(), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('connector', 'meter', 'minute'),
    )


def downgrade() -> None:
    op.drop_table('usage')
