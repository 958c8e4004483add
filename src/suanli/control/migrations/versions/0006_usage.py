"""Usage records (accounting): chip-seconds of every ended attempt per node, useful and lost, with its outcome.

Records of attempts that ended before this migration are derived from ``job_attempts`` (same rules as new ones,
``control/usage.py``; no measured energy).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    usage = op.create_table(
        "usage",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("attempt_id", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("job_name", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("chips", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=False),
        sa.Column("chip_s", sa.Float, nullable=False),
        sa.Column("useful_chip_s", sa.Float, nullable=False),
        sa.Column("lost_chip_s", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("energy_j", sa.Float, nullable=True),
        sa.UniqueConstraint("attempt_id", "node", name="uq_usage_attempt_node"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_usage_ended", "usage", ["ended_at"])
    from suanli.control.usage import records

    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT a.id, a.job_id, a.started_at, a.ended_at, a.placement, a.outcome, a.lost_device_s, j.name, "
        "j.tenant, j.queue, j.sched FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE a.ended_at IS NOT NULL AND a.outcome IS NOT NULL")).all()
    out = []
    for r in rows:
        sched = json.loads(r.sched) if isinstance(r.sched, str) else r.sched
        out += records(attempt_id=r.id, job_id=r.job_id, job={"name": r.name, "tenant": r.tenant, "queue": r.queue,
                                                                "kind": (sched or {}).get("kind", "")},
                       placement=r.placement, started_at=r.started_at, ended_at=r.ended_at, outcome=r.outcome,
                       lost_device_s=r.lost_device_s)
    if out:
        op.bulk_insert(usage, [{**{k: v for k, v in x.items() if k != "llm"}, "outcome": str(x["outcome"])}
                                for x in out])  # llm: migration 0009


def downgrade() -> None:
    op.drop_index("ix_usage_ended", "usage")
    op.drop_table("usage")
