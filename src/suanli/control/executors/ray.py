"""The Ray executor: the nodes of a Ray cluster as one pool. Ray carries processes and membership; suanli decides.

- **Membership** from Ray (``ray.nodes()``): every live node gets one small :class:`NodeAgent` (a detached Ray actor
  pinned to the node, ``num_cpus=0``) that discovers its devices through the vendor modules (or takes the node's
  ``suanli.io/devices`` label, e.g. ``ray start --labels suanli.io/devices=8xBR100``), probes their health, starts
  and watches the ranks placed there and serves their logs. ``suanli.io/domain`` and ``suanli.io/rack`` label the
  node's interconnect domain and rack (default: the node itself, rack ``default``); ``suanli.io/name`` names it
  (default: its host name; nodes sharing a host name get ``HOST-<node id prefix>``); ``suanli.io/partitions``
  (comma-separated) puts it in partitions (an admin's ``PATCH /v1/nodes/{name}`` wins until cleared). A node Ray
  reports dead, or whose agent is gone or silent for ``agent_timeout_s``, is not reported: the controller marks it
  lost.
- **Launching** exactly the placement ``sched`` decided: each node's share of :meth:`AttemptSpec.ranks` is started by
  that node's agent (the local executor's code: one process group per node, exit files, attempt keys), with
  ``MASTER_ADDR`` = rank 0's node address and a ``MASTER_PORT`` free there. All parts start or none (a part that
  fails to start kills the others). The first failing rank stops the whole attempt on every node.
- **Node loss**: the parts on the other nodes are killed and the attempt ends with stop reason ``node-lost``.
- **Crash safety**: agents are detached and ranks run in their own process groups, so both outlive the controller;
  on restart the agents re-adopt each node's ranks (recorded pids, or a ``/proc`` scan for the attempt key).
- **Logs**: every rank's output is copied, as it grows, into the controller's data directory at the local
  executor's paths (``jobs/<id>/logs/attempt-<n>.rank-<r>.log``), where ``suanli logs JOB --rank R -f`` reads it.
- **Checkpoints**: ``SUANLI_CHECKPOINT_DIR`` is ``<checkpoint root>/<job id>``; the checkpoint root must be the
  same shared directory on every node (NFS, a parallel file system) for a job to resume on another node.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suanli.control.executors.base import (
    PARTITIONS_LABEL,
    Adoption,
    AdoptVerdict,
    AttemptRecord,
    AttemptSpec,
    DeviceInfo,
    Executor,
    Handle,
    NodeInfo,
    NodeUnavailable,
    RankPlan,
    parse_partitions,
    termination_grace,
)
from suanli.control.types import DeviceHealth, StopReason
from suanli.errors import SuanliError

log = logging.getLogger("suanli.ray")

NAME_LABEL = "suanli.io/name"
NAMESPACE = "suanli"
_LOG_CHUNK = 1 << 20


# -- the agent (runs on each node, inside a Ray actor) -------------------------------------------------------
class NodeAgent:
    """One per node: devices, health, and the ranks placed on the node (through a :class:`LocalExecutor`)."""

    def __init__(self, name: str, root: str, checkpoint_root: str | None, grace_s: float, labels: dict[str, str],
                 env: dict[str, str], users: tuple[str, dict[str, str]] = ("shared", {}),
                 log_policy: Any = None) -> None:
        from suanli.control import isolation as iso
        from suanli.control.executors.local import LocalExecutor

        os.environ.update(env)
        self.name = name
        self.labels = labels
        # the controller's tenant-isolation rule, applied on this node (issue 9): per-tenant OS users when asked;
        # a node that cannot switch users refuses to start rather than run tenants' jobs unisolated
        job_users = iso.JobUsers(users[0], dict(users[1]))
        iso.secure_data_dir(Path(root), job_users)
        self.ex = LocalExecutor(Path(root), grace_s=grace_s, checkpoint_root=checkpoint_root, users=job_users,
                                log_policy=log_policy)
        self.handles: dict[int, Any] = {}
        self.devices = self._devices()

    def _devices(self) -> list[Any]:
        from suanli.devices import declared_from_labels, discover

        decl = declared_from_labels(self.labels)
        if decl is not None:
            return decl
        found = discover()
        models = {d.model for d in found}
        if len(models) > 1:  # one model per node: keep the most numerous
            best = max(models, key=lambda m: sum(d.model == m for d in found))
            found = [d for d in found if d.model == best]
        return found

    def info(self) -> dict[str, Any]:
        import ray

        return {"name": self.name, "address": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "devices": [(d.index, d.model, d.uuid, d.memory_mib, d.declared) for d in self.devices]}

    def health(self) -> dict[int, tuple[bool, str]]:
        from suanli.devices import health

        if not self.devices:
            return {}
        return {h.index: (h.healthy, h.reason) for h in health(self.devices, node=self.name)}

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def start(self, a: AttemptSpec, ranks: list[RankPlan], world: int, addr: str, port: int
              ) -> tuple[list[Any], int | None]:
        h = self.ex.start_ranks(a, ranks, world, addr, port)
        self.handles[a.attempt_id] = h
        return h.record()

    def sync(self, req: dict[int, dict[int, int]]) -> dict[int, dict[str, Any]]:
        """Per attempt: ended?, exit codes per rank, and each rank's log from the offset asked."""
        out: dict[int, dict[str, Any]] = {}
        for aid, offsets in req.items():
            h = self.handles.get(aid)
            if h is None:
                out[aid] = {"unknown": True}
                continue
            done, code = self.ex.poll(h)
            logs: dict[int, tuple[int, bytes]] = {}
            for rank, off in offsets.items():
                limit = 16 * _LOG_CHUNK if done else _LOG_CHUNK
                chunk = self.ex.read_log(h.job_id, h.n, rank, off, limit)
                if chunk:
                    logs[rank] = (off, chunk)
            out[aid] = {"done": done, "code": code, "codes": dict(h.codes), "logs": logs}
        return out

    def stop(self, aid: int, why: str, grace_s: float | None) -> None:
        h = self.handles.get(aid)
        if h is not None:
            self.ex.stop(h, StopReason(why), grace_s)

    def kill(self, aid: int) -> None:
        h = self.handles.get(aid)
        if h is not None:
            self.ex.kill(h)

    def forget(self, aid: int) -> None:
        self.handles.pop(aid, None)

    def adopt(self, items: list[tuple[AttemptRecord, list[int]]]) -> dict[int, tuple[str, bool, int, Any]]:
        """Re-attach to this node's share of attempts: aid -> (verdict, alive, ranks started, record)."""
        out: dict[int, tuple[str, bool, int, Any]] = {}
        for aid, ad in self.ex.adopt_ranks(items).items():
            if ad.handle is not None:
                old = self.handles.get(aid)
                if old is not None and getattr(old, "popens", None) is not None:
                    ad.handle = old  # this agent started it: keep its own children's handle
                self.handles[aid] = ad.handle
            out[aid] = (ad.verdict.value, ad.alive, ad.started, ad.handle.record() if ad.handle else None)
        return out

    def ping(self) -> str:
        return self.name


