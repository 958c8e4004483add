"""Partitions set by an admin: ``nodes.partitions_override`` (``PATCH /v1/nodes/{name}``, ``suanli nodes --update``).
NULL: none set, the node's own partitions (``suanli up --partition``, the Ray label ``suanli.io/partitions``, the
fleet file) apply; a list (also an empty one) replaces them until cleared. A column of its own, so that a node
registering again (every restart, every membership change) never overwrites what the operator chose.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as b:
        b.add_column(sa.Column("partitions_override", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as b:
        b.drop_column("partitions_override")
