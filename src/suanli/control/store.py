"""The durable store: every operation is one transaction. Used by the API (submissions, cancel requests, admin
changes) and by the controller's reconcile loop (the only writer of job state)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from suanli.control import db, usage
from suanli.control.db import job_attempts, job_events, jobs, node_events, nodes, queues, tenants, tokens
from suanli.control.types import AttemptOutcome, DeviceHealth, NodeStatus, StopReason
from suanli.errors import SuanliError
from suanli.workload.spec import Job, JobSpec
from suanli.workload.states import JobState, check_transition


class NotFound(SuanliError):
    pass


class Conflict(SuanliError):
    pass


class Invalid(SuanliError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    admin: bool
    tenant: str | None  # None for an admin token


class Step(NamedTuple):
    """One state change of a job inside :meth:`Store.finish_attempt` (``values``: other columns to set)."""

    src: JobState
    dst: JobState
    message: str
    values: Mapping[str, Any] = MappingProxyType({})


@dataclass
class Recovery:
    """What the controller rebuilds its state from after a (re)start."""

    live: list[Any]  # rows of pending, requeued, running and preempted jobs, by id
    max_id: int
    attempts: dict[int, Any] = field(default_factory=dict)  # running job id -> its latest attempt row
    intents: dict[int, str] = field(default_factory=dict)  # running job id -> a stop begun before the restart


_LIVE = [JobState.PENDING.value, JobState.REQUEUED.value, JobState.RUNNING.value, JobState.PREEMPTED.value]
_INTENT_KINDS = ("running", "preempting", "stopping")  # "running" starts an attempt: no intent yet
_SCHED_COLS = (jobs.c.id, jobs.c.priority, jobs.c.queue, jobs.c.tenant, jobs.c.submit_time, jobs.c.sched)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


REVOKED = "x"  # a revoked token's row keeps its id (never reused) with a hash no token can have (not hex)


def _tombstone() -> str:
    return REVOKED + secrets.token_hex(31) + "0"  # 64 characters, like a SHA-256 in hex, but never one


def new_token() -> str:
    return "sl_" + secrets.token_urlsafe(32)


def sched_view(spec: JobSpec) -> dict[str, Any]:
    """The compact, already-validated fields the scheduler needs (stored so that a restart does not re-validate)."""
    j = spec.to_job(0)
    return {
        "count": j.count, "milli": j.milli, "models": list(j.models) if j.models else None, "per_node": j.per_node,
        "cpu_milli": j.cpu_milli, "mem_mib": j.mem_mib, "gang": j.gang, "expected_runtime": j.expected_runtime,
        "kind": j.kind, "preemptible": j.preemptible,
        **({"partitions": list(j.partitions)} if j.partitions else {}),
        **({"speeds": j.speeds} if j.speeds else {}), **({"llm": j.llm} if j.llm else {}),
    }


def job_from_row(r: Mapping[str, Any]) -> Job:
    s = r["sched"]
    if isinstance(s, str):
        s = json.loads(s)
    return Job(
        id=int(r["id"]), count=s["count"], milli=s["milli"], models=tuple(s["models"]) if s["models"] else None,
        per_node=s["per_node"], cpu_milli=s["cpu_milli"], mem_mib=s["mem_mib"], gang=s["gang"],
        priority=r["priority"], queue=r["queue"], tenant=r["tenant"], submit_time=r["submit_time"],
        expected_runtime=s["expected_runtime"], kind=s["kind"], preemptible=s["preemptible"],
        partitions=tuple(s["partitions"]) if s.get("partitions") else None, speeds=s.get("speeds"),
        llm=s.get("llm"),
    )


JOB_COLS = [jobs.c.id, jobs.c.name, jobs.c.tenant, jobs.c.queue, jobs.c.priority, jobs.c.state, jobs.c.submit_time,
            jobs.c.updated_at, jobs.c.attempts, jobs.c.failures, jobs.c.not_before, jobs.c.cancel_requested,
            jobs.c.exit_code, jobs.c.reason]


def _job_out(r: Mapping[str, Any], spec: bool = False) -> dict[str, Any]:
    d = {c.name: r[c.name] for c in JOB_COLS}
    d["cancel_requested"] = bool(d["cancel_requested"])
    if spec:
        s = r["spec"]
        d["spec"] = json.loads(s) if isinstance(s, str) else s
    return d


HISTORY_STEPS_S = (0.0, 300.0, 3600.0)  # level 0 is raw (the sampler's interval), then 5-minute and hourly buckets
HISTORY_KEEP_S = (2 * 3600.0, 2 * 86400.0, 8 * 86400.0)  # enough for the last hour / day / week


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._auth_cache: dict[str, tuple[float, Principal | None]] = {}
        self._exists: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, url: str, *, sync: str = "normal", migrate: bool = True) -> Store:
        eng = db.make_engine(url, sync=sync)
        if migrate:
            db.migrate(eng)
        return cls(eng)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE)."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- set-up ------------------------------------------------------------------------------------------
    def ensure_defaults(self) -> None:
        now = time.time()
        with self.write() as c:
            if c.execute(sa.select(tenants.c.id).where(tenants.c.name == "default")).first() is None:
                c.execute(tenants.insert().values(name="default", created_at=now))
            if c.execute(sa.select(queues.c.id).where(queues.c.name == "default")).first() is None:
                c.execute(queues.insert().values(name="default", weight=1.0, quota={}, borrow=True, created_at=now,
                                                 updated_at=now))

    def create_token(self, *, admin: bool, tenant: str | None, label: str = "") -> str:
        tok = new_token()
        with self.write() as c:
            q = sa.select(tenants.c.id).where(tenants.c.name == tenant)
            if tenant is not None and c.execute(q).first() is None:
                raise NotFound(f"no tenant {tenant!r}")
            c.execute(tokens.insert().values(hash=hash_token(tok), tenant=tenant, admin=admin, label=label,
                                             created_at=time.time()))
        return tok

    def authenticate_cached(self, token: str) -> tuple[bool, Principal | None]:
        """(True, the answer) when :meth:`authenticate` answered for ``token`` in the last 5 s (no database read:
        the API asks this on its event loop, and only goes to a worker thread for a read when it says False)."""
        hit = self._auth_cache.get(hash_token(token))
        if hit is not None and time.monotonic() - hit[0] < 5.0:
            return True, hit[1]
        return False, None

    def authenticate(self, token: str) -> Principal | None:
        h = hash_token(token)
        now = time.monotonic()
        hit = self._auth_cache.get(h)
        if hit is not None and now - hit[0] < 5.0:
            return hit[1]
        with self.read() as c:
            r = c.execute(sa.select(tokens.c.admin, tokens.c.tenant).where(tokens.c.hash == h)).first()
        p = None if r is None else Principal(bool(r.admin), None if r.admin else r.tenant)
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[h] = (now, p)
        return p

    def list_tokens(self, tenant: str | None = None, admin: bool | None = None) -> list[dict[str, Any]]:
        """Tokens (never their value or hash): id, tenant, admin, label, created_at."""
        q = sa.select(tokens.c.id, tokens.c.tenant, tokens.c.admin, tokens.c.label, tokens.c.created_at).where(
            tokens.c.hash.not_like(f"{REVOKED}%"))
        if tenant is not None:
            q = q.where(tokens.c.tenant == tenant)
        if admin is not None:
            q = q.where(tokens.c.admin == admin)
        with self.read() as c:
            rows = c.execute(q.order_by(tokens.c.id)).all()
        return [{**dict(r._mapping), "admin": bool(r.admin)} for r in rows]

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        """Revoke one token: it stops working at once (the authentication cache is dropped). Its row stays, with a
        hash no token can match, so that its id is never given to a later token (SQLite would reuse the largest
        id once deleted, and an admin's "revoke 7" would then hit the new one)."""
        with self.write() as c:
            r = c.execute(sa.select(tokens.c.id, tokens.c.tenant, tokens.c.admin, tokens.c.label,
                                    tokens.c.created_at).where(tokens.c.id == token_id,
                                                               tokens.c.hash.not_like(f"{REVOKED}%"))).first()
            if r is None:
                raise NotFound(f"no token {token_id}")
            c.execute(tokens.update().where(tokens.c.id == token_id).values(hash=_tombstone()))
        self._auth_cache.clear()
        return {**dict(r._mapping), "admin": bool(r.admin)}

    def revoke_by_value(self, token: str) -> dict[str, Any]:
        """Delete the token with this value (its holder revoking it)."""
        with self.write() as c:
            r = c.execute(sa.select(tokens.c.id).where(tokens.c.hash == hash_token(token))).first()
        if r is None:
            raise NotFound("no such token")
        return self.revoke_token(int(r.id))

    def rotate_tokens(self, *, tenant: str | None = None, admin: bool = False, label: str = "rotated") -> str:
        """Revoke every token of ``tenant`` (or every admin token) and issue one new token, in one transaction."""
        if admin == (tenant is not None):
            raise ValueError("rotate either a tenant's tokens or the admin tokens")
        tok = new_token()
        with self.write() as c:
            known = tenant is None or c.execute(sa.select(tenants.c.id).where(tenants.c.name == tenant)).first()
            if not known:
                raise NotFound(f"no tenant {tenant!r}")
            live = tokens.c.hash.not_like(f"{REVOKED}%")
            old = (sa.select(tokens.c.id).where(live, tokens.c.tenant == tenant, tokens.c.admin == sa.false())
                   if tenant is not None else sa.select(tokens.c.id).where(live, tokens.c.admin == sa.true()))
            for (tid,) in c.execute(old).all():  # revoked, their rows kept (ids are never reused)
                c.execute(tokens.update().where(tokens.c.id == tid).values(hash=_tombstone()))
            c.execute(tokens.insert().values(hash=hash_token(tok), tenant=tenant, admin=admin, label=label,
                                             created_at=time.time()))
        self._auth_cache.clear()
        return tok

    # -- tenants & queues --------------------------------------------------------------------------------
    def list_tenants(self) -> list[dict[str, Any]]:
        with self.read() as c:
            rows = c.execute(sa.select(tenants.c.name, tenants.c.created_at).order_by(tenants.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def create_tenant(self, name: str) -> tuple[dict[str, Any], str]:
        now = time.time()
        tok = new_token()
        with self.write() as c:
            if c.execute(sa.select(tenants.c.id).where(tenants.c.name == name)).first() is not None:
                raise Conflict(f"tenant {name!r} exists")
            c.execute(tenants.insert().values(name=name, created_at=now))
            c.execute(tokens.insert().values(hash=hash_token(tok), tenant=name, admin=False, label="created",
                                             created_at=now))
        return {"name": name, "created_at": now}, tok

    def tenant_exists(self, name: str) -> bool:
        if ("t", name) in self._exists:  # tenants and queues are never deleted: a positive answer stays true
            return True
        with self.read() as c:
            ok = c.execute(sa.select(tenants.c.id).where(tenants.c.name == name)).first() is not None
        if ok:
            self._exists.add(("t", name))
        return ok

    def names_known(self, tenant: str, queue: str) -> bool:
        """True when both names are already known to exist, without a query (a cheap pre-check for submissions;
        False means: ask :meth:`tenant_exists` and :meth:`queue_exists`)."""
        return ("t", tenant) in self._exists and ("q", queue) in self._exists

    def list_queues(self) -> list[dict[str, Any]]:
        with self.read() as c:
            rows = c.execute(sa.select(queues.c.name, queues.c.weight, queues.c.quota, queues.c.borrow,
                                       queues.c.partitions, queues.c.updated_at).order_by(queues.c.name)).all()
        return [dict(r._mapping) for r in rows]

    def create_queue(self, name: str, weight: float, quota: dict[str, int], borrow: bool,
                     partitions: list[str] | None = None) -> dict[str, Any]:
        now = time.time()
        with self.write() as c:
            if c.execute(sa.select(queues.c.id).where(queues.c.name == name)).first() is not None:
                raise Conflict(f"queue {name!r} exists")
            c.execute(queues.insert().values(name=name, weight=weight, quota=quota, borrow=borrow,
                                             partitions=partitions, created_at=now, updated_at=now))
        return {"name": name, "weight": weight, "quota": quota, "borrow": borrow, "partitions": partitions,
                "updated_at": now}

    def update_queue(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self.write() as c:
            if c.execute(sa.select(queues.c.id).where(queues.c.name == name)).first() is None:
                raise NotFound(f"no queue {name!r}")
            if changes.get("partitions") == []:
                changes = {**changes, "partitions": None}  # back to any node
            if changes:
                c.execute(queues.update().where(queues.c.name == name).values(**changes, updated_at=time.time()))
        return next(q for q in self.list_queues() if q["name"] == name)

    def queue_exists(self, name: str) -> bool:
        if ("q", name) in self._exists:
            return True
        with self.read() as c:
            ok = c.execute(sa.select(queues.c.id).where(queues.c.name == name)).first() is not None
        if ok:
            self._exists.add(("q", name))
        return ok

    # -- nodes ---------------------------------------------------------------------------------------------
    def upsert_node(self, spec: dict[str, Any], devs: Sequence[dict[str, Any]], *, now: float | None = None
                    ) -> None:
        """Register (or re-register) a node and its devices, status up. The drained flag and the health of a
        device that keeps its index and model survive a re-registration."""
        self.upsert_nodes([(spec, devs)], now=now)

    def upsert_nodes(self, items: Sequence[tuple[dict[str, Any], Sequence[dict[str, Any]]]], *,
                     now: float | None = None) -> None:
        """:meth:`upsert_node` for many nodes in one transaction (a fleet of 1,250 nodes registers at once instead
        of paying one commit per node)."""
        now = time.time() if now is None else now
        with self.write() as c:
            for spec, devs in items:
                self._upsert_node(c, spec, devs, now)

    @staticmethod
    def _upsert_node(c: sa.Connection, spec: dict[str, Any], devs: Sequence[dict[str, Any]], now: float) -> None:
        dv = db.devices
        r = c.execute(sa.select(nodes.c.id).where(nodes.c.name == spec["name"])).first()
        if r is None:
            nid = c.execute(nodes.insert().values(**spec, drained=False, updated_at=now, status=NodeStatus.UP,
                                                  last_seen=now)).inserted_primary_key[0]
            old: dict[int, Any] = {}
            c.execute(node_events.insert().values(
                node=spec["name"], at=now, kind="registered",
                message=f"{spec['devices']}x {spec['accelerator'] or 'CPU only'}"))
        else:
            nid = r.id
            c.execute(nodes.update().where(nodes.c.id == nid).values(**spec, updated_at=now,
                                                                     status=NodeStatus.UP, last_seen=now))
            old = {d.local_index: d for d in c.execute(sa.select(dv).where(dv.c.node_id == nid)).all()}
            c.execute(dv.delete().where(dv.c.node_id == nid))
        rows = []
        for d in devs:
            o = old.get(d["local_index"])
            keep = o is not None and o.model == d["model"]
            rows.append({"health": o.health if keep else DeviceHealth.HEALTHY,
                         "health_reason": o.health_reason if keep else None,
                         "health_at": o.health_at if keep else None, **d, "node_id": nid})
        if rows:
            c.execute(dv.insert(), rows)

    def list_nodes(self, *, after: str | None = None, limit: int | None = None, status: str | None = None,
                   accelerator: str | None = None) -> list[dict[str, Any]]:
        """Nodes by name; ``after`` (a name) and ``limit`` page through them, ``status``/``accelerator`` filter."""
        q = sa.select(nodes)
        if after is not None:
            q = q.where(nodes.c.name > after)
        if status is not None:
            q = q.where(nodes.c.status == status)
        if accelerator is not None:
            q = q.where(nodes.c.accelerator == accelerator)
        q = q.order_by(nodes.c.name)
        if limit is not None:
            q = q.limit(limit)
        with self.read() as c:
            rows = c.execute(q).all()
        return [_node_out(r) for r in rows]

    def get_node(self, name: str) -> dict[str, Any]:
        """One node as :meth:`list_nodes` gives it; :class:`NotFound` if there is none of that name."""
        with self.read() as c:
            r = c.execute(sa.select(nodes).where(nodes.c.name == name)).first()
        if r is None:
            raise NotFound(f"no node {name!r}")
        return _node_out(r)

    def list_devices(self, *, node: str | None = None, health: str | None = None, after_node: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Devices by node name and index; ``node``/``health`` filter; ``after_node`` and ``limit`` page (by node:
        the devices of nodes named after ``after_node``)."""
        dv = db.devices
        q = (sa.select(nodes.c.name.label("node"), dv.c.local_index, dv.c.model, dv.c.uuid, dv.c.memory_mib,
                       dv.c.declared, dv.c.health, dv.c.health_reason)
             .join(nodes, nodes.c.id == dv.c.node_id))
        if node is not None:
            q = q.where(nodes.c.name == node)
        if health is not None:
            q = q.where(dv.c.health == health)
        if after_node is not None:
            q = q.where(nodes.c.name > after_node)
        q = q.order_by(nodes.c.name, dv.c.local_index)
        if limit is not None:
            q = q.limit(limit)
        with self.read() as c:
            rows = c.execute(q).all()
        return [dict(r._mapping) for r in rows]

    def set_drained(self, name: str, drained: bool) -> dict[str, Any]:
        now = time.time()
        with self.write() as c:
            n = c.execute(nodes.update().where(nodes.c.name == name).values(drained=drained, updated_at=now))
            if n.rowcount == 0:
                raise NotFound(f"no node {name!r}")
            c.execute(node_events.insert().values(node=name, at=now, kind="drained" if drained else "undrained",
                                                  message="by an admin"))
        return self.get_node(name)

    def set_node_partitions(self, name: str, partitions: Sequence[str] | None) -> dict[str, Any]:
        """An admin's partitions for node ``name``: a list (an empty one: in no partition) replaces the partitions
        the node reports (``suanli up --partition``, the Ray label, the fleet file) until cleared with None. Kept in
        ``nodes.partitions_override``, which registering the node again never writes, so it outlives restarts.
        Names are checked by the caller (the API); duplicates are dropped, the order kept."""
        now = time.time()
        value = None if partitions is None else list(dict.fromkeys(partitions))
        with self.write() as c:
            n = c.execute(nodes.update().where(nodes.c.name == name)
                          .values(partitions_override=value, updated_at=now))
            if n.rowcount == 0:
                raise NotFound(f"no node {name!r}")
            msg = ("cleared by an admin: the node's own partitions apply" if value is None else
                   f"set by an admin: {','.join(value)}" if value else "set by an admin: in no partition")
            c.execute(node_events.insert().values(node=name, at=now, kind="partitions", message=msg))
        return self.get_node(name)

    def node_flags(self) -> list[tuple[str, bool, NodeStatus]]:
        """(name, drained, status) of every node."""
        with self.read() as c:
            rows = c.execute(sa.select(nodes.c.name, nodes.c.drained, nodes.c.status)).all()
        return [(r.name, bool(r.drained), NodeStatus(r.status)) for r in rows]

    def set_node_status(self, name: str, status: NodeStatus, message: str, now: float) -> bool:
        """Mark a node up or lost, with a node event; False (and nothing written) if it already was."""
        with self.write() as c:
            n = c.execute(nodes.update().where(nodes.c.name == name, nodes.c.status != status)
                          .values(status=status, updated_at=now))
            if n.rowcount == 0:
                return False
            c.execute(node_events.insert().values(node=name, at=now, kind=f"node-{status.value}", message=message))
        return True

    def set_device_health(self, node: str, index: int, health: DeviceHealth, reason: str | None, now: float
                          ) -> bool:
        """Record a device's health, with a node event; False (and nothing written) if it did not change."""
        dv = db.devices
        with self.write() as c:
            nid = c.execute(sa.select(nodes.c.id).where(nodes.c.name == node)).scalar()
            if nid is None:
                raise NotFound(f"no node {node!r}")
            row = c.execute(sa.select(dv.c.health, dv.c.health_reason)
                            .where(dv.c.node_id == nid, dv.c.local_index == index)).first()
            if row is None:
                raise NotFound(f"node {node!r} has no device {index}")
            reason = None if health == DeviceHealth.HEALTHY else (reason or "unhealthy")
            if row.health == health and row.health_reason == reason:
                return False
            c.execute(dv.update().where(dv.c.node_id == nid, dv.c.local_index == index)
                      .values(health=health, health_reason=reason, health_at=now))
            c.execute(node_events.insert().values(
                node=node, at=now, kind=f"device-{health.value}",
                message=f"device {index}" + (f": {reason}" if reason else "")))
        return True

    def node_events_mark(self) -> int:
        """The newest node event's id (0: none): every change of a node's drained flag, status or device health
        writes one, so the controller re-reads those only when this moved (one index lookup instead of every
        node's row, each tick)."""
        with self.read() as c:
            return int(c.execute(sa.select(sa.func.max(node_events.c.id))).scalar() or 0)

    def unhealthy_devices(self) -> dict[tuple[str, int], str]:
        """(node, local index) -> reason, for every device marked unhealthy."""
        dv = db.devices
        with self.read() as c:
            rows = c.execute(sa.select(nodes.c.name, dv.c.local_index, dv.c.health_reason)
                             .join(nodes, nodes.c.id == dv.c.node_id)
                             .where(dv.c.health == DeviceHealth.UNHEALTHY)).all()
        return {(r.name, int(r.local_index)): r.health_reason or "unhealthy" for r in rows}

    def node_events(self, node: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` node events (of one node, or all), oldest first."""
        q = sa.select(node_events.c.node, node_events.c.at, node_events.c.kind, node_events.c.message)
        if node is not None:
            q = q.where(node_events.c.node == node)
        with self.read() as c:
            rows = c.execute(q.order_by(node_events.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in reversed(rows)]

    # -- jobs (API side) -----------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """Store a new job (state pending) and its first event, in one transaction."""
        return self.submit_many([spec])[0]

    def submit_many(self, specs: Sequence[JobSpec]) -> list[dict[str, Any]]:
        """Store several new jobs and their events in one transaction (group commit of concurrent submissions):
        all of them are stored or none."""
        now = time.time()
        rows = [{"name": sp.name, "tenant": sp.tenant, "queue": sp.queue, "priority": sp.priority,
                 "state": JobState.PENDING.value, "spec": sp.model_dump(mode="json"), "sched": sched_view(sp),
                 "submit_time": now, "updated_at": now, "attempts": 0, "failures": 0, "not_before": None,
                 "cancel_requested": False, "exit_code": None, "reason": None} for sp in specs]
        with self.write() as c:
            if len(rows) == 1:
                ids = [c.execute(jobs.insert().values(**rows[0])).inserted_primary_key[0]]
            else:
                res = c.execute(jobs.insert().returning(jobs.c.id, sort_by_parameter_order=True), rows)
                ids = [r[0] for r in res]
            c.execute(job_events.insert(), [{"job_id": i, "at": now, "kind": "submitted",
                                             "message": f"queue {r['queue']}, tenant {r['tenant']}"}
                                            for i, r in zip(ids, rows, strict=True)])
        return [_job_out({**r, "id": i}, spec=True) for i, r in zip(ids, rows, strict=True)]

    def get_job(self, job_id: int, tenant: str | None = None) -> dict[str, Any]:
        q = sa.select(*JOB_COLS, jobs.c.spec).where(jobs.c.id == job_id)
        if tenant is not None:
            q = q.where(jobs.c.tenant == tenant)
        with self.read() as c:
            r = c.execute(q).first()
            if r is None:
                raise NotFound(f"no job {job_id}")
            att = c.execute(sa.select(job_attempts).where(job_attempts.c.job_id == job_id)
                            .order_by(job_attempts.c.n)).all()
        out = _job_out(r._mapping, spec=True)
        out["attempt_list"] = [{k: v for k, v in a._mapping.items() if k not in ("id", "job_id")} for a in att]
        return out

    def list_jobs(self, *, tenant: str | None = None, state: Sequence[str] = (), queue: str | None = None,
                  after: int | None = None, limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
        """Jobs newest first; ``after`` is the cursor (the last id of the previous page)."""
        q = sa.select(*JOB_COLS)
        if tenant is not None:
            q = q.where(jobs.c.tenant == tenant)
        if state:
            q = q.where(jobs.c.state.in_(list(state)))
        if queue is not None:
            q = q.where(jobs.c.queue == queue)
        if after is not None:
            q = q.where(jobs.c.id < after)
        q = q.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self.read() as c:
            rows = c.execute(q).all()
        items = [_job_out(r._mapping) for r in rows[:limit]]
        nxt = items[-1]["id"] if len(rows) > limit else None
        return items, nxt

    def request_cancel(self, job_id: int, tenant: str | None = None) -> dict[str, Any]:
        """Mark a job for cancellation; the reconcile loop carries it out (it alone changes job state)."""
        now = time.time()
        with self.write() as c:
            q = sa.select(jobs.c.state, jobs.c.cancel_requested).where(jobs.c.id == job_id)
            if tenant is not None:
                q = q.where(jobs.c.tenant == tenant)
            r = c.execute(q).first()
            if r is None:
                raise NotFound(f"no job {job_id}")
            if JobState(r.state) in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                raise Conflict(f"job {job_id} is already {r.state}")
            if not r.cancel_requested:
                c.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True))
                c.execute(job_events.insert().values(job_id=job_id, at=now, kind="cancel-requested", message=""))
        return self.get_job(job_id)

    def events(self, job_id: int, tenant: str | None = None) -> list[dict[str, Any]]:
        with self.read() as c:
            q = sa.select(jobs.c.id).where(jobs.c.id == job_id)
            if tenant is not None:
                q = q.where(jobs.c.tenant == tenant)
            if c.execute(q).first() is None:
                raise NotFound(f"no job {job_id}")
            rows = c.execute(sa.select(job_events.c.at, job_events.c.kind, job_events.c.message)
                             .where(job_events.c.job_id == job_id).order_by(job_events.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def job_counts(self) -> dict[str, int]:
        with self.read() as c:
            rows = c.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)).all()
        return {r[0]: int(r[1]) for r in rows}

    # -- jobs (reconcile-loop side) ------------------------------------------------------------------------
    @staticmethod
    def transition(c: sa.Connection, job_id: int, src: JobState, dst: JobState, now: float, message: str = "",
                   **values: Any) -> None:
        """Change a job's state inside transaction ``c``: checked against the state machine and against the row
        (compare-and-set on the old state), with its event."""
        check_transition(src, dst)
        r = c.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.state == src.value)
                      .values(state=dst.value, updated_at=now, **values))
        if r.rowcount != 1:
            raise Conflict(f"job {job_id} was not {src} in the store")
        c.execute(job_events.insert().values(job_id=job_id, at=now, kind=dst.value, message=message))

    def event(self, c: sa.Connection, job_id: int, kind: str, message: str, now: float) -> None:
        c.execute(job_events.insert().values(job_id=job_id, at=now, kind=kind, message=message))

    def add_event(self, job_id: int, kind: str, message: str, now: float) -> None:
        """One job event in its own transaction (an intent recorded before it is acted on)."""
        with self.write() as c:
            self.event(c, job_id, kind, message, now)

    def recovery(self) -> Recovery:
        """Live jobs, the largest job id, and for running jobs their latest attempt and any stop begun."""
        cols = [jobs.c.id, jobs.c.state, jobs.c.priority, jobs.c.queue, jobs.c.tenant, jobs.c.submit_time,
                jobs.c.sched, jobs.c.not_before, jobs.c.failures, jobs.c.attempts]
        with self.read() as c:
            live = c.execute(sa.select(*cols).where(jobs.c.state.in_(_LIVE)).order_by(jobs.c.id)).all()
            out = Recovery(live, int(c.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0))
            running_ids = [r.id for r in live if r.state == JobState.RUNNING.value]
            for i in range(0, len(running_ids), 500):
                chunk = running_ids[i : i + 500]
                for a in c.execute(sa.select(job_attempts).where(job_attempts.c.job_id.in_(chunk))
                                   .order_by(job_attempts.c.n)).all():
                    out.attempts[a.job_id] = a  # the last one wins
                for e in c.execute(sa.select(job_events.c.job_id, job_events.c.kind).where(
                        job_events.c.job_id.in_(chunk), job_events.c.kind.in_(_INTENT_KINDS))
                        .order_by(job_events.c.id)).all():
                    out.intents[e.job_id] = e.kind  # the last one wins
        return out

    def pending_after(self, after: int, known: Container[int], limit: int = 20000) -> list[Any]:
        """Pending jobs with an id above ``after`` that are not in ``known``, by id (the scheduler's columns).
        SQLite commits ids in order, so ``after`` can be the largest id seen; with PostgreSQL the caller passes an
        older horizon (an id can become visible after a larger one): ids first, rows only for the new ones."""
        pend = jobs.c.state == JobState.PENDING.value
        with self.read() as c:
            if self.is_sqlite:
                rows = c.execute(sa.select(*_SCHED_COLS).where(jobs.c.id > after, pend).order_by(jobs.c.id)
                                 .limit(limit)).all()
                return [r for r in rows if r.id not in known]
            ids = c.execute(sa.select(jobs.c.id).where(jobs.c.id > after, pend).order_by(jobs.c.id)
                            .limit(limit * 5 // 2)).scalars().all()
            new = [i for i in ids if i not in known][:limit]
            rows = []
            for k in range(0, len(new), 1000):
                rows += c.execute(sa.select(*_SCHED_COLS).where(jobs.c.id.in_(new[k : k + 1000]), pend)).all()
        rows.sort(key=lambda r: r.id)
        return rows

    def cancel_requests(self) -> list[tuple[int, JobState]]:
        """(job id, state) of every job whose cancel flag is set."""
        with self.read() as c:
            rows = c.execute(sa.select(jobs.c.id, jobs.c.state).where(jobs.c.cancel_requested == sa.true())).all()
        return [(int(r.id), JobState(r.state)) for r in rows]

    def clear_cancel_flag(self, job_id: int) -> None:
        with self.write() as c:
            c.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=False))

    def cancel_waiting(self, job_id: int, state: JobState, now: float) -> None:
        with self.write() as c:
            self.transition(c, job_id, state, JobState.CANCELLED, now, "cancelled while waiting",
                            cancel_requested=False)

    def requeue_preempted(self, job_id: int, now: float) -> None:
        """The second step of a preemption a crash interrupted."""
        with self.write() as c:
            self.transition(c, job_id, JobState.PREEMPTED, JobState.REQUEUED, now, "requeued after restart")

    def job_spec(self, job_id: int) -> dict[str, Any]:
        with self.read() as c:
            s = c.execute(sa.select(jobs.c.spec).where(jobs.c.id == job_id)).scalar_one()
        return json.loads(s) if isinstance(s, str) else s

    def job_failures(self, job_id: int) -> int:
        with self.read() as c:
            return int(c.execute(sa.select(jobs.c.failures).where(jobs.c.id == job_id)).scalar_one())

    def job_specs(self, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The specs of several jobs (one query per 500 ids)."""
        out: dict[int, dict[str, Any]] = {}
        with self.read() as c:
            for k in range(0, len(job_ids), 500):
                for r in c.execute(sa.select(jobs.c.id, jobs.c.spec).where(jobs.c.id.in_(job_ids[k : k + 500]))):
                    out[int(r.id)] = json.loads(r.spec) if isinstance(r.spec, str) else r.spec
        return out

    def begin_attempt(self, job_id: int, now: float, placement: dict[str, Any], where: str) -> tuple[int, int]:
        """Record the next attempt of a waiting job (job running, attempt row) before it is spawned:
        (attempt id, attempt number)."""
        return self.begin_attempts([(job_id, placement, where)], now)[0]

    def begin_attempts(self, items: Sequence[tuple[int, dict[str, Any], str]], now: float) -> list[tuple[int, int]]:
        """:meth:`begin_attempt` for the starts of one scheduling pass, ``(job id, placement, where)`` each, in one
        transaction (all recorded or none; a job that is not waiting any more fails it all, with Conflict):
        [(attempt id, attempt number)] in the same order. A pass that starts hundreds of jobs paid one commit each."""
        if not items:
            return []
        ids = [jid for jid, _, _ in items]
        if len(set(ids)) != len(ids):
            raise ValueError("a job appears twice in one batch of starts")
        with self.write() as c:
            cur: dict[int, tuple[str, int]] = {}
            for k in range(0, len(ids), 500):
                for r in c.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts)
                                   .where(jobs.c.id.in_(ids[k : k + 500]))):
                    cur[int(r.id)] = (r.state, int(r.attempts))
            upd, evs, atts = [], [], []
            for jid, placement, where in items:
                if jid not in cur:
                    raise NotFound(f"no job {jid}")
                st, n0 = cur[jid]
                check_transition(JobState(st), JobState.RUNNING)
                n = n0 + 1
                upd.append({"b_id": jid, "b_src": st, "b_n": n})
                evs.append({"job_id": jid, "at": now, "kind": JobState.RUNNING.value,
                            "message": f"attempt {n} on {where}"})
                atts.append({"job_id": jid, "n": n, "started_at": now, "placement": placement})
            c.execute(jobs.update().where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == sa.bindparam("b_src"))
                      .values(state=JobState.RUNNING.value, updated_at=now, attempts=sa.bindparam("b_n"),
                              not_before=None), upd)
            # compare-and-set, checked for the batch: each row must have moved from the state read above
            moved = 0
            for k in range(0, len(ids), 500):
                chunk = ids[k : k + 500]
                moved += int(c.execute(sa.select(sa.func.count()).select_from(jobs).where(
                    jobs.c.id.in_(chunk), jobs.c.state == JobState.RUNNING.value, jobs.c.updated_at == now)).scalar()
                    or 0)
            if moved != len(ids):
                raise Conflict(f"{len(ids) - moved} of {len(ids)} jobs changed state while their start was recorded")
            c.execute(job_events.insert(), evs)
            if len(atts) == 1:
                aids = [c.execute(job_attempts.insert().values(**atts[0])).inserted_primary_key[0]]
            else:
                res = c.execute(job_attempts.insert().returning(job_attempts.c.id, sort_by_parameter_order=True),
                                atts)
                aids = [r[0] for r in res]
        return [(int(a), int(x["n"])) for a, x in zip(aids, atts, strict=True)]

    def record_spawned(self, attempt_id: int, procs: list[Any], pgid: int | None) -> None:
        """What the executor needs to find the attempt's processes again (after they were spawned)."""
        self.record_spawned_many([(attempt_id, procs, pgid)])

    def record_spawned_many(self, items: Sequence[tuple[int, list[Any], int | None]]) -> None:
        """:meth:`record_spawned` for several attempts, ``(attempt id, procs, pgid)`` each, in one transaction."""
        if not items:
            return
        with self.write() as c:
            c.execute(job_attempts.update().where(job_attempts.c.id == sa.bindparam("b_id"))
                      .values(procs=sa.bindparam("b_procs"), pgid=sa.bindparam("b_pgid")),
                      [{"b_id": a, "b_procs": p, "b_pgid": g} for a, p, g in items])

    def spawn_failed(self, job_id: int, attempt_id: int, now: float, error: str) -> None:
        with self.write() as c:
            c.execute(job_attempts.update().where(job_attempts.c.id == attempt_id)
                      .values(ended_at=now, exit_code=None, outcome=AttemptOutcome.SPAWN_FAILED))
            self._record_usage(c, attempt_id, now, AttemptOutcome.SPAWN_FAILED)
            failures = c.execute(sa.select(jobs.c.failures).where(jobs.c.id == job_id)).scalar_one()
            self.transition(c, job_id, JobState.RUNNING, JobState.FAILED, now, f"could not start: {error}",
                            failures=int(failures) + 1, reason="spawn failed")

    def finish_attempt(self, job_id: int, attempt_id: int, now: float, outcome: AttemptOutcome,
                       exit_code: int | None, stop_reason: StopReason | None, steps: Sequence[Step],
                       lost_device_s: float | None = None, energy_j: Mapping[str, float | None] | None = None
                       ) -> None:
        """The end of an attempt and the job's next state(s), with its usage records, in one transaction
        (``energy_j``: measured board energy per node, where the executor read it)."""
        self.finish_attempts([(job_id, attempt_id, outcome, exit_code, stop_reason, steps, lost_device_s, energy_j)],
                             now)

    def finish_attempts(self, items: Sequence[tuple[int, int, AttemptOutcome, int | None, StopReason | None,
                                                    Sequence[Step], float | None, Mapping[str, float | None] | None]],
                        now: float) -> None:
        """:meth:`finish_attempt` for several attempts, ``(job id, attempt id, outcome, exit code, stop reason,
        steps, lost device-seconds, energy)`` each, in one transaction: all recorded or none."""
        if not items:
            return
        if len({it[0] for it in items}) != len(items):
            raise ValueError("a job appears twice in one batch of ended attempts")
        with self.write() as c:
            # the common end (one state change) as one statement per kind of change, compare-and-set checked by
            # count; a preemption's two steps one by one
            groups: dict[tuple[JobState, JobState, tuple[str, ...]], list[Any]] = {}
            evs: list[dict[str, Any]] = []
            for it in items:
                steps = it[5]
                if len(steps) != 1:
                    for st in steps:
                        self.transition(c, it[0], st.src, st.dst, now, st.message, **st.values)
                    continue
                st = steps[0]
                check_transition(st.src, st.dst)
                groups.setdefault((st.src, st.dst, tuple(sorted(st.values))), []).append(it)
            for (src, dst, cols), its in groups.items():
                c.execute(jobs.update().where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == src.value)
                          .values(state=dst.value, updated_at=now, **{k: sa.bindparam("b_" + k) for k in cols}),
                          [{"b_id": it[0], **{"b_" + k: it[5][0].values[k] for k in cols}} for it in its])
                ids = [it[0] for it in its]
                moved = 0
                for k in range(0, len(ids), 500):
                    moved += int(c.execute(sa.select(sa.func.count()).select_from(jobs).where(
                        jobs.c.id.in_(ids[k : k + 500]), jobs.c.state == dst.value, jobs.c.updated_at == now))
                        .scalar() or 0)
                if moved != len(ids):
                    raise Conflict(f"{len(ids) - moved} of {len(ids)} jobs were not {src} in the store")
                evs += [{"job_id": it[0], "at": now, "kind": dst.value, "message": it[5][0].message} for it in its]
            if evs:
                c.execute(job_events.insert(), evs)
            c.execute(job_attempts.update().where(job_attempts.c.id == sa.bindparam("b_id"))
                      .values(ended_at=now, exit_code=sa.bindparam("b_code"), outcome=sa.bindparam("b_outcome"),
                              stop_reason=sa.bindparam("b_stop"), lost_device_s=sa.bindparam("b_lost")),
                      [{"b_id": it[1], "b_code": it[3], "b_outcome": it[2], "b_stop": it[4], "b_lost": it[6]}
                       for it in items])
            self._record_usages(c, [(it[1], it[2], it[6], it[7]) for it in items], now)

    def lost_device_seconds(self) -> float:
        """Work lost to node losses and unhealthy devices, all attempts together (device-seconds)."""
        with self.read() as c:
            return float(c.execute(sa.select(sa.func.coalesce(sa.func.sum(job_attempts.c.lost_device_s), 0.0)))
                         .scalar() or 0.0)

    def requeue_lost(self, job_id: int, attempt_id: int | None, now: float, why: str,
                     outcome: AttemptOutcome = AttemptOutcome.LOST) -> None:
        """End an attempt that cannot go on (never spawned, partial, placement gone) and requeue the job, no
        failure counted."""
        with self.write() as c:
            if attempt_id is not None:
                n = c.execute(job_attempts.update()
                              .where(job_attempts.c.id == attempt_id, job_attempts.c.ended_at.is_(None))
                              .values(ended_at=now, outcome=outcome))
                if n.rowcount == 1:
                    self._record_usage(c, attempt_id, now, outcome)
            self.transition(c, job_id, JobState.RUNNING, JobState.REQUEUED, now, why)

    def record_adopted(self, job_id: int, attempt_id: int, message: str, now: float,
                       record: tuple[list[Any], int | None] | None = None) -> None:
        """The event of a re-adopted attempt, and what the executor found of it when nothing was recorded."""
        with self.write() as c:
            self.event(c, job_id, "adopted", message, now)
            if record is not None:
                c.execute(job_attempts.update().where(job_attempts.c.id == attempt_id)
                          .values(procs=record[0], pgid=record[1]))

    @staticmethod
    def _record_usage(c: sa.Connection, attempt_id: int, now: float, outcome: AttemptOutcome,
                      lost_device_s: float | None = None, energy_j: Mapping[str, float | None] | None = None
                      ) -> None:
        """The usage records of an attempt that ends in transaction ``c`` (control/usage.py)."""
        Store._record_usages(c, [(attempt_id, outcome, lost_device_s, energy_j)], now)

    @staticmethod
    def _record_usages(c: sa.Connection, items: Sequence[tuple[int, AttemptOutcome, float | None,
                                                               Mapping[str, float | None] | None]],
                       now: float) -> None:
        """:meth:`_record_usage` for several attempts ``(attempt id, outcome, lost device-seconds, energy)``: one
        read of their attempts and jobs, one insert."""
        found: dict[int, Any] = {}
        ids = [it[0] for it in items]
        for k in range(0, len(ids), 500):
            for a in c.execute(sa.select(job_attempts.c.id, job_attempts.c.job_id, job_attempts.c.started_at,
                                         job_attempts.c.placement, jobs.c.name, jobs.c.tenant, jobs.c.queue,
                                         jobs.c.sched)
                               .join(jobs, jobs.c.id == job_attempts.c.job_id)
                               .where(job_attempts.c.id.in_(ids[k : k + 500]))):
                found[int(a.id)] = a
        rows: list[dict[str, Any]] = []
        for attempt_id, outcome, lost_device_s, energy_j in items:
            a = found.get(int(attempt_id))
            if a is None:
                raise NotFound(f"no attempt {attempt_id}")
            sched = json.loads(a.sched) if isinstance(a.sched, str) else a.sched
            rows += usage.records(attempt_id=attempt_id, job_id=int(a.job_id),
                                  job={"name": a.name, "tenant": a.tenant, "queue": a.queue,
                                       "kind": (sched or {}).get("kind", ""), "llm": (sched or {}).get("llm")},
                                  placement=a.placement, started_at=a.started_at, ended_at=now, outcome=outcome,
                                  lost_device_s=lost_device_s, energy_j=energy_j)
        if rows:
            c.execute(db.usage.insert(), rows)

    # -- dashboard reads -------------------------------------------------------------------------------------
    def fleet(self) -> dict[str, Any]:
        """Every node and device with its state (busy / free / drained / unhealthy / lost) and the jobs on it, in
        one read transaction: {"nodes": [...], "jobs": {id: {name, tenant, queue}}}. Devices are listed as
        ``[local_index, model, state, [job ids]]`` (compact: a fleet has tens of thousands of them)."""
        dv = db.devices
        with self.read() as c:
            ns = c.execute(sa.select(nodes.c.id, nodes.c.name, nodes.c.rack, nodes.c.domain, nodes.c.accelerator,
                                     nodes.c.drained, nodes.c.status).order_by(nodes.c.rack, nodes.c.name)).all()
            ds = c.execute(sa.select(dv.c.node_id, dv.c.local_index, dv.c.model, dv.c.health)
                           .order_by(dv.c.node_id, dv.c.local_index)).all()
            run = c.execute(sa.select(job_attempts.c.job_id, job_attempts.c.placement, jobs.c.name, jobs.c.tenant,
                                      jobs.c.queue)
                            .join(jobs, jobs.c.id == job_attempts.c.job_id)
                            .where(job_attempts.c.ended_at.is_(None), jobs.c.state == JobState.RUNNING.value)).all()
        on: dict[tuple[str, int], list[int]] = {}
        jobs_out: dict[int, dict[str, Any]] = {}
        for jid, pl, jname, tenant, queue in run:
            pl = pl if isinstance(pl, dict) else json.loads(pl)
            jobs_out[int(jid)] = {"name": jname, "tenant": tenant, "queue": queue}
            for node, loc in zip(pl.get("nodes", []), pl.get("local", []), strict=False):
                for i in loc:
                    on.setdefault((node, int(i)), []).append(int(jid))
        by_node: dict[int, list[Any]] = {}
        for nid, idx, model, health in ds:
            by_node.setdefault(nid, []).append((idx, model, health == DeviceHealth.UNHEALTHY))
        out = []
        none: list[int] = []
        for nid, name, rack, domain, acc, drained, status in ns:
            lost = status == NodeStatus.LOST
            idle = "lost" if lost else "drained" if drained else "free"
            devs = []
            for idx, model, bad in by_node.get(nid, ()):
                js = on.get((name, idx), none)
                devs.append([idx, model, "lost" if lost else "unhealthy" if bad else "busy" if js else idle, js])
            out.append({"name": name, "rack": rack, "domain": domain, "accelerator": acc, "drained": bool(drained),
                        "lost": lost, "devices": devs})
        return {"nodes": out, "jobs": jobs_out}

    def queue_usage(self, tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Per queue: devices in use by running jobs per accelerator model, running jobs, and waiting jobs (only
        ``tenant``'s, when given: the usage is the queue's, the jobs counted are the tenant's)."""
        with self.read() as c:
            run = c.execute(sa.select(jobs.c.queue, job_attempts.c.placement)
                            .join(jobs, jobs.c.id == job_attempts.c.job_id)
                            .where(job_attempts.c.ended_at.is_(None), jobs.c.state == JobState.RUNNING.value)).all()
            wq = (sa.select(jobs.c.queue, sa.func.count())
                  .where(jobs.c.state.in_([JobState.PENDING.value, JobState.REQUEUED.value])).group_by(jobs.c.queue))
            if tenant is not None:
                wq = wq.where(jobs.c.tenant == tenant)
            waiting = c.execute(wq).all()
        out: dict[str, dict[str, Any]] = {}
        for q, pl in run:
            pl = pl if isinstance(pl, dict) else json.loads(pl)
            u = out.setdefault(q, {"used": {}, "running": 0, "pending": 0})
            u["running"] += 1
            model = pl.get("model") or ""
            if model:
                n = sum(len(loc) for loc in pl.get("local", [])) * int(pl.get("milli", 1000)) / 1000
                u["used"][model] = u["used"].get(model, 0) + n
        for q, n in waiting:
            out.setdefault(q, {"used": {}, "running": 0, "pending": 0})["pending"] = int(n)
        return out

    # -- accounting ------------------------------------------------------------------------------------------
    def usage_cells(self, since: float, until: float, keys: Sequence[str], tenant: str | None = None
                    ) -> list[dict[str, Any]]:
        """Usage records ending in [since, until], summed per (``keys``, model, node, outcome, kind); records that
        straddle a bound count for the share of their time inside. ``keys``: columns of ``usage`` (``job`` means
        job_id and job_name). Sums: ``records``, ``chip_s``, ``useful_chip_s``, ``lost_chip_s``,
        ``unmeasured_chip_s`` (no measured energy) and ``energy_j`` (measured).

        Two scans: the records wholly inside the window with plain sums, and the few that straddle a bound with the
        share of their time inside. The index on ``ended_at`` is used only for a window over the newer half of the
        records (SQLite reads a large share of a table faster without it: 16x on 200k records)."""
        u = db.usage
        cols = []
        for k in keys:
            cols += [u.c.job_id, u.c.job_name] if k == "job" else [u.c[k]]
        cols += [c for c in (u.c.model, u.c.node, u.c.outcome, u.c.kind) if c not in cols]  # kind: serve_usd
        names = [c.name for c in cols]

        def sums(f: Any) -> list[Any]:
            w = (lambda x: x) if f is None else (lambda x: x * f)
            return [sa.func.count().label("records"), sa.func.sum(w(u.c.chip_s)).label("chip_s"),
                    sa.func.sum(w(u.c.useful_chip_s)).label("useful_chip_s"),
                    sa.func.sum(w(u.c.lost_chip_s)).label("lost_chip_s"),
                    sa.func.sum(sa.case((u.c.energy_j.is_(None), w(u.c.chip_s)), else_=0.0))
                    .label("unmeasured_chip_s"),
                    sa.func.sum(w(sa.func.coalesce(u.c.energy_j, 0.0))).label("energy_j")]

        with self.read() as c:
            lo, hi = c.execute(sa.select(sa.func.min(u.c.ended_at), sa.func.max(u.c.ended_at))).one()
            if lo is None:
                return []
            # SQLite: "+ 0" keeps it off the index for a window over most of the table. PostgreSQL chooses well by
            # itself, and "+ 0" hides the selectivity from it: it then expects a few rows and sorts a million on disk
            # (6.7 s for a month by tenant) instead of hashing them
            plain = not self.is_sqlite or since - lo > 0.5 * (hi - lo)
            ended = u.c.ended_at if plain else u.c.ended_at + 0
            ended0 = u.c.ended_at if not self.is_sqlite else u.c.ended_at + 0
            if not self.is_sqlite:
                c.exec_driver_sql("SET LOCAL work_mem = '64MB'")  # a month's groups in memory, not on disk
                c.exec_driver_sql("SET LOCAL jit = off")  # JIT compiling these sums took 0.25 s, more than it saved
            # outcome first in GROUP BY: a grouping that starts with (model, node) would make SQLite read the whole
            # table in the order of ix_usage_model_node (a row lookup per record) instead of scanning and sorting
            grp = sorted(cols, key=lambda x: x.name != "outcome")
            inside = (sa.select(*cols, *sums(None)).where(ended >= since, ended <= until, u.c.started_at >= since)
                      .group_by(*grp))
            edge = (sa.select(*cols, *sums(_window_share(u, since, until)))
                    .where(sa.or_(sa.and_(u.c.started_at < since, ended0 >= since),
                                  sa.and_(ended0 > until, u.c.started_at <= until)))
                    .group_by(*grp))
            if tenant is not None:
                inside, edge = inside.where(u.c.tenant == tenant), edge.where(u.c.tenant == tenant)
            rows = c.execute(inside).all()
            more = c.execute(edge).all()
        out = {tuple(r[:len(names)]): dict(r._mapping) for r in rows}
        for r in more:
            k = tuple(r[:len(names)])
            d = dict(r._mapping)
            if k not in out:
                out[k] = d
                continue
            for f in ("records", "chip_s", "useful_chip_s", "lost_chip_s", "unmeasured_chip_s", "energy_j"):
                out[k][f] = (out[k][f] or 0) + (d[f] or 0)
        return list(out.values())

    def usage_series(self, since: float, until: float, step_s: float, tenant: str | None = None
                     ) -> list[dict[str, Any]]:
        """Chip-seconds per (tenant, model, bucket of ``step_s`` by end time) of the records ending in [since, until]
        (the plots of ``suanli report``)."""
        u = db.usage
        x = u.c.ended_at / step_s
        bucket = (sa.cast(x, sa.Integer) if self.is_sqlite else sa.cast(sa.func.floor(x), sa.BigInteger)).label("b")
        q = (sa.select(u.c.tenant, u.c.model, bucket, sa.func.sum(u.c.chip_s * _window_share(u, since, until))
                       .label("chip_s"))
             .where(u.c.ended_at >= since, u.c.started_at <= until).group_by(u.c.tenant, u.c.model, bucket))
        if tenant is not None:
            q = q.where(u.c.tenant == tenant)
        with self.read() as c:
            rows = c.execute(q).all()
        return [{"tenant": r.tenant, "model": r.model, "at": int(r.b) * step_s, "chip_s": float(r.chip_s or 0.0)}
                for r in rows]

    def usage_totals(self) -> list[dict[str, Any]]:
        """Chip-seconds, unmeasured chip-seconds and measured energy (J) per (tenant, model, node), all records (the
        Prometheus counters)."""
        u = db.usage
        with self.read() as c:
            rows = c.execute(sa.select(u.c.tenant, u.c.model, u.c.node, sa.func.sum(u.c.chip_s).label("chip_s"),
                                       sa.func.sum(u.c.useful_chip_s).label("useful_chip_s"),
                                       sa.func.sum(sa.case((u.c.energy_j.is_(None), u.c.chip_s), else_=0.0))
                                       .label("unmeasured_chip_s"),
                                       sa.func.sum(sa.func.coalesce(u.c.energy_j, 0.0)).label("energy_j"))
                             .group_by(u.c.tenant, u.c.model, u.c.node)).all()
        return [dict(r._mapping) for r in rows]

    def usage_records(self, job_id: int | None = None) -> list[dict[str, Any]]:
        """The usage records (of one job), by id."""
        u = db.usage
        q = sa.select(u).order_by(u.c.id)
        if job_id is not None:
            q = q.where(u.c.job_id == job_id)
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q).all()]

    def usage_pairs(self) -> list[tuple[str, str]]:
        """The (node, accelerator model) pairs of all usage records (what a report must price; index-only)."""
        u = db.usage
        with self.read() as c:
            return [(r[1], r[0]) for r in c.execute(sa.select(u.c.model, u.c.node).distinct()).all()]

    def usage_by_job(self, since: float, until: float,
                     prices: Sequence[tuple[str, str, float | None, float, float | None]],
                     tenant: str | None = None) -> tuple[tuple[str, ...], Sequence[Sequence[Any]]]:
        """Usage records ending in [since, until] summed per job, priced in the database (``--by job``: one row per
        job, read in job order through ``ix_usage_job``, no sort and no per-(job, node) cell in Python).

        ``prices``: per (node, model) of the records, ``(node, model, modelled board watts or None, PUE / J per
        kWh, dollars per chip-second of price and overheads or None)`` (``accounting.pricing.Accounting.
        price_rows``), joined in as a table (SQLite: a temporary table with its key; PostgreSQL: a VALUES list).
        Sums: ``records``, ``chip_s``, ``lost_<cause>`` (lost chip-seconds: their sum; useful = chip_s - lost),
        ``unmeasured_chip_s``, ``energy_j``, ``kwh`` (facility energy) and ``usd`` (price and overheads; energy at
        the tariff is added by the caller), ``kwh_known`` and ``usd_known`` (records whose energy or price is known:
        fewer than ``records``, the row's figure is unknown). Records straddling a bound count for the share of their
        time inside. Returns (column names, one tuple per job in job order): tuples, as 250,000 dicts cost."""
        from suanli.accounting.report import CAUSES

        u = db.usage
        sqlite = self.is_sqlite
        if sqlite:
            p = sa.table("suanli_report_prices", sa.column("node"), sa.column("model"), sa.column("watts"),
                         sa.column("kpj"), sa.column("usd_s"))
        else:
            p = sa.values(sa.column("node", sa.String), sa.column("model", sa.String),
                          sa.column("watts", sa.Float), sa.column("kpj", sa.Float), sa.column("usd_s", sa.Float),
                          name="p", literal_binds=True  # inline: a large fleet's pairs exceed the bind limit
                          ).data([tuple(x) for x in prices] or [("", "", None, 0.0, None)])

        def sums(w: Any) -> list[Any]:
            cs = w(u.c.chip_s)
            lost = w(u.c.lost_chip_s)
            # as few aggregates as the row needs (each is a step per record): useful = chip_s - lost and lost is
            # the sum of its causes (usage.records), an unknown energy or price is a count of known ones short
            return [sa.func.count().label("records"), sa.func.sum(cs).label("chip_s"),
                    # FILTER: cheaper than a CASE per row (SQLite >= 3.30, PostgreSQL)
                    *[sa.func.sum(lost).filter(u.c.outcome == AttemptOutcome(c_)).label(f"lost_{c_}")
                      for c_ in CAUSES],
                    sa.func.sum(cs).filter(u.c.energy_j.is_(None)).label("unmeasured_chip_s"),
                    sa.func.sum(w(u.c.energy_j)).label("energy_j"),
                    sa.func.sum(sa.func.coalesce(w(u.c.energy_j), cs * p.c.watts) * p.c.kpj).label("kwh"),
                    sa.func.count(sa.func.coalesce(u.c.energy_j, p.c.watts)).label("kwh_known"),
                    sa.func.sum(cs * p.c.usd_s).label("usd"),
                    sa.func.count(p.c.usd_s).label("usd_known")]

        names = [u.c.job_name, u.c.tenant, u.c.queue, u.c.kind, u.c.llm]
        # the job's name, tenant, queue, kind and LLM are the same in all its records: SQLite takes them from any
        # (a "bare column"), PostgreSQL wants an aggregate
        keys = [u.c.job_id, *(names if sqlite else [sa.func.max(c).label(c.name) for c in names])]
        src = u.join(p, sa.and_(p.c.node == u.c.node, p.c.model == u.c.model), isouter=True)
        # SQLite: a month is most of the table, a scan in job order beats the index on ended_at; PostgreSQL: see
        # usage_cells (it needs to see the selectivity)
        ended = u.c.ended_at + 0 if sqlite else u.c.ended_at
        inside = (sa.select(*keys, *sums(lambda x: x)).select_from(src)
                  .where(ended >= since, ended <= until, u.c.started_at >= since).group_by(u.c.job_id))
        share = _window_share(u, since, until)
        edge = (sa.select(*keys, *sums(lambda x: x * share)).select_from(src)
                .where(sa.or_(sa.and_(u.c.started_at < since, ended >= since),
                              sa.and_(ended > until, u.c.started_at <= until)))
                .group_by(u.c.job_id + 0 if sqlite else u.c.job_id))  # SQLite: the few rows sorted, not the whole
        # table read in job order through the index
        if tenant is not None:
            inside, edge = inside.where(u.c.tenant == tenant), edge.where(u.c.tenant == tenant)
        with self.read() as c:
            if sqlite:
                c.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS suanli_report_prices (node TEXT, model TEXT, "
                                  "watts REAL, kpj REAL, usd_s REAL, PRIMARY KEY (node, model))")
                c.exec_driver_sql("DELETE FROM suanli_report_prices")
                if prices:
                    c.exec_driver_sql("INSERT INTO suanli_report_prices VALUES (?, ?, ?, ?, ?)",
                                      [tuple(x) for x in prices])
            else:
                c.exec_driver_sql("SET LOCAL work_mem = '64MB'")  # 250,000 groups sorted in memory
                c.exec_driver_sql("SET LOCAL jit = off")
            res = c.execute(inside)
            cols = tuple(res.keys())
            rows = res.all()
            more = c.execute(edge).all()
            if sqlite:
                c.exec_driver_sql("DELETE FROM suanli_report_prices")
        if not more:
            return cols, rows
        edge_of = {r[0]: r for r in more}
        nk = len(keys)
        out: list[Sequence[Any]] = []
        for r in rows:  # the few jobs with records straddling a bound: both parts added
            e = edge_of.pop(r[0], None)
            out.append(r if e is None else (*r[:nk], *(a if b is None else b if a is None else a + b
                                                        for a, b in zip(r[nk:], e[nk:], strict=True))))
        out += edge_of.values()
        out.sort(key=lambda r: r[0])
        return cols, out

    def add_service_tokens(self, flush_id: str, at: float, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Record one flush of the gateway's token counters (one row per replica and node), once: a flush retried
        after an error whose commit did go through finds its ``flush_id`` and writes nothing (returns False)."""
        t = db.service_tokens
        if not rows:
            return False
        with self.write() as c:
            if c.execute(sa.select(t.c.id).where(t.c.flush_id == flush_id).limit(1)).first() is not None:
                return False
            c.execute(t.insert(), [{**r, "flush_id": flush_id, "at": at} for r in rows])
        return True

    def token_sums(self, since: float, until: float, keys: Sequence[str], tenant: str | None = None
                   ) -> dict[tuple[Any, ...], dict[str, int]]:
        """Tokens served in [since, until] (by flush time) per report keys (``model`` is the replica's
        accelerator, ``job`` its job id): {key: {prompt_tokens, completion_tokens, requests}}."""
        t = db.service_tokens
        col = {"job": t.c.job_id, "tenant": t.c.tenant, "queue": t.c.queue, "model": t.c.model, "node": t.c.node,
               "llm": t.c.llm, "kind": sa.literal("serve")}
        cols = [col[k].label(k) for k in keys]
        q = (sa.select(*cols, sa.func.sum(t.c.prompt_tokens), sa.func.sum(t.c.completion_tokens),
                       sa.func.sum(t.c.requests)).where(t.c.at >= since, t.c.at <= until))
        if cols:
            q = q.group_by(*[col[k] for k in keys])
        if tenant is not None:
            q = q.where(t.c.tenant == tenant)
        with self.read() as c:
            rows = c.execute(q).all()
        n = len(keys)
        return {tuple(r[:n]): {"prompt_tokens": int(r[n] or 0), "completion_tokens": int(r[n + 1] or 0),
                               "requests": int(r[n + 2] or 0)} for r in rows if r[n] is not None}

    def token_totals(self) -> list[dict[str, Any]]:
        """Prompt and completion tokens per (tenant, served model), all flushes (the Prometheus counters)."""
        t = db.service_tokens
        with self.read() as c:
            rows = c.execute(sa.select(t.c.tenant, t.c.served_model, sa.func.sum(t.c.prompt_tokens),
                                       sa.func.sum(t.c.completion_tokens))
                             .group_by(t.c.tenant, t.c.served_model)).all()
        return [{"tenant": r[0], "model": r[1], "prompt_tokens": int(r[2] or 0), "completion_tokens": int(r[3] or 0)}
                for r in rows]

    def device_inventory(self) -> dict[tuple[str, str], int]:
        """(node, model) -> devices registered (the denominator of utilisation)."""
        dv = db.devices
        with self.read() as c:
            rows = c.execute(sa.select(nodes.c.name, dv.c.model, sa.func.count())
                             .join(nodes, nodes.c.id == dv.c.node_id).group_by(nodes.c.name, dv.c.model)).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # -- history samples ---------------------------------------------------------------------------------------
    def add_sample(self, at: float, values: Mapping[str, Any], *, keep_s: Sequence[float] = HISTORY_KEEP_S) -> None:
        """Record one raw sample (``total``, ``allocated``, ``running``, ``pending``, ``reasons``) and, when it
        starts a new five-minute or hourly bucket, the average of the bucket before it; drop what is older than
        each level's retention. One transaction."""
        samples = db.samples
        row = {"total": float(values["total"]), "allocated": float(values["allocated"]),
               "running": float(values["running"]), "pending": float(values["pending"]),
               "reasons": {str(k): float(v) for k, v in dict(values.get("reasons") or {}).items()}}
        with self.write() as c:
            c.execute(samples.insert().values(level=0, at=at, **row))
            for level, step in enumerate(HISTORY_STEPS_S[1:], start=1):
                start = (at // step) * step - step  # the bucket that just ended
                have = c.execute(sa.select(samples.c.id).where(samples.c.level == level, samples.c.at == start)
                                 .limit(1)).first()
                if have is not None:
                    continue
                finer = c.execute(sa.select(samples).where(samples.c.level == level - 1, samples.c.at >= start,
                                                           samples.c.at < start + step)).all()
                if finer:
                    c.execute(samples.insert().values(level=level, at=start, **_average(finer)))
            for level, keep in enumerate(keep_s):
                c.execute(samples.delete().where(samples.c.level == level, samples.c.at < at - keep))

    def history(self, since: float, level: int) -> list[dict[str, Any]]:
        """Samples of ``level`` (0 raw, 1 five-minute, 2 hourly) from ``since`` on, oldest first."""
        s = db.samples
        with self.read() as c:
            rows = c.execute(sa.select(s.c.at, s.c.total, s.c.allocated, s.c.running, s.c.pending, s.c.reasons)
                             .where(s.c.level == level, s.c.at >= since).order_by(s.c.at)).all()
        out = []
        for r in rows:
            d = dict(r._mapping)
            if isinstance(d["reasons"], str):
                d["reasons"] = json.loads(d["reasons"])
            out.append(d)
        return out

    # -- services (job kind "service"; each replica is an ordinary job) ------------------------------------
    @staticmethod
    def _service_out(r: Any) -> dict[str, Any]:
        m = r._mapping
        return {"name": m["name"], "tenant": m["tenant"], "model": m["model"], "generation": m["generation"],
                "min": m["min_replicas"], "max": m["max_replicas"], "desired": m["desired"],
                "created_at": m["created_at"], "updated_at": m["updated_at"], "spec": m["spec"], "id": m["id"]}

    def create_service(self, spec: Any, initial: int) -> dict[str, Any]:
        """Store a new service (a ``ServiceSpec``, already sized); its replicas are created by the service
        manager. Conflict when the name or the served model name is taken."""
        services = db.services
        now = time.time()
        with self.write() as c:
            if c.execute(sa.select(services.c.id).where(services.c.name == spec.name)).first() is not None:
                raise Conflict(f"a service named {spec.name!r} exists")
            if c.execute(sa.select(services.c.id).where(services.c.model == spec.served_model)).first() is not None:
                raise Conflict(f"another service already serves the model {spec.served_model!r}")
            c.execute(services.insert().values(
                name=spec.name, tenant=spec.tenant, model=spec.served_model, spec=spec.model_dump(mode="json"),
                generation=1, min_replicas=spec.replicas.min, max_replicas=spec.replicas.upper, desired=initial,
                created_at=now, updated_at=now))
        return self.get_service(spec.name)

    def list_services(self, tenant: str | None = None) -> list[dict[str, Any]]:
        services = db.services
        q = sa.select(services).order_by(services.c.name)
        if tenant is not None:
            q = q.where(services.c.tenant == tenant)
        with self.read() as c:
            return [self._service_out(r) for r in c.execute(q).all()]

    def get_service(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        with self.read() as c:
            return self._service_out(self._service_row(c, name, tenant))

    @staticmethod
    def _service_row(c: sa.Connection, name: str, tenant: str | None) -> Any:
        """The service row by name (only the tenant's own when ``tenant`` is given), else NotFound."""
        services = db.services
        q = sa.select(services).where(services.c.name == name)
        if tenant is not None:
            q = q.where(services.c.tenant == tenant)
        r = c.execute(q).first()
        if r is None:
            raise NotFound(f"no service {name!r}")
        return r

    def scale_service(self, name: str, tenant: str | None, lo: int | None, hi: int | None) -> dict[str, Any]:
        """New replica bounds (the desired count is clamped into them at once)."""
        services = db.services
        with self.write() as c:
            r = self._service_row(c, name, tenant)
            new_lo = r.min_replicas if lo is None else lo
            new_hi = r.max_replicas if hi is None else hi
            if not 0 <= new_lo <= new_hi or new_hi < 1:
                raise Invalid(f"replicas: need 0 <= min <= max and max >= 1 (got min {new_lo}, max {new_hi})")
            c.execute(services.update().where(services.c.id == r.id).values(
                min_replicas=new_lo, max_replicas=new_hi, desired=min(new_hi, max(new_lo, r.desired)),
                updated_at=time.time()))
        return self.get_service(name)

    def update_service_spec(self, name: str, tenant: str | None, spec: Any) -> dict[str, Any]:
        """A new spec for a service (rolled out by the manager: generation + 1)."""
        services = db.services
        with self.write() as c:
            r = self._service_row(c, name, tenant)
            if spec.tenant != r.tenant:
                raise Invalid("tenant: a service cannot move to another tenant")
            clash = c.execute(sa.select(services.c.id).where(services.c.model == spec.served_model,
                                                             services.c.id != r.id)).first()
            if clash is not None:
                raise Conflict(f"another service already serves the model {spec.served_model!r}")
            c.execute(services.update().where(services.c.id == r.id).values(
                spec=spec.model_dump(mode="json"), model=spec.served_model, generation=r.generation + 1,
                min_replicas=spec.replicas.min, max_replicas=spec.replicas.upper,
                desired=min(spec.replicas.upper, max(spec.replicas.min, r.desired)), updated_at=time.time()))
        return self.get_service(name)

    def delete_service(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        """Remove a service and ask the controller to cancel its replica jobs (one transaction)."""
        services, service_replicas = db.services, db.service_replicas
        now = time.time()
        out = self.get_service(name, tenant)
        terminal = [s.value for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)]
        with self.write() as c:
            ids = c.execute(sa.select(service_replicas.c.job_id).where(
                service_replicas.c.service_id == out["id"])).scalars().all()
            live = c.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids), jobs.c.state.notin_(terminal),
                                                        jobs.c.cancel_requested == sa.false())).scalars().all()
            if live:
                c.execute(jobs.update().where(jobs.c.id.in_(live)).values(cancel_requested=True))
                c.execute(job_events.insert(), [{"job_id": j, "at": now, "kind": "cancel-requested",
                                                 "message": f"service {name} deleted"} for j in live])
            c.execute(service_replicas.delete().where(service_replicas.c.service_id == out["id"]))
            c.execute(services.delete().where(services.c.id == out["id"]))
        return out

    def service_replicas(self) -> list[dict[str, Any]]:
        """Every replica of every service with its job's state and, while an attempt runs, the node its first rank
        is on (``node``, else None) and its accelerator model (``accelerator``): the service manager's view."""
        service_replicas = db.service_replicas
        q = sa.select(service_replicas, jobs.c.state, jobs.c.cancel_requested, jobs.c.attempts).join(
            jobs, jobs.c.id == service_replicas.c.job_id).order_by(service_replicas.c.id)
        with self.read() as c:
            rows = [dict(r._mapping) for r in c.execute(q).all()]
            running = [r["job_id"] for r in rows if r["state"] == JobState.RUNNING.value]
            where: dict[int, tuple[str, str]] = {}
            for i in range(0, len(running), 500):
                for jid, pl in c.execute(sa.select(job_attempts.c.job_id, job_attempts.c.placement).where(
                        job_attempts.c.job_id.in_(running[i : i + 500]), job_attempts.c.ended_at.is_(None))).all():
                    pl = pl if isinstance(pl, dict) else json.loads(pl)
                    if pl.get("nodes"):
                        where[int(jid)] = (str(pl["nodes"][0]), str(pl.get("model") or ""))
        for r in rows:
            r["node"], r["accelerator"] = where.get(int(r["job_id"]), (None, None))
        return rows

    def add_replica(self, service_id: int, spec: JobSpec, idx: int, port: int, generation: int) -> int:
        """Submit a replica's job and record it as the service's, in one transaction; returns the job id."""
        service_replicas = db.service_replicas
        now = time.time()
        row = {"name": spec.name, "tenant": spec.tenant, "queue": spec.queue, "priority": spec.priority,
               "state": JobState.PENDING.value, "spec": spec.model_dump(mode="json"), "sched": sched_view(spec),
               "submit_time": now, "updated_at": now, "attempts": 0, "failures": 0, "not_before": None,
               "cancel_requested": False, "exit_code": None, "reason": None}
        with self.write() as c:
            jid = int(c.execute(jobs.insert().values(**row)).inserted_primary_key[0])
            c.execute(job_events.insert().values(job_id=jid, at=now, kind="submitted",
                                                 message=f"replica {idx} of service {spec.env.get('SUANLI_SERVICE')}"
                                                 f" (generation {generation}, port {port})"))
            c.execute(service_replicas.insert().values(service_id=service_id, job_id=jid, idx=idx, port=port,
                                                       generation=generation, created_at=now))
        return jid

    def stop_replica(self, job_id: int, why: str) -> None:
        """Ask the controller to stop a replica's job (scale in, rollout); a no-op once it has ended."""
        now = time.time()
        terminal = [s.value for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)]
        with self.write() as c:
            r = c.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.state.notin_(terminal),
                                              jobs.c.cancel_requested == sa.false()).values(cancel_requested=True))
            if r.rowcount:
                c.execute(job_events.insert().values(job_id=job_id, at=now, kind="cancel-requested", message=why))

    def forget_replica(self, job_id: int) -> None:
        """Drop an ended replica from its service (its job stays, with its history)."""
        service_replicas = db.service_replicas
        with self.write() as c:
            c.execute(service_replicas.delete().where(service_replicas.c.job_id == job_id))

    def set_service_desired(self, service_id: int, desired: int) -> None:
        services = db.services
        with self.write() as c:
            c.execute(services.update().where(services.c.id == service_id).values(desired=desired))



def _node_out(r: Any) -> dict[str, Any]:
    """A node row as the API and the controller read it: ``partitions`` is what applies (the admin's
    ``partitions_override`` when set, else what the node reports: ``partitions_reported``)."""
    d = {k: v for k, v in r._mapping.items() if k != "id"}
    own, over = d.get("partitions") or None, d.get("partitions_override")
    d["partitions_reported"] = own
    d["partitions"] = own if over is None else (list(over) or None)
    return d


def _average(rows: Sequence[Any]) -> dict[str, Any]:
    n = len(rows)
    reasons: dict[str, float] = {}
    for r in rows:
        rs = r.reasons if isinstance(r.reasons, dict) else json.loads(r.reasons)
        for k, v in rs.items():
            reasons[k] = reasons.get(k, 0.0) + float(v) / n
    return {"total": sum(r.total for r in rows) / n, "allocated": sum(r.allocated for r in rows) / n,
            "running": sum(r.running for r in rows) / n, "pending": sum(r.pending for r in rows) / n,
            "reasons": reasons}


def _window_share(u: sa.Table, since: float, until: float) -> Any:
    """The share of a usage record's time that lies inside [since, until] (1 for a zero-length record)."""
    lo = sa.case((u.c.started_at < since, since), else_=u.c.started_at)
    hi = sa.case((u.c.ended_at > until, until), else_=u.c.ended_at)
    dur = u.c.ended_at - u.c.started_at
    return sa.case((dur > 0, (hi - lo) / dur), else_=1.0)
