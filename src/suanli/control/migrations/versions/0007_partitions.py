"""Partitions: ``queues.partitions`` (the partitions a queue's jobs may use; NULL: any node) and
``nodes.partitions`` (the partitions a node belongs to; NULL: none).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queues") as b:
        b.add_column(sa.Column("partitions", sa.JSON, nullable=True))
    with op.batch_alter_table("nodes") as b:
        b.add_column(sa.Column("partitions", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as b:
        b.drop_column("partitions")
    with op.batch_alter_table("queues") as b:
        b.drop_column("partitions")
