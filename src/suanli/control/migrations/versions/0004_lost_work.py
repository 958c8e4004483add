"""Lost work of an attempt ended by a node loss or an unhealthy device: device-seconds since its last checkpoint.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_attempts") as b:
        b.add_column(sa.Column("lost_device_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_attempts") as b:
        b.drop_column("lost_device_s")
