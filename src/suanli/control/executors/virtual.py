"""The virtual executor: nodes and "processes" that exist only on a virtual clock, for running the real controller,
store, API and scheduler at the size of a real fleet on one small machine (as KWOK does for Kubernetes).

- **Nodes** come from a cluster YAML / node list, or a generator spec ``1250x8xBR100`` (nodes x devices x model;
  ``+`` joins pools: ``1000x8xH100+250x8x910B``). Their devices are declared (not probed) and their names carry
  the ``virt-`` prefix, so they are marked virtual everywhere they are shown.
- **Processes.** An attempt "runs" for the job's ``simulate.duration`` (else ``expected_runtime``, else
  :data:`DEFAULT_RUNTIME_S`) of virtual time and then exits with ``simulate.exit_code`` (default 0). Every rank
  writes a few log lines. Stop (cancel, preemption, shutdown) is honoured: a stopped attempt exits
  :data:`TERM_S` virtual seconds later with -15 (SIGTERM), a kill at once with -9.
- **Work is kept as the twin keeps it** (:mod:`suanli.sim.engine`): a preempted or stopped attempt keeps its
  progress (it checkpoints when asked to stop); an attempt ended by a node loss or an unhealthy device loses the
  work since its last periodic checkpoint (``FailureConfig.checkpoint_s``); the next attempt runs the rest.
- **Faults** (optional): the twin's failure model, :class:`suanli.sim.engine.FailureConfig`: failures at
  ``rate_per_device_hour`` over all devices; a ``device_share`` of them take one device down (it reports
  unhealthy: the controller drains it and stops the job on it), the rest a whole node (it leaves the membership:
  its attempts end with ``node-lost``); repairs after exponential times. Faults injected through
  :mod:`suanli.devices.faults` (``SUANLI_DEVICE_FAULTS_FILE``) apply too.
- **Clock.** Virtual time runs ``speed`` times faster than the wall clock, from an epoch kept in the data
  directory, so a controller that restarts (SIGKILL included) finds its virtual processes where the timeline left
  them: attempts that ended meanwhile report their exit code, the others keep running (nothing runs twice). While
  the controller ticks (:meth:`VirtualExecutor.at_tick`), processes start and are seen to end as of the tick's
  instant, the times the store records for them.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suanli.control.executors.base import (
    Adoption,
    AdoptVerdict,
    AttemptRecord,
    AttemptSpec,
    DeviceInfo,
    Executor,
    Handle,
    NodeInfo,
)
from suanli.control.types import DeviceHealth, StopReason
from suanli.devices.faults import FAULTS_FILE_ENV, faults_by_node
from suanli.errors import SpecError
from suanli.fleet.model import Cluster, NodeSpec, build_cluster, generate_nodes
from suanli.sim.engine import FailureConfig
from suanli.workload.spec import parse_duration_s

DEFAULT_RUNTIME_S = 60.0  # a job that names no runtime at all
TERM_S = 1.0  # virtual seconds a simulated process takes to exit after SIGTERM
PREFIX = "virt-"
_GEN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*([A-Za-z0-9._-]+)\s*$")


def virtual_cluster(spec: str, *, nodes_per_rack: int = 16) -> Cluster:
    """A cluster file (YAML, node-list CSV) or a generator spec ``NODESxDEVICESxMODEL[+...]``; node names get
    the ``virt-`` prefix."""
    p = Path(spec)
    if p.exists():
        from suanli.fleet import load_cluster

        c = load_cluster(p)
        nodes = [NodeSpec(n.name if n.name.startswith(PREFIX) else PREFIX + n.name, n.accelerator, n.devices,
                          n.cpu_milli, n.memory_mib, n.domain, n.rack, n.labels, n.partitions) for n in c.nodes]
        return build_cluster(f"virtual {c.name}", nodes)
    nodes = []
    for part in spec.split("+"):
        m = _GEN.match(part)
        if not m:
            raise SpecError(f"--virtual: {part.strip()!r} is neither a cluster file nor NODESxDEVICESxMODEL "
                            "(e.g. 1250x8xBR100)")
        n, per, model = int(m.group(1)), int(m.group(2)), m.group(3)
        if not (1 <= n <= 100_000 and 1 <= per <= 64):
            raise SpecError(f"--virtual: {part.strip()!r}: nodes must be 1..100000 and devices 1..64")
        try:
            key = _canonical(model)
        except Exception as e:
            raise SpecError(f"--virtual: {e}") from None
        nodes += generate_nodes(n * per, key, per, nodes_per_rack=nodes_per_rack, prefix=f"{PREFIX}{key.lower()}")
    return build_cluster(f"virtual {spec}", nodes)


def _canonical(model: str) -> str:
    from suanli.catalog.accelerators import resolve_accelerator

    return resolve_accelerator(model)


def runtime_of(spec: dict[str, Any]) -> tuple[float, int]:
    """(virtual seconds of work, exit code) of a job spec: ``simulate.duration`` / ``expected_runtime``."""
    sim = spec.get("simulate") or {}
    dur = sim.get("duration") if isinstance(sim, dict) else None
    if dur is None:
        dur = spec.get("expected_runtime")
    try:
        d = parse_duration_s(dur) if dur is not None else DEFAULT_RUNTIME_S
    except (ValueError, TypeError):
        d = DEFAULT_RUNTIME_S
    code = int(sim.get("exit_code", 0) or 0) if isinstance(sim, dict) else 0
    return max(0.0, float(d)), code


class VirtualClock:
    """Virtual seconds = v0 + (wall - w0) * speed; the epoch lives in ``path`` so restarts continue the timeline."""

    def __init__(self, speed: float = 1.0, path: Path | None = None, wall: Callable[[], float] = time.time) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise SpecError(f"--speed must be a positive number, not {speed!r}")
        self.wall = wall
        self.speed = float(speed)
        w = wall()
        self.w0, self.v0 = w, w
        if path is not None:
            try:
                d = json.loads(path.read_text())
                old_speed, ow0, ov0 = float(d["speed"]), float(d["w0"]), float(d["v0"])
                self.v0 = ov0 + (w - ow0) * old_speed  # continue where the old timeline is now, at the new speed
            except (OSError, ValueError, KeyError, TypeError):
                pass
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"speed": self.speed, "w0": self.w0, "v0": self.v0}))
            os.replace(tmp, path)

    def now(self) -> float:
        return self.v0 + (self.wall() - self.w0) * self.speed

    def at(self, wall: float) -> float:
        """The virtual time of wall time ``wall``."""
        return self.v0 + (wall - self.w0) * self.speed

    def wall_of(self, v: float) -> float:
        return self.w0 + (v - self.v0) / self.speed


@dataclass
class VirtualHandle(Handle):
    nodes: tuple[str, ...] = ()
    world: int = 1
    vstart: float = 0.0
    vend: float = 0.0  # when the processes exit by themselves
    code: int = 0  # with this exit code
    base: float = 0.0  # work done by earlier attempts (checkpointed)
    work: float = 0.0  # the job's whole work
    stop_at: float | None = None  # virtual time the stopped processes exit
    stop_code: int = -15
    ended: bool = False
    lines: list[str] = field(default_factory=list)

    def record(self) -> tuple[list[Any], int | None]:
        return [[self.vstart, self.vend, self.code, self.base, self.work, list(self.nodes), self.world]], None


class VirtualExecutor(Executor):
    """Runs attempts on virtual nodes (see the module docstring)."""

    dynamic_membership = True

    def __init__(self, cluster: Cluster, data_dir: str | Path, *, speed: float = 1.0,
                 faults: FailureConfig | None = None, grace_s: float = 5.0,
                 wall: Callable[[], float] = time.time, write_logs: bool = True) -> None:
        self.cluster = cluster
        self.root = Path(data_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.clock = VirtualClock(speed, self.root / "virtual-clock.json", wall)
        self.speed = self.clock.speed
        self.grace_s = grace_s
        self.faults = faults or FailureConfig()
        self.write_logs = write_logs
        self.lock = threading.Lock()
        self._progress_path = self.root / "virtual-progress.json"
        self.progress: dict[int, float] = self._load_progress()  # job -> checkpointed work (virtual seconds)
        self._rng = random.Random(self.faults.seed)
        self._n_dev = cluster.n_devices
        self.failed_devices: dict[tuple[str, int], tuple[float, str]] = {}  # -> (repair at, reason)
        self.failed_nodes: dict[str, tuple[float, str, float]] = {}  # -> (repair at, reason, failed at)
        self.fault_log: list[tuple[float, str, str, int]] = []  # (virtual time, kind, node, device or -1)
        t = self.clock.now()
        self._fault_t0 = t
        rate = self.faults.rate_per_device_hour * self._n_dev / 3600.0 if self.faults.enabled else 0.0
        self._rate = rate
        self._next_fault = t + self._rng.expovariate(rate) if rate > 0 else math.inf
        self._script = sorted(self.faults.script)
        self._injected: dict[str, dict[int, str]] = {}
        self._injected_mtime: float | None = None
        self._nodes_cache: list[NodeInfo] | None = None
        self._tick_v: float | None = None  # the controller's current tick, virtual (None: no controller ticks)
        self._ckpt_wall: dict[int, float] = {}  # job -> wall time of the checkpoint its lost attempt kept
        self._base_nodes = [self._node_info(i) for i in range(cluster.n_nodes)]
        # when each handle's processes end by themselves or after a stop (virtual time, job id): the controller
        # polls only the handles due (``due``), not all 8,000 running ones every tick
        self._wake: list[tuple[float, int]] = []
        self._node_fails = 0  # whole-node failures so far: a new one makes every handle due (they may be on it)
        self._node_fails_seen = 0

    # -- membership and health -------------------------------------------------------------------------------
    def _node_info(self, i: int) -> NodeInfo:
        n = self.cluster.nodes[i]
        devs = tuple(DeviceInfo(k, n.accelerator, f"virtual-{n.name}-{k}", None, True, DeviceHealth.HEALTHY, None)
                     for k in range(n.devices))
        return NodeInfo(n.name, devs, n.cpu_milli, n.memory_mib, n.domain, n.rack, partitions=n.partitions)

    def _read_injected(self) -> bool:
        path = os.environ.get(FAULTS_FILE_ENV)
        if not path:
            changed = bool(self._injected)
            self._injected = {}
            return changed
        try:
            mt = os.stat(path).st_mtime
        except OSError:
            mt = None
        if mt == self._injected_mtime:
            return False
        self._injected_mtime = mt
        new = faults_by_node()
        changed = new != self._injected
        self._injected = new
        return changed

    def advance_faults(self, now: float | None = None) -> bool:
        """Apply the failures and repairs due by virtual time ``now``; True if anything changed."""
        now = self.clock.now() if now is None else now
        changed = False
        c = self.cluster
        while True:  # every event due by ``now``, in time order
            t_script = self._fault_t0 + self._script[0][0] if self._script else math.inf
            rep_dev = min(self.failed_devices.items(), key=lambda kv: kv[1][0], default=None)
            rep_node = min(self.failed_nodes.items(), key=lambda kv: kv[1][0], default=None)
            t_rd = rep_dev[1][0] if rep_dev else math.inf
            t_rn = rep_node[1][0] if rep_node else math.inf
            t = min(t_script, self._next_fault, t_rd, t_rn)
            if t > now:
                return changed
            changed = True
            if t == t_rd and rep_dev is not None:
                del self.failed_devices[rep_dev[0]]
                self.fault_log.append((t, "device-repaired", rep_dev[0][0], rep_dev[0][1]))
            elif t == t_rn and rep_node is not None:
                del self.failed_nodes[rep_node[0]]
                self.fault_log.append((t, "node-repaired", rep_node[0], -1))
            elif t == t_script:
                _, kind, idx, rep = self._script.pop(0)
                if kind == "node":  # a scripted node failure names a node index, a device failure a device index
                    self._fail(t, int(c.node_dev_start[min(int(idx), c.n_nodes - 1)]), True, float(rep))
                else:
                    self._fail(t, int(idx), False, float(rep))
            else:
                d = self._rng.randrange(self._n_dev)
                whole = self._rng.random() >= self.faults.device_share
                mean = self.faults.node_repair_s if whole else self.faults.device_repair_s
                self._fail(t, d, whole, self._rng.expovariate(1.0 / mean) if mean > 0 else 0.0)
                self._next_fault = t + self._rng.expovariate(self._rate)

    def _fail(self, t: float, device: int, whole_node: bool, repair_s: float) -> None:
        """Device ``device`` (global index) fails at ``t``, or its whole node."""
        c = self.cluster
        device = min(max(0, device), max(0, c.n_devices - 1))
        if whole_node:
            self._node_fails += 1
            node = c.nodes[int(c.dev_node[device])].name
            self.failed_nodes[node] = (t + repair_s, f"virtual node failure (repair {repair_s:.0f}s)", t)
            self.fault_log.append((t, "node-failed", node, -1))
        else:
            dv = c.device(device)
            key = (c.nodes[dv.node].name, dv.local_index)
            self.failed_devices[key] = (t + repair_s, f"virtual device failure (repair {repair_s:.0f}s)")
            self.fault_log.append((t, "device-failed", key[0], key[1]))

    def fail_node(self, name: str, repair_s: float) -> None:
        """Take virtual node ``name`` down now (its attempts end with node-lost), back after ``repair_s``."""
        with self.lock:
            i = self.cluster.node_index(name)
            self._fail(self.clock.now(), int(self.cluster.node_dev_start[i]), True, repair_s)
            self._nodes_cache = None

    def fail_device(self, node: str, index: int, repair_s: float) -> None:
        """Device ``index`` of ``node`` reports unhealthy now, healthy again after ``repair_s``."""
        with self.lock:
            i = self.cluster.node_index(node)
            self._fail(self.clock.now(), int(self.cluster.node_dev_start[i]) + index, False, repair_s)
            self._nodes_cache = None

    def nodes(self) -> list[NodeInfo]:
        with self.lock:
            changed = self.advance_faults() | self._read_injected()
            if self._nodes_cache is not None and not changed:
                return self._nodes_cache
            out: list[NodeInfo] = []
            bad_nodes = {n for n, _ in self.failed_devices} | set(self._injected)
            for info in self._base_nodes:
                if info.name in self.failed_nodes:
                    continue
                if info.name not in bad_nodes and "*" not in self._injected:
                    out.append(info)
                    continue
                inj = {**self._injected.get("*", {}), **self._injected.get(info.name, {})}
                devs = []
                for d in info.devices:
                    f = self.failed_devices.get((info.name, d.index))
                    if d.index in inj:
                        devs.append(DeviceInfo(d.index, d.model, d.uuid, None, True, DeviceHealth.UNHEALTHY,
                                               f"injected: {inj[d.index]}"))
                    elif f is not None:
                        devs.append(DeviceInfo(d.index, d.model, d.uuid, None, True, DeviceHealth.UNHEALTHY, f[1]))
                    else:
                        devs.append(d)
                out.append(NodeInfo(info.name, tuple(devs), info.cpu_milli, info.memory_mib, info.domain, info.rack,
                                    partitions=info.partitions))
            self._nodes_cache = out
            return out

    # -- processes -------------------------------------------------------------------------------------------
    def log_path(self, job_id: int, n: int, rank: int = 0) -> Path:
        return self.root / "jobs" / str(job_id) / "logs" / f"attempt-{n}.rank-{rank}.log"

    def _log(self, h: VirtualHandle, text: str, t: float) -> None:
        if not self.write_logs:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        for r in range(h.world):
            p = self.log_path(h.job_id, h.n, r)
            try:
                with open(p, "a") as f:
                    f.write(f"{stamp} [virtual rank {r}/{h.world}] {text}\n")
            except FileNotFoundError:
                p.parent.mkdir(parents=True, exist_ok=True)
                with open(p, "a") as f:
                    f.write(f"{stamp} [virtual rank {r}/{h.world}] {text}\n")

    def start(self, a: AttemptSpec) -> Handle:
        missing = [n for n in a.nodes if n in self.failed_nodes]
        if missing:
            raise RuntimeError(f"virtual node {missing[0]} is down")
        work, code = runtime_of(a.spec)
        with self.lock:
            base = min(self.progress.get(a.job_id, 0.0), work)
        now = self._now()
        h = VirtualHandle(a.job_id, a.attempt_id, a.n, nodes=tuple(a.nodes), world=a.world, vstart=now,
                          vend=now + (work - base), code=code, base=base, work=work)
        self._due_at(h.vend, h.job_id)
        where = ", ".join(f"{n}{list(d)}" for n, d in zip(a.nodes, a.devices, strict=True))
        self._log(h, f"attempt {a.n} started on {where}; {work - base:.0f}s of work left"
                  + (f" (resumed at {base:.0f}s)" if base else ""), now)
        return h

    def last_checkpoint(self, job_id: int) -> float | None:
        """The wall time of the periodic checkpoint that an attempt ended by a node loss or an unhealthy device kept
        (read once, by the controller, as it records that end)."""
        return self._ckpt_wall.pop(job_id, None)

    def at_tick(self, now: float) -> None:
        self._tick_v = self.clock.at(now)

    def _now(self) -> float:
        """Virtual now: the controller's tick instant while a tick runs (starts and ends it sees are stamped with
        it: a process that ends between two ticks is seen at the next one, as the twin on a tick grid sees it;
        without this the store's times and the processes' drift apart by the tick's own run time x speed)."""
        return self._tick_v if self._tick_v is not None else self.clock.now()

    def _due_at(self, t: float, job_id: int) -> None:
        with self.lock:
            heapq.heappush(self._wake, (t, job_id))

    def due(self, handles: Mapping[int, Handle]) -> Iterable[int]:
        """The handles whose end (or stop) time has come by the tick's instant; every handle after a node failure
        (its processes died with the node, found by ``poll``)."""
        now = self._now()
        with self.lock:
            if self._node_fails != self._node_fails_seen:
                self._node_fails_seen = self._node_fails
                self._wake = [(t, j) for t, j in self._wake if t > now]
                heapq.heapify(self._wake)
                return list(handles)
            out = []
            w = self._wake
            while w and w[0][0] <= now:
                jid = heapq.heappop(w)[1]
                if jid in handles:
                    out.append(jid)
            return out

    def poll(self, h: Handle) -> tuple[bool, int | None]:
        assert isinstance(h, VirtualHandle)
        if h.ended:
            return True, h.stop_code if h.stop_at is not None else h.code
        now = self._now()
        lost = [self.failed_nodes[n][2] for n in h.nodes if n in self.failed_nodes]
        if h.stopping is None and lost:  # its processes died with the node, when the node failed
            h.stopping = StopReason.NODE_LOST
            h.stop_at, h.stop_code = max(h.vstart, min(lost)), -9
            h.lost_at = self.clock.wall_of(h.stop_at)  # lost work ends when the node failed, not when it is seen
        if h.stop_at is not None and h.stop_at < h.vend:
            if now < h.stop_at:
                return False, None
            self._end(h, h.stop_at, h.stop_code)
            return True, h.stop_code
        if now < h.vend:
            return False, None
        h.stop_at = None
        self._end(h, h.vend, h.code)
        return True, h.code

    def _end(self, h: VirtualHandle, t: float, code: int) -> None:
        h.ended = True
        ran = max(0.0, t - h.vstart)
        done = h.base + ran
        with self.lock:
            old = self.progress.get(h.job_id)
            if code == 0 and h.stop_at is None:
                self.progress.pop(h.job_id, None)
            elif h.stopping in (StopReason.NODE_LOST, StopReason.DEVICE_UNHEALTHY):
                ck = self.faults.checkpoint_s
                since = math.floor(ran / ck) * ck if ck > 0 and math.isfinite(ck) else 0.0
                kept = h.base + since
                self.progress[h.job_id] = min(kept, h.work)
                if since > 0:  # the controller counts the lost work from this attempt's last checkpoint
                    self._ckpt_wall[h.job_id] = self.clock.wall_of(h.vstart + since)
                else:
                    self._ckpt_wall.pop(h.job_id, None)
            elif h.stopping in (StopReason.PREEMPT, StopReason.SHUTDOWN):
                self.progress[h.job_id] = min(done, h.work)  # checkpoints when asked to stop (as the twin)
            else:
                self.progress.pop(h.job_id, None)
            if self.progress.get(h.job_id) != old:  # most attempts end with no progress kept before or after:
                self._save_progress()  # rewriting the whole file for each was ~27% of a core at 50 ends/s
        why = f" ({h.stopping})" if h.stopping else ""
        self._log(h, f"exit {code}{why} after {ran:.0f}s", t)

    def stop(self, h: Handle, why: StopReason, grace_s: float | None = None) -> None:
        assert isinstance(h, VirtualHandle)
        if why == StopReason.SHUTDOWN:
            self._tick_v = None  # the controller's loop has ended: its shutdown polls live on the clock
        if h.stopping is None:
            h.stopping = why
        if h.stop_at is None and not h.ended:
            g = self.grace_s if grace_s is None else grace_s
            h.stop_at, h.stop_code = self.clock.now() + min(TERM_S, g * self.speed), -15
            self._due_at(h.stop_at, h.job_id)

    def kill(self, h: Handle) -> None:
        assert isinstance(h, VirtualHandle)
        if not h.ended:
            h.stop_at, h.stop_code = self.clock.now(), -9
            self._due_at(h.stop_at, h.job_id)

    def adopt(self, records: list[AttemptRecord]) -> dict[int, Adoption]:
        out: dict[int, Adoption] = {}
        now = self.clock.now()
        for r in records:
            if not r.procs:
                out[r.attempt_id] = Adoption(AdoptVerdict.NOT_STARTED, None, False, 0, r.world)
                continue
            vstart, vend, code, base, work, nodes, world = r.procs[0]
            h = VirtualHandle(r.job_id, r.attempt_id, r.n, nodes=tuple(nodes), world=int(world),
                              vstart=float(vstart), vend=float(vend), code=int(code), base=float(base),
                              work=float(work))
            self._due_at(h.vend, h.job_id)
            out[r.attempt_id] = Adoption(AdoptVerdict.ADOPTED, h, now < h.vend, h.world, h.world)
        return out

    # -- progress kept across restarts -----------------------------------------------------------------------
    def _load_progress(self) -> dict[int, float]:
        try:
            return {int(k): float(v) for k, v in json.loads(self._progress_path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_progress(self) -> None:
        tmp = self._progress_path.with_name(self._progress_path.name + ".tmp")
        tmp.write_text(json.dumps(self.progress))
        os.replace(tmp, self._progress_path)

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` and ``suanli up`` show about the virtual fleet."""
        return {"virtual": True, "speed": self.speed, "nodes": self.cluster.n_nodes,
                "devices": self.cluster.n_devices, "failed_nodes": len(self.failed_nodes),
                "failed_devices": len(self.failed_devices), "virtual_now": self.clock.now()}


def parse_faults(rate: float | None, seed: int = 0, checkpoint_s: float | None = None) -> FailureConfig:
    """The twin's failure model at ``rate`` failures per device-hour (None or 0: no random faults)."""
    fc = FailureConfig(enabled=bool(rate), seed=seed)
    if rate:
        fc.rate_per_device_hour = float(rate)
    if checkpoint_s is not None:
        fc.checkpoint_s = float(checkpoint_s)
    return fc

