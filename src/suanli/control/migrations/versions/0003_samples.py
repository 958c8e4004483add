"""History samples for the dashboard's "Over time" page.

``samples``: the controller's periodic sample of the fleet (devices total and allocated, running and waiting jobs,
waiting jobs by reason), at three levels: 0 raw (every sample interval), 1 five-minute averages, 2 hourly averages,
each kept for its own retention.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.Column("allocated", sa.Float, nullable=False),
        sa.Column("running", sa.Float, nullable=False),
        sa.Column("pending", sa.Float, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_samples_level_at", "samples", ["level", "at"])


def downgrade() -> None:
    op.drop_index("ix_samples_level_at", "samples")
    op.drop_table("samples")