# -- the executor (runs in the controller) -------------------------------------------------------------------
@dataclass
class _Part:
    node: str
    ranks: list[int]
    done: bool = False
    lost: bool = False
    code: int | None = None


@dataclass
class RayHandle(Handle):
    parts: dict[str, _Part] = field(default_factory=dict)
    records: dict[str, tuple[list[Any], int | None]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # rank -> bytes of its log copied so far
    final: tuple[bool, int | None] | None = None
    killed_others: bool = False

    def record(self) -> tuple[list[Any], int | None]:
        return [[node, procs, pgid] for node, (procs, pgid) in self.records.items()], None


@dataclass
class _Node:
    node_id: str
    name: str
    labels: dict[str, str]
    resources: dict[str, float]
    address: str = "127.0.0.1"  # the node's address as Ray knows it (NodeManagerAddress)
    agent: Any = None
    info: dict[str, Any] | None = None
    info_ref: Any = None
    health: dict[int, tuple[bool, str]] = field(default_factory=dict)
    last_ok: float = 0.0  # monotonic
    last_ok_wall: float = 0.0
    alive: bool = True

    def ok(self) -> None:
        self.last_ok, self.last_ok_wall = time.monotonic(), time.time()


class RayExecutor(Executor):
    dynamic_membership = True

    def __init__(self, data_dir: str | Path, address: str = "auto", *, work_root: str | Path | None = None,
                 checkpoint_root: str | Path | None = None, grace_s: float = 5.0, agent_timeout_s: float = 30.0,
                 poll_s: float = 0.2, start_timeout_s: float = 60.0, wait_s: float = 0.05, users: Any = None,
                 log_policy: Any = None) -> None:
        import ray

        self.root = Path(data_dir).resolve()
        self.key = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]  # one set of agents per controller
        self.work_root = str(Path(work_root).resolve()) if work_root else "/tmp/suanli-ray"
        self.checkpoint_root = str(Path(checkpoint_root).resolve()) if checkpoint_root else None
        self.grace_s = grace_s
        self.agent_timeout_s = agent_timeout_s
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        # (--job-users mode, tenant -> user map) as each node's agent applies it on its node (issue 9)
        self.users: tuple[str, dict[str, str]] = ("shared", {}) if users is None else (users[0], dict(users[1]))
        self.log_policy = log_policy
        self.resend_s = 0.5
        self.wait_s = wait_s  # how long one poll waits for the nodes' answers (the rest are collected later)
        self._inflight: dict[Any, tuple[str, dict[int, dict[int, int]], float]] = {}
        self._health_inflight: dict[Any, str] = {}
        if not ray.is_initialized():
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        self._ray = ray
        self._nodes: dict[str, _Node] = {}  # node id -> node
        self._by_name: dict[str, str] = {}  # node name -> node id (the newest node of that name)
        self._handles: dict[int, RayHandle] = {}
        self._synced = 0.0
        self._first = True
        self._agent_env = {k: v for k, v in os.environ.items() if k.startswith("SUANLI_DEVICE_FAULTS")}
        self._bad_labels: set[str] = set()  # nodes whose partitions label was refused (warned once)

    # -- membership ----------------------------------------------------------------------------------------
    def _name_for(self, n: dict[str, Any], taken: set[str]) -> str:
        labels = n.get("Labels") or {}
        if labels.get(NAME_LABEL):
            return str(labels[NAME_LABEL])
        host = str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node")
        return host if host not in taken else f"{host}-{n['NodeID'][:8]}"

    def _agent_for(self, node: _Node) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cls = self._ray.remote(NodeAgent)
        return cls.options(  # type: ignore[attr-defined]
            name=f"suanli-agent-{self.key}-{node.node_id}", namespace=NAMESPACE, lifetime="detached",
            get_if_exists=True, num_cpus=0, max_concurrency=8, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote(node.name, os.path.join(self.work_root, node.name), self.checkpoint_root, self.grace_s,
                 {k: str(v) for k, v in node.labels.items()}, self._agent_env, self.users, self.log_policy)

    def _refresh(self) -> None:
        seen: set[str] = set()
        for n in self._ray.nodes():
            nid = n["NodeID"]
            seen.add(nid)
            node = self._nodes.get(nid)
            if not n.get("Alive"):
                if node is not None and node.alive:
                    node.alive = False
                    log.warning("node %s (%s) is dead", node.name, nid[:8])
                continue
            if node is None:
                taken = {x.name for x in self._nodes.values() if x.alive and x.node_id != nid}
                node = _Node(nid, self._name_for(n, taken), dict(n.get("Labels") or {}), dict(n.get("Resources") or {}),
                             str(n.get("NodeManagerAddress") or "127.0.0.1"))
                node.ok()
                self._nodes[nid] = node
                self._by_name[node.name] = nid
                node.agent = self._agent_for(node)
                node.info_ref = node.agent.info.remote()
        for nid, node in self._nodes.items():
            if nid not in seen:
                node.alive = False

    def _resolve_infos(self, timeout: float) -> None:
        pending = {n.info_ref: n for n in self._nodes.values() if n.alive and n.info is None and n.info_ref}
        if not pending:
            return
        ready, _ = self._ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            node = pending[ref]
            try:
                node.info = self._ray.get(ref)
                node.ok()
            except Exception as e:
                log.warning("agent of node %s failed to start: %s", node.name, e)
                node.info_ref = None

    def _probe_health(self) -> None:
        """Health of every node, one probe in flight per node (answers collected as they come)."""
        busy = set(self._health_inflight.values())
        for n in self._nodes.values():
            if n.alive and n.info is not None and n.node_id not in busy:
                self._health_inflight[n.agent.health.remote()] = n.node_id
        if not self._health_inflight:
            return
        refs = list(self._health_inflight)
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=max(self.wait_s, 0.5))
        for ref in ready:
            node = self._nodes[self._health_inflight.pop(ref)]
            try:
                node.health = self._ray.get(ref)
                node.ok()
            except self._ray.exceptions.RayActorError:
                node.alive = False
            except Exception as e:
                log.warning("health of node %s: %s", node.name, e)
        for ref, nid in list(self._health_inflight.items()):
            if not self._nodes[nid].alive:
                del self._health_inflight[ref]

    def _node_info(self, node: _Node) -> NodeInfo:
        info = node.info or {}
        devs = []
        for idx, model, uuid, mem, declared in info.get("devices", []):
            h = node.health.get(idx)
            devs.append(DeviceInfo(idx, model, uuid, mem, declared,
                                   None if h is None else (DeviceHealth.HEALTHY if h[0] else DeviceHealth.UNHEALTHY),
                                   None if h is None or h[0] else (h[1] or "unhealthy")))
        cpu = int(float(node.resources.get("CPU", 0)) * 1000)
        mem = int(float(node.resources.get("memory", 0)) // (1024 * 1024))
        return NodeInfo(node.name, tuple(devs), cpu, mem, node.labels.get("suanli.io/domain", node.name),
                        node.labels.get("suanli.io/rack", "default"), node.address, self._partitions(node))

    def _partitions(self, node: _Node) -> tuple[str, ...]:
        """The node's partitions from its label ``suanli.io/partitions`` (comma-separated). A bad name puts the node
        in no partition (said once in the log): the node still serves jobs that may use any node."""
        raw = node.labels.get(PARTITIONS_LABEL)
        if not raw:
            return ()
        try:
            return parse_partitions(str(raw), f"node {node.name}: label {PARTITIONS_LABEL}")
        except SuanliError as e:
            if node.node_id not in self._bad_labels:
                self._bad_labels.add(node.node_id)
                log.warning("%s; the node is in no partition", e)
            return ()

    def _usable(self, node: _Node) -> bool:
        return (node.alive and node.info is not None and time.monotonic() - node.last_ok < self.agent_timeout_s
                and self._by_name.get(node.name) == node.node_id)

    def nodes(self) -> list[NodeInfo]:
        self._refresh()
        self._resolve_infos(self.start_timeout_s if self._first else 0.5)
        self._first = False
        self._probe_health()
        return [self._node_info(n) for n in self._nodes.values() if self._usable(n)]

    def _node(self, name: str) -> _Node:
        nid = self._by_name.get(name)
        node = self._nodes.get(nid) if nid else None
        if node is None or not self._usable(node):
            raise NodeUnavailable(f"node {name} is not available")
        return node

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, a: AttemptSpec) -> RayHandle:
        ranks = a.ranks()
        world = len(ranks)
        by_node: dict[str, list[RankPlan]] = {}
        for r in ranks:
            by_node.setdefault(r.node, []).append(r)
        nodes = {name: self._node(name) for name in a.nodes}
        first = nodes[a.nodes[0]]
        addr = first.address
        try:
            port = self._ray.get(first.agent.free_port.remote(), timeout=self.start_timeout_s)
        except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError) as e:
            first.alive = False
            raise NodeUnavailable(f"node {a.nodes[0]}: {type(e).__name__}") from None
        refs = {name: nodes[name].agent.start.remote(a, rs, world, addr, port) for name, rs in by_node.items()}
        h = RayHandle(a.job_id, a.attempt_id, a.n, grace_s=termination_grace(a.spec),
                      parts={name: _Part(name, [r.rank for r in rs]) for name, rs in by_node.items()})
        try:
            for name, ref in refs.items():
                try:
                    h.records[name] = self._ray.get(ref, timeout=self.start_timeout_s)
                except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError) as e:
                    nodes[name].alive = False
                    raise NodeUnavailable(f"node {name}: {type(e).__name__}") from None
        except Exception:
            for name in refs:  # all or none: whatever started is killed
                with contextlib.suppress(Exception):
                    self._ray.get(nodes[name].agent.kill.remote(a.attempt_id), timeout=10)
                    nodes[name].agent.forget.remote(a.attempt_id)
            raise
        for r in ranks:
            h.offsets[r.rank] = 0
        self._handles[a.attempt_id] = h
        return h

    # -- observe -------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        """One ``sync`` call per node in flight at a time: answers are collected as they come (a node that does not
        answer - frozen, unplugged - never holds up the controller for more than ``wait_s``)."""
        self._synced = time.monotonic()
        # a node is asked again when its last question is older than ``resend_s`` (a call in flight to an agent that
        # died may only fail when Ray declares the node dead; a new call fails at once): answers carry the log
        # offsets they read from, so one that comes late adds nothing twice
        busy: dict[str, int] = {}
        for name, _req, t in self._inflight.values():
            if self._synced - t < self.resend_s:
                busy[name] = busy.get(name, 0) + 1
            else:
                busy.setdefault(name, 0)
        crowded = {name for name, _req, _t in self._inflight.values()
                   if sum(1 for v in self._inflight.values() if v[0] == name) >= 4}
        busy_names = {n for n, k in busy.items() if k > 0} | crowded
        reqs: dict[str, dict[int, dict[int, int]]] = {}
        for h in self._handles.values():
            if h.final is not None:
                continue
            for name, part in h.parts.items():
                if not part.done and not part.lost and name not in busy_names:
                    reqs.setdefault(name, {})[h.attempt_id] = {r: h.offsets.get(r, 0) for r in part.ranks}
        for name, req in reqs.items():
            nid = self._by_name.get(name)
            node = self._nodes.get(nid) if nid else None
            if node is None or not node.alive or node.agent is None:
                self._mark_lost(name, req)
                continue
            self._inflight[node.agent.sync.remote(req)] = (name, req, time.monotonic())
        if not self._inflight:
            return
        ready, _ = self._ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=self.wait_s)
        for ref in ready:
            name, req, _t = self._inflight.pop(ref)
            node = self._nodes[self._by_name[name]]
            try:
                res = self._ray.get(ref)
            except self._ray.exceptions.RayActorError:
                node.alive = False
                self._mark_lost(name, req)
                continue
            except Exception as e:
                log.warning("sync with node %s: %s", name, e)
                continue
            node.ok()
            for aid, st in res.items():
                h = self._handles.get(aid)
                if h is None or name not in h.parts:
                    continue
                part = h.parts[name]
                if st.get("unknown"):  # the agent does not know it (a new agent on a node that came back)
                    part.lost = True
                    continue
                for rank, (off, chunk) in st["logs"].items():
                    if off == h.offsets.get(rank, 0):
                        self._append_log(h, rank, chunk)
                h.codes.update(st["codes"])
                if st["done"]:
                    part.done, part.code = True, st["code"]
        now = time.monotonic()
        for ref, (name, req, t) in list(self._inflight.items()):
            nid = self._by_name.get(name)
            node = self._nodes.get(nid) if nid else None
            if node is None or not node.alive or now - t > self.agent_timeout_s:
                if node is not None:
                    node.alive = False
                del self._inflight[ref]
                self._mark_lost(name, req)

    def _mark_lost(self, name: str, req: dict[int, dict[int, int]]) -> None:
        nid = self._by_name.get(name)
        node = self._nodes.get(nid) if nid else None
        for aid in req:
            h = self._handles.get(aid)
            if h is not None and name in h.parts:
                h.parts[name].lost = True
                if node is not None and node.last_ok_wall and h.lost_at is None:
                    h.lost_at = node.last_ok_wall

    def _append_log(self, h: RayHandle, rank: int, chunk: bytes) -> None:
        p = self.log_path(h.job_id, h.n, rank)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab") as f:
            f.write(chunk)
        h.offsets[rank] = h.offsets.get(rank, 0) + len(chunk)

    def poll(self, h: Handle) -> tuple[bool, int | None]:
        assert isinstance(h, RayHandle)
        if h.final is not None:
            return h.final
        if time.monotonic() - self._synced >= self.poll_s:
            self._sync()
        lost = [p for p in h.parts.values() if p.lost]
        if lost and not h.killed_others:
            h.killed_others = True
            if h.stopping not in (StopReason.CANCEL, StopReason.PREEMPT, StopReason.SHUTDOWN):
                h.stopping = StopReason.NODE_LOST
            log.warning("attempt %s of job %s: node %s lost; stopping the gang", h.n, h.job_id, lost[0].node)
            self._each(h, "kill")
        failed = [c for c in h.codes.values() if c not in (0, None)]
        if failed and h.stopping is None:
            self.stop(h, StopReason.RANK_FAILED, grace_s=min(self.grace_s, 2.0))
        if h.kill_at is not None and time.monotonic() >= h.kill_at:
            h.kill_at = time.monotonic() + 1.0
            self._each(h, "kill")
        if not all(p.done or p.lost for p in h.parts.values()):
            return False, None
        code: int | None = 0
        for r in sorted(h.codes):
            if h.codes[r] != 0:
                code = h.codes[r]
                break
        if lost:
            code = None
        h.final = (True, code)
        self._each(h, "forget", include_done=True)
        self._handles.pop(h.attempt_id, None)
        return h.final

    def _each(self, h: RayHandle, method: str, *args: Any, include_done: bool = False) -> None:
        for name, part in h.parts.items():
            if part.lost or (part.done and not include_done):
                continue
            nid = self._by_name.get(name)
            node = self._nodes.get(nid) if nid else None
            if node is not None and node.alive and node.agent is not None:
                getattr(node.agent, method).remote(h.attempt_id, *args)

    # -- act -----------------------------------------------------------------------------------------------
    def stop(self, h: Handle, why: StopReason, grace_s: float | None = None) -> None:
        assert isinstance(h, RayHandle)
        if h.stopping is None:
            h.stopping = StopReason(why)
        g = grace_s if grace_s is not None else h.grace_s if h.grace_s is not None else self.grace_s  # the job's
        self._each(h, "stop", str(StopReason(why)), g)
        h.kill_at = time.monotonic() + g + 1.0  # the agents kill at the grace period; this is the backstop

    def kill(self, h: Handle) -> None:
        assert isinstance(h, RayHandle)
        self._each(h, "kill")

    # -- adopt after a restart -----------------------------------------------------------------------------
    def adopt(self, records: list[AttemptRecord]) -> dict[int, Adoption]:
        per_node: dict[str, list[tuple[AttemptRecord, list[int]]]] = {}
        plans: dict[int, dict[str, list[int]]] = {}
        for rec in records:
            spec = AttemptSpec(rec.job_id, rec.attempt_id, rec.n, rec.spec, "", rec.nodes, rec.devices, rec.milli)
            by_node: dict[str, list[int]] = {}
            for r in spec.ranks():
                by_node.setdefault(r.node, []).append(r.rank)
            plans[rec.attempt_id] = by_node
            recorded = {str(x[0]): (x[1], x[2]) for x in rec.procs} if rec.procs is not None else None
            for name, ranks in by_node.items():
                procs, pgid = (recorded.get(name, ([], None)) if recorded is not None else (None, None))
                sub = AttemptRecord(rec.job_id, rec.attempt_id, rec.n, rec.nodes, rec.devices, rec.milli, rec.spec,
                                    procs, pgid)
                per_node.setdefault(name, []).append((sub, ranks))
        answers: dict[str, dict[int, tuple[str, bool, int, Any]]] = {}
        for name, items in per_node.items():
            try:
                node = self._node(name)
                answers[name] = self._ray.get(node.agent.adopt.remote(items), timeout=self.start_timeout_s)
            except Exception as e:
                log.warning("cannot adopt on node %s: %s", name, e)
        out: dict[int, Adoption] = {}
        for rec in records:
            by_node = plans[rec.attempt_id]
            world = sum(len(v) for v in by_node.values())
            got = {name: answers.get(name, {}).get(rec.attempt_id) for name in by_node}
            h = RayHandle(rec.job_id, rec.attempt_id, rec.n, grace_s=termination_grace(rec.spec),
                          parts={name: _Part(name, ranks) for name, ranks in by_node.items()})
            started = sum(g[2] for g in got.values() if g is not None and g[0] != AdoptVerdict.NOT_STARTED)
            unreachable = [name for name, g in got.items() if g is None]
            bad = [name for name, g in got.items() if g is not None and g[0] != AdoptVerdict.ADOPTED]
            if bad or (unreachable and rec.procs is None):
                for name, g in got.items():  # the attempt cannot be whole again: stop what is left of it
                    if g is not None and g[0] == AdoptVerdict.ADOPTED:
                        with contextlib.suppress(Exception):
                            self._ray.get(self._node(name).agent.kill.remote(rec.attempt_id), timeout=10)
                out[rec.attempt_id] = Adoption(AdoptVerdict.PARTIAL if started else AdoptVerdict.NOT_STARTED,
                                               None, False, started, world)
                continue
            for name, g in got.items():
                if g is None:
                    h.parts[name].lost = True
                else:
                    h.records[name] = g[3]
            for r in (r for ranks in by_node.values() for r in ranks):
                p = self.log_path(rec.job_id, rec.n, r)
                h.offsets[r] = p.stat().st_size if p.exists() else 0
            self._handles[rec.attempt_id] = h
            alive = any(g is not None and g[1] for g in got.values())
            out[rec.attempt_id] = Adoption(AdoptVerdict.ADOPTED, h, alive, world, world)
        return out

    # -- files ---------------------------------------------------------------------------------------------
    def log_path(self, job_id: int, n: int, rank: int = 0) -> Path:
        return self.root / "jobs" / str(job_id) / "logs" / f"attempt-{n}.rank-{rank}.log"

    def last_checkpoint(self, job_id: int) -> float | None:
        if self.checkpoint_root is None:
            return None
        from suanli.control.executors.local import newest_mtime

        return newest_mtime(Path(self.checkpoint_root) / str(job_id))

    def close(self) -> None:
        """The agents stay (detached: the ranks they watch outlive the controller); the driver disconnects."""
        with contextlib.suppress(Exception):
            self._ray.shutdown()

    def shutdown_agents(self) -> None:
        """Kill every agent (tests and benchmarks, before tearing the cluster down)."""
        for node in self._nodes.values():
            if node.agent is not None and node.alive:
                with contextlib.suppress(Exception):
                    self._ray.kill(node.agent)
