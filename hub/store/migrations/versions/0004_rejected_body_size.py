"""rejected body size: a rejected request keeps the beginning of its body and the whole body's size

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('rejected_webhooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_size', sa.Integer(), nullable=True))
    op.execute('UPDATE rejected_webhooks SET body_size = length(body)')


def downgrade() -> None:
    with op.batch_alter_table('rejected_webhooks', schema=None) as batch_op:
        batch_op.drop_column('body_size')
