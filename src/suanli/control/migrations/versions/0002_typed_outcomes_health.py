"""Typed attempt outcomes and stop reasons, device health, node status, node events.

- ``job_attempts.stop_reason`` (why an attempt was stopped: cancel, preempt, shutdown, rank-failed, node-lost,
  device-unhealthy); ``job_attempts.outcome`` keeps its VARCHAR(32) and is read as ``types.AttemptOutcome``.
  Stop reasons of attempts recorded before this migration are filled from their outcome.
- ``devices.health`` (healthy / unhealthy), ``health_reason``, ``health_at``.
- ``nodes.status`` (up / lost) and ``last_seen``.
- ``node_events``: append-only events of nodes and devices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("job_attempts") as b:
        b.add_column(sa.Column("stop_reason", sa.String(32), nullable=True))
    op.execute("UPDATE job_attempts SET stop_reason = 'cancel' WHERE outcome = 'cancelled'")
    op.execute("UPDATE job_attempts SET stop_reason = 'preempt' WHERE outcome = 'preempted'")
    op.execute("UPDATE job_attempts SET stop_reason = 'shutdown' WHERE outcome = 'stopped'")
    with op.batch_alter_table("devices") as b:
        b.add_column(sa.Column("health", sa.String(16), nullable=False, server_default="healthy"))
        b.add_column(sa.Column("health_reason", sa.String(255), nullable=True))
        b.add_column(sa.Column("health_at", sa.Float, nullable=True))
    with op.batch_alter_table("nodes") as b:
        b.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="up"))
        b.add_column(sa.Column("last_seen", sa.Float, nullable=True))
    op.create_table(
        "node_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_node_events_node", "node_events", ["node", "id"])


def downgrade() -> None:
    op.drop_index("ix_node_events_node", "node_events")
    op.drop_table("node_events")
    with op.batch_alter_table("nodes") as b:
        b.drop_column("last_seen")
        b.drop_column("status")
    with op.batch_alter_table("devices") as b:
        b.drop_column("health_at")
        b.drop_column("health_reason")
        b.drop_column("health")
    with op.batch_alter_table("job_attempts") as b:
        b.drop_column("stop_reason")
