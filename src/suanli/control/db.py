"""The durable store's schema and engine: SQLAlchemy 2 Core tables, SQLite (WAL) or PostgreSQL, Alembic migrations.

The tables mirror ``migrations/versions``; a change to one is a new migration.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from suanli.control.types import AttemptOutcome, DeviceHealth, NodeStatus, StopReason
from suanli.errors import SuanliError

metadata = sa.MetaData()


def _enum(cls: type, length: int = 32) -> sa.Enum:
    """A ``str`` enum stored as its value in a VARCHAR (the same column type on SQLite and PostgreSQL)."""
    return sa.Enum(cls, native_enum=False, create_constraint=False, length=length,
                   values_callable=lambda e: [x.value for x in e], validate_strings=True)


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),  # sha256 of the token; the token is not stored
    sa.Column("tenant", sa.String(128), sa.ForeignKey("tenants.name"), nullable=True),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("label", sa.String(128), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("weight", sa.Float, nullable=False, default=1.0),
    sa.Column("quota", sa.JSON, nullable=False),  # accelerator model (or "*") -> devices
    sa.Column("borrow", sa.Boolean, nullable=False, default=True),
    sa.Column("partitions", sa.JSON, nullable=True),  # partitions its jobs may use; NULL: any node (0007)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("accelerator", sa.String(128), nullable=False),  # "" = CPU only
    sa.Column("devices", sa.Integer, nullable=False),
    sa.Column("cpu_milli", sa.BigInteger, nullable=False),
    sa.Column("memory_mib", sa.BigInteger, nullable=False),
    sa.Column("domain", sa.String(255), nullable=False),
    sa.Column("rack", sa.String(255), nullable=False),
    sa.Column("partitions", sa.JSON, nullable=True),  # partitions the node reports (flag, Ray label, fleet file; 0007)
    sa.Column("partitions_override", sa.JSON, nullable=True),  # set by an admin; NULL: none, else replaces them (0008)
    sa.Column("declared", sa.Boolean, nullable=False, default=False),
    sa.Column("drained", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("status", _enum(NodeStatus, 16), nullable=False, default=NodeStatus.UP, server_default="up"),
    sa.Column("last_seen", sa.Float, nullable=True),  # the executor last reported it
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    sa.Column("local_index", sa.Integer, nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("uuid", sa.String(128), nullable=True),
    sa.Column("memory_mib", sa.BigInteger, nullable=True),
    sa.Column("declared", sa.Boolean, nullable=False, default=False),
    sa.Column("health", _enum(DeviceHealth, 16), nullable=False, default=DeviceHealth.HEALTHY,
              server_default="healthy"),
    sa.Column("health_reason", sa.String(255), nullable=True),
    sa.Column("health_at", sa.Float, nullable=True),
    sa.UniqueConstraint("node_id", "local_index", name="uq_devices_node_index"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),  # the JobSpec as submitted (validated)
    sa.Column("sched", sa.JSON, nullable=False),  # the scheduler's compact view (rebuilt without re-validating)
    sa.Column("submit_time", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("failures", sa.Integer, nullable=False, default=0),  # failed attempts (counted against max_retries)
    sa.Column("not_before", sa.Float, nullable=True),  # retry backoff: not to be started before this time
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("reason", sa.String(255), nullable=True),
    sqlite_autoincrement=True,
)
sa.Index("ix_jobs_state", jobs.c.state)
sa.Index("ix_jobs_tenant_id", jobs.c.tenant, jobs.c.id)
sa.Index("ix_jobs_queue_id", jobs.c.queue, jobs.c.id)
sa.Index("ix_jobs_cancel", jobs.c.cancel_requested)

job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),  # 1, 2, ... per job
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("placement", sa.JSON, nullable=False),
    sa.Column("procs", sa.JSON, nullable=True),  # [[pid, start ticks], ...] once spawned
    sa.Column("pgid", sa.Integer, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("outcome", _enum(AttemptOutcome), nullable=True),
    sa.Column("stop_reason", _enum(StopReason), nullable=True),  # why it was stopped, when it was
    sa.Column("lost_device_s", sa.Float, nullable=True),  # node-lost: device-seconds since the last checkpoint
    sa.UniqueConstraint("job_id", "n", name="uq_attempts_job_n"),
    sqlite_autoincrement=True,
)
sa.Index("ix_attempts_job", job_attempts.c.job_id)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)
sa.Index("ix_events_job", job_events.c.job_id, job_events.c.id)

node_events = sa.Table(  # append-only: node lost / back, device unhealthy / healthy, drained...
    "node_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sqlite_autoincrement=True,
)
sa.Index("ix_node_events_node", node_events.c.node, node_events.c.id)


samples = sa.Table(  # the dashboard's history: level 0 raw, 1 five-minute and 2 hourly averages
    "samples",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("at", sa.Float, nullable=False),  # sample time; bucket start for averages
    sa.Column("total", sa.Float, nullable=False),  # schedulable devices
    sa.Column("allocated", sa.Float, nullable=False),  # devices allocated (fractions count as fractions)
    sa.Column("running", sa.Float, nullable=False),
    sa.Column("pending", sa.Float, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),  # waiting jobs by reason code
    sqlite_autoincrement=True,
)
sa.Index("ix_samples_level_at", samples.c.level, samples.c.at)


services = sa.Table(
    "services",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),  # the `model` clients send to the OpenAI-style routes
    sa.Column("spec", sa.JSON, nullable=False),  # the ServiceSpec (after planner sizing)
    sa.Column("generation", sa.Integer, nullable=False),  # +1 at every spec change (rollouts)
    sa.Column("min_replicas", sa.Integer, nullable=False),
    sa.Column("max_replicas", sa.Integer, nullable=False),
    sa.Column("desired", sa.Integer, nullable=False),  # the autoscaler's last answer
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

service_replicas = sa.Table(
    "service_replicas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id"), nullable=False, unique=True),
    sa.Column("idx", sa.Integer, nullable=False),  # replica number within the service (job name NAME-rIDX)
    sa.Column("port", sa.Integer, nullable=False),  # $PORT of the replica's process
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_service_replicas_service", service_replicas.c.service_id)

usage = sa.Table(  # accounting: chip-time of every ended attempt per node (control/usage.py); migration 0006
    "usage",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("attempt_id", sa.BigInteger, nullable=False),
    sa.Column("job_id", sa.BigInteger, nullable=False),
    sa.Column("job_name", sa.String(128), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),  # accelerator model
    sa.Column("chips", sa.Float, nullable=False),  # devices on this node (a fractional share as its fraction)
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("chip_s", sa.Float, nullable=False),  # chips x (ended_at - started_at)
    sa.Column("useful_chip_s", sa.Float, nullable=False),
    sa.Column("lost_chip_s", sa.Float, nullable=False),
    sa.Column("outcome", _enum(AttemptOutcome), nullable=False),
    sa.Column("energy_j", sa.Float, nullable=True),  # measured board energy of the chips (None: not measured)
    sa.Column("llm", sa.String(128), nullable=False, server_default=""),  # the job's `llm` ("": none); 0009
    sa.UniqueConstraint("attempt_id", "node", name="uq_usage_attempt_node"),
    sqlite_autoincrement=True,
)
sa.Index("ix_usage_ended", usage.c.ended_at)
sa.Index("ix_usage_job", usage.c.job_id)  # --by job reads the records in job order (no sort); 0009
sa.Index("ix_usage_model_node", usage.c.model, usage.c.node)  # the (node, model) pairs to price; 0009

service_tokens = sa.Table(  # accounting: tokens served through the gateway, per replica, per flush; migration 0009
    "service_tokens",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("flush_id", sa.String(36), nullable=False),  # one gateway flush (a retried flush is not counted twice)
    sa.Column("at", sa.Float, nullable=False),  # when the batch was flushed (its requests ended before)
    sa.Column("service", sa.String(128), nullable=False),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(128), nullable=False),
    sa.Column("served_model", sa.String(255), nullable=False),  # the `model` clients sent
    sa.Column("llm", sa.String(128), nullable=False),  # the service's catalog LLM ("": none)
    sa.Column("job_id", sa.BigInteger, nullable=False),  # the replica's job
    sa.Column("node", sa.String(255), nullable=False),  # where the replica ran ("": unknown)
    sa.Column("model", sa.String(128), nullable=False),  # its accelerator model ("": unknown or none)
    sa.Column("requests", sa.BigInteger, nullable=False),  # answers whose usage the engine reported
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("flush_id", "job_id", "node", name="uq_service_tokens_flush"),
    sqlite_autoincrement=True,
)
sa.Index("ix_service_tokens_at", service_tokens.c.at)

def make_engine(url: str, *, sync: str = "normal") -> Engine:
    """An engine for ``url``. SQLite: WAL, ``synchronous`` as given, a busy timeout, and write transactions that
    take the write lock at BEGIN (``BEGIN IMMEDIATE``) so that concurrent writers wait instead of failing."""
    if url.startswith("sqlite"):
        eng = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8,
                               max_overflow=16, poolclass=sa.pool.QueuePool)
        sync_level = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}[sync]

        @event.listens_for(eng, "connect")
        def _connect(dbapi_conn: sqlite3.Connection, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync_level}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(eng, "begin")
        def _begin(conn: sa.Connection) -> None:
            immediate = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return eng
    if url.startswith("postgres"):
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return sa.create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)
    raise SuanliError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0009"  # newest migration; a test checks it against Alembic's view of migrations/versions


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (Alembic ``upgrade head``); a no-op when it is there already."""
    try:  # the common case, without importing Alembic (it costs a few hundred ms at every start)
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD:
                return
    except sa.exc.DBAPIError:
        pass  # no table yet
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
