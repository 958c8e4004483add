"""Accounting: the LLM of every usage record (``usage.llm``, from the job's ``llm``; "" for none), indexes for the
report by job and for the records' (node, model) pairs, and the tokens served through the gateway
(``service_tokens``: per replica, per flush of the gateway's counters).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("usage") as b:
        b.add_column(sa.Column("llm", sa.String(128), nullable=False, server_default=""))
    conn = op.get_bind()
    llms: dict[str, list[int]] = {}
    for jid, sched in conn.execute(sa.text(
            "SELECT id, sched FROM jobs WHERE id IN (SELECT DISTINCT job_id FROM usage)")).all():
        s = json.loads(sched) if isinstance(sched, str) else sched
        if (s or {}).get("llm"):
            llms.setdefault(str(s["llm"]), []).append(int(jid))
    for llm, ids in llms.items():
        for i in range(0, len(ids), 500):
            conn.execute(sa.text("UPDATE usage SET llm = :llm WHERE job_id IN ({})".format(
                ",".join(str(j) for j in ids[i : i + 500]))), {"llm": llm})
    op.create_index("ix_usage_job", "usage", ["job_id"])
    op.create_index("ix_usage_model_node", "usage", ["model", "node"])
    op.create_table(
        "service_tokens",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("flush_id", sa.String(36), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("served_model", sa.String(255), nullable=False),
        sa.Column("llm", sa.String(128), nullable=False),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("flush_id", "job_id", "node", name="uq_service_tokens_flush"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_service_tokens_at", "service_tokens", ["at"])


def downgrade() -> None:
    op.drop_index("ix_service_tokens_at", "service_tokens")
    op.drop_table("service_tokens")
    op.drop_index("ix_usage_model_node", "usage")
    op.drop_index("ix_usage_job", "usage")
    with op.batch_alter_table("usage") as b:
        b.drop_column("llm")
