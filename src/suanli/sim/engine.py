"""The discrete-event engine: drives the unmodified scheduler core (:class:`suanli.sched.Scheduler`) on a virtual
clock, exactly as the controller drives it on the wall clock.

Events: arrivals (read from the sorted workload by a cursor, not queued), completions, failures, repairs and LAS
threshold crossings, in one binary heap - each costs O(log n). Events at the same instant are applied together and
``decide`` is called once after them, and only if something happened that can change its answer (an arrival, a
completion, a failure, a repair, a job crossing a LAS threshold).

Work model: a job's ``duration`` is work in reference seconds; on a model of relative speed ``s`` it advances ``s``
reference seconds per second. ``s`` is the job type's speed on that model when the workload gives one
(Gavel-style per-job throughputs), else the cluster's per-model speed. A preempted job keeps its progress (it
checkpoints when asked to stop, as Tiresias and Gandiva assume). A failure kills the whole gang: the job loses the
work since its last periodic checkpoint (every ``checkpoint_s`` of run time, counted from its latest start) and is
requeued.

Every job-state change goes through :func:`suanli.workload.states.check_transition`.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from suanli.fleet.model import Cluster
from suanli.sched import Scheduler
from suanli.sched.alloc import WHOLE, Allocation
from suanli.sched.placement import Placer
from suanli.sched.reasons import Reason
from suanli.sched.reasons import counts as reason_counts
from suanli.sched.state import RunningJob
from suanli.sim.workload import Workload
from suanli.workload.spec import Job
from suanli.workload.states import TRANSITIONS, JobState, check_transition

ATT_SUCCEEDED, ATT_PREEMPTED, ATT_NODE_LOST = range(3)
ATTEMPT_OUTCOMES = ("succeeded", "preempted", "node-lost")  # as the control plane's AttemptOutcome values

# event kinds, in the order they are handled at one instant
FINISH, FAIL_DEV, FAIL_NODE, REPAIR_DEV, REPAIR_NODE, TICK = range(6)

# Llama 3 (Dubey et al. 2024, sec. 3.3.4): 419 unexpected interruptions in 54 days on 16,384 H100s; about 61% were
# device-level (faulty GPU 148, HBM3 72, SRAM 19, GPU system processor 17 = 256 of 419), the rest node-level
# (host, network switch/cable, ...).
LLAMA3_RATE_PER_DEVICE_HOUR = 419 / (54 * 24 * 16384)
LLAMA3_DEVICE_SHARE = 256 / 419

_ST = {s: i for i, s in enumerate(JobState)}
_STATES = list(JobState)
_OK = {(_ST[s], _ST[d]) for s, ds in TRANSITIONS.items() for d in ds}
PENDING, RUNNING, SUCCEEDED = _ST[JobState.PENDING], _ST[JobState.RUNNING], _ST[JobState.SUCCEEDED]
FAILED, PREEMPTED, REQUEUED = _ST[JobState.FAILED], _ST[JobState.PREEMPTED], _ST[JobState.REQUEUED]
NEW = -1  # not arrived yet


@dataclass(slots=True)
class FailureConfig:
    """Failures and checkpoints. Defaults: the Llama 3 rate and mix; repairs and checkpoints are assumptions."""

    enabled: bool = False
    rate_per_device_hour: float = LLAMA3_RATE_PER_DEVICE_HOUR
    device_share: float = LLAMA3_DEVICE_SHARE  # the rest take a whole node down
    device_repair_s: float = 4 * 3600.0  # mean (exponential): swap a GPU
    node_repair_s: float = 2 * 3600.0  # mean (exponential): reboot / re-cable a host
    checkpoint_s: float = 1800.0  # checkpoint interval of every job (inf: never)
    # per job kind (train, finetune, eval, dev, serve, batch), overriding checkpoint_s: e.g. {"dev": inf}
    checkpoint_by_kind: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    # scripted failures, with or without the random ones: (time, "device" | "node", index, repair seconds)
    script: tuple[tuple[float, str, int, float], ...] = ()


@dataclass(slots=True)
class SimConfig:
    policy: str = "fifo"
    seed: int = 0
    failures: FailureConfig = field(default_factory=FailureConfig)
    speed: Mapping[str, float] | None = None  # relative speed per model (work per second), default 1.0
    # each tenant its own queue: what the fair policy shares among; None = only for fair (the other policies order
    # all queues alike, so one queue gives the same order without merging queues on every pass)
    queue_by_tenant: bool | None = None
    sched_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to Scheduler (packer, queues, window...)
    samples: int = 2000  # points of the utilization / queue-length timeline
    usage: bool = False  # keep one record per attempt (SimResult.attempts): the accounting report's usage rows


@dataclass(slots=True)
class SimResult:
    """Raw per-job outcomes and timelines; :mod:`suanli.sim.metrics` summarizes them."""

    policy: str
    workload: Workload
    cluster: Cluster
    state: np.ndarray  # int8 index into JobState, -1 never arrived
    first_start: np.ndarray
    finish: np.ndarray
    pending_s: np.ndarray  # seconds each job waited in all: before its first start and after each preemption/kill
    preemptions: np.ndarray  # int32 per job
    failures: np.ndarray  # int32 per job (kills by failures)
    run_ds: np.ndarray  # float64 per job: allocated device-seconds (all its runs; per-partition utilization)
    rejected: np.ndarray  # bool: can never fit the cluster
    busy_ds: float  # allocated device-seconds
    lost_ds: float  # device-seconds of work lost to failures
    contended_s: float  # seconds during which some job waited
    contended_busy_ds: float  # allocated device-seconds during those seconds
    contended_up_ds: float  # up device-seconds during those seconds
    t_start: float  # first arrival of an accepted job
    t_end: float  # last completion (failures and repairs after it do not count)
    timeline_t: np.ndarray
    timeline_busy: np.ndarray  # allocated devices
    timeline_pending: np.ndarray  # pending jobs
    timeline_up: np.ndarray  # devices up
    n_failures: int  # failures while some job ran, waited or was still to arrive (not on an idle, finished cluster)
    decide_calls: int
    events: int
    wall_s: float
    capacity: int
    # with SimConfig.usage: one row per attempt - (job, start, end, outcome, run seconds lost, placement); outcome
    # ATT_SUCCEEDED, ATT_PREEMPTED or ATT_NODE_LOST (a failure under it)
    attempts: list[tuple[int, float, float, int, float, Any]] | None = None
    wait_by_reason: dict[str, float] = field(default_factory=dict)  # waiting job-seconds by reason code

    @property
    def n_devices(self) -> int:
        return self.capacity


def _rep_ms(rep: float) -> int:
    """Repair time of a scripted failure, carried in the event's int slot as milliseconds."""
    if rep < 0 or not math.isfinite(rep):
        raise ValueError("repair time must be a non-negative number of seconds")
    return round(rep * 1000)


def _in_key_order(jobs: list[Job], key: Callable[[Job], Any]) -> bool:
    """Are ``jobs`` (in arrival order, seq increasing) in the pending queue's order?"""
    ks = [key(j) for j in jobs]
    return all(a <= b for a, b in itertools.pairwise(ks))


class Simulation:
    """One run of one policy over one workload on one cluster."""

    def __init__(self, cluster: Cluster, workload: Workload, config: SimConfig | None = None) -> None:
        self.cluster = cluster
        self.w = workload
        self.cfg = cfg = config or SimConfig()
        kw = dict(cfg.sched_kwargs)
        kw.setdefault("seed", cfg.seed)
        if cfg.speed is not None:
            kw.setdefault("speed", cfg.speed)
        self.sched = Scheduler(cluster, cfg.policy, **kw)
        self.speed = np.array([float((cfg.speed or {}).get(m, 1.0)) for m in cluster.models] + [1.0])

    # -- admission: a job that can never fit is rejected at arrival (an admission controller would) ------------
    def _fits_ever(self) -> np.ndarray:
        """Jobs that fit the empty cluster: each distinct job shape is placed once by the scheduler's own placer
        on an empty allocation (exact: CPU, memory, models, node sizes, gangs); the others are rejected."""
        w, c = self.w, self.cluster
        n = len(w)
        if n == 0:
            return np.ones(0, dtype=bool)
        # one int64 key per shape: small columns packed in bits, CPU and memory as codes of their distinct values
        k1 = (((w.count.astype(np.int64) * 1001 + w.milli) * 2049 + w.per_node) * 2 + w.gang) * 1_000_003 + (
            w.models.astype(np.int64) + 1)
        if len(w.partitions):
            k1 = k1 * (len(w.partitions) + 1) + (w.partition.astype(np.int64) + 1)
        _, c1 = np.unique(k1, return_inverse=True)
        ucpu, ccpu = np.unique(w.cpu_milli, return_inverse=True)
        umem, cmem = np.unique(w.mem_mib, return_inverse=True)
        key = (c1.reshape(-1).astype(np.int64) * len(ucpu) + ccpu.reshape(-1)) * len(umem) + cmem.reshape(-1)
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        uniq = np.stack([w.count[first].astype(np.int64), w.milli[first].astype(np.int64),
                         w.per_node[first].astype(np.int64), w.cpu_milli[first], w.mem_mib[first],
                         w.models[first].astype(np.int64), w.gang[first].astype(np.int64),
                         w.partition[first].astype(np.int64)], axis=1)
        placer = Placer(c)  # the default packer: feasibility does not depend on which feasible spot is chosen
        empty = Allocation(c)
        ok_shape = np.zeros(len(uniq), dtype=bool)
        for k, (cnt, milli, per, cpu, mem, ms, gang, pa) in enumerate(uniq.tolist()):
            job = Job(id=-1 - k, count=cnt, milli=milli, per_node=per or None, cpu_milli=cpu, mem_mib=mem,
                      models=w.model_sets[ms] if ms >= 0 else None, gang=bool(gang), seq=-1)
            parts = frozenset((w.partitions[pa],)) if pa >= 0 else None
            ok_shape[k] = placer.place(empty, job, placer.candidate_models(job, None, parts), parts) is not None
        return ok_shape[inv.reshape(-1)]

    def run(self, progress: Callable[[int, int], None] | None = None) -> SimResult:
        """Simulate to the end. The cyclic garbage collector is paused meanwhile (the engine makes no cycles; the
        collector's passes over millions of live job records cost a third of the run otherwise)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(progress)
        finally:
            if enabled:
                gc.enable()

    def _run(self, progress: Callable[[int, int], None] | None) -> SimResult:
        t_wall = time.perf_counter()
        w, c, cfg = self.w, self.cluster, self.cfg
        sched = self.sched
        state = sched.new_state()
        alloc = state.alloc
        running = state.running
        pending = state.pending
        n = len(w)
        submit = w.submit
        # per-job state in array.array: element access is several times cheaper than numpy scalar indexing
        st = array("b", [NEW]) * n
        nan = math.nan
        first_start = array("d", [nan]) * n
        pend_s = array("d", [0.0]) * n
        queued_since = array("d", [0.0]) * n
        finish = array("d", [nan]) * n
        remaining = array("d", w.duration.astype(np.float64).tobytes())
        run_start = array("d", [0.0]) * n
        epoch = array("i", [0]) * n
        n_pre = array("i", [0]) * n
        n_fail = array("i", [0]) * n
        run_ds = array("d", [0.0]) * n
        fits_np = self._fits_ever()
        fits = fits_np.tolist()
        acc = np.flatnonzero(fits_np)
        t_first = float(submit[acc[0]]) if len(acc) else (float(submit[0]) if n else 0.0)
        chunk = 4096
        by_tenant = cfg.queue_by_tenant if cfg.queue_by_tenant is not None else sched.policy == "fair"
        pjobs = pending.jobs  # the dicts behind len(pending) / running membership (cheaper than the methods)
        rjobs = running.jobs
        buf: list[Any] = []
        buf_t: list[float] = []
        buf_at = 0
        default = self.speed.tolist()
        # speed of job i on model m: stab[jtype[i]][m]; the last row (jtype -1) is the cluster's per-model speed
        stab = [[float(sp.get(mn, default[k])) for k, mn in enumerate(c.models)] + [1.0] for sp in w.type_speeds]
        stab.append(default)
        jtype = w.job_type.tolist()
        las = sched.pol.service_preemption  # LAS queues: threshold crossings are events
        promote = las and sched.las_promote > 0
        promo_tick = math.inf  # the latest promotion tick pushed
        rounds = sched.pol.round_s > 0  # round-based policies (gavel): the scheduler is called at every round end
        round_tick = -math.inf  # the latest round-end tick pushed
        thresholds = sched.las_thresholds
        fc = cfg.failures
        ckpt = fc.checkpoint_s if fc.checkpoint_s and fc.checkpoint_s > 0 else math.inf
        ckpt_kind = {k: (v if v and v > 0 else math.inf) for k, v in fc.checkpoint_by_kind.items()}
        ok_tr = _OK
        attempts: list[tuple[int, float, float, int, float, Any]] | None = [] if cfg.usage else None

        def move(i: int, dst: int) -> None:
            src = int(st[i])
            if (src, dst) not in ok_tr:
                check_transition(_STATES[src], _STATES[dst])  # raises with the state machine's message
            st[i] = dst

        heap: list[tuple[float, int, int, int]] = []
        push, pop = heapq.heappush, heapq.heappop
        rng = np.random.default_rng(fc.seed)
        n_dev = c.n_devices
        fail_rate = fc.rate_per_device_hour * n_dev / 3600.0 if fc.enabled and n_dev else 0.0
        # the random failures: a Poisson process while jobs run or are still to arrive; it pauses when the cluster
        # is idle with nothing left to arrive (a failure there cannot touch a job) and resumes at the next start
        fail_armed = fail_rate > 0 and len(acc) > 0
        if fail_armed:
            push(heap, (float(rng.exponential(1.0 / fail_rate)) + t_first, FAIL_DEV, -1, 0))
        for t_f, what, idx, rep in fc.script:
            if what not in ("device", "node"):
                raise ValueError(f"scripted failure kind must be 'device' or 'node', not {what!r}")
            push(heap, (float(t_f), FAIL_DEV if what == "device" else FAIL_NODE, int(idx), _rep_ms(rep)))
        n_failures = 0
        dev_node = c.dev_node

        busy = 0  # allocated milli
        busy_ds = lost_ds = 0.0
        cont_s = cont_busy = cont_up = 0.0
        up_devs = n_dev
        last_t = float(submit[0]) if n else 0.0
        wait_counts: dict[Reason, int] = {}  # waiting jobs by reason, as of the last pass
        wait_s: dict[Reason, float] = {}
        t_end = t_first
        span = float(submit[-1] - submit[0]) if n else 0.0
        res = max(span + float(np.median(w.duration)) if n else 1.0, 1.0) / max(cfg.samples, 10)
        tl_t, tl_b, tl_p, tl_u = array("d"), array("d"), array("d"), array("d")
        last_rec = -math.inf
        ptr = 0
        decide_calls = events = 0
        done_jobs = 0
        next_report = 0

        def kill(jid: int, now: float) -> None:
            """A failure under job ``jid``: the whole gang stops, loses the work since its last checkpoint and
            goes back to the queue (its attained service keeps the lost run: the devices were used)."""
            nonlocal busy, lost_ds
            queued_since[jid] = now
            r = state.stop(jid, now)
            if attempts is not None:
                ran_t = now - run_start[jid]
                ck_t = ckpt_kind.get(r.job.kind, ckpt)
                attempts.append((jid, r.start, now, ATT_NODE_LOST, ran_t % ck_t if ck_t < math.inf else ran_t,
                                 r.placement))
            pl = r.placement
            busy -= pl.milli * pl.n_devices
            ran = now - run_start[jid]
            run_ds[jid] += ran * pl.milli * pl.n_devices / WHOLE
            ck = ckpt_kind.get(r.job.kind, ckpt)
            lost_t = ran % ck if ck < math.inf else ran
            lost_ds += lost_t * r.job.devices_equiv
            remaining[jid] = max(1e-9, remaining[jid] - (ran - lost_t) * stab[jtype[jid]][r.model])
            n_fail[jid] += 1
            epoch[jid] += 1
            move(jid, REQUEUED)
            state.submit(r.job)

        def on_start(r: RunningJob, now: float) -> None:
            nonlocal busy, fail_armed
            jb = r.job
            jid = jb.id
            pl = r.placement
            busy += pl.milli * pl.n_devices
            pend_s[jid] += now - queued_since[jid]
            if fail_rate > 0 and not fail_armed:
                fail_armed = True
                push(heap, (now + float(rng.exponential(1.0 / fail_rate)), FAIL_DEV, -1, 0))
            if (st[jid], RUNNING) not in ok_tr:
                move(jid, RUNNING)  # raises
            st[jid] = RUNNING
            if first_start[jid] != first_start[jid]:
                first_start[jid] = now
            run_start[jid] = now
            e = epoch[jid]
            push(heap, (now + remaining[jid] / stab[jtype[jid]][r.model], FINISH, jid, e))
            if las:
                dev = jb.devices_equiv * r.rate
                if dev > 0:
                    attained = jb.attained - jb.las_base
                    for th in thresholds:
                        if attained < th:
                            push(heap, (now + (th - attained) / dev, TICK, jid, e))
                            break

        inf = math.inf
        batch: list[Job] = []  # jobs arriving onto an empty queue at an instant with nothing else happening
        while True:
            if ptr >= buf_at + len(buf) and ptr < n:
                buf_at = ptr
                buf = w.jobs(ptr, min(n, ptr + chunk), by_tenant)
                buf_t = submit[ptr : ptr + len(buf)].tolist()
            t_arr = buf_t[ptr - buf_at] if ptr < n else inf
            t_ev = heap[0][0] if heap else inf
            now = t_arr if t_arr < t_ev else t_ev
            if now == inf:
                break
            dt = now - last_t
            if dt > 0:
                b = busy / WHOLE
                busy_ds += b * dt
                if pjobs:
                    cont_s += dt
                    cont_busy += b * dt
                    cont_up += up_devs * dt
                    for r_, k_ in wait_counts.items():
                        wait_s[r_] = wait_s.get(r_, 0.0) + k_ * dt
                last_t = now
            dirty = round_due = False
            # arrivals onto an empty queue at an instant with no other event are kept aside: submit_now below
            fresh = not pjobs and not (heap and heap[0][0] == now)
            # arrivals at this instant
            while ptr < n and t_arr == now:
                i = ptr
                job = buf[i - buf_at]
                ptr += 1
                events += 1
                if ptr < n:
                    if ptr >= buf_at + len(buf):
                        buf_at = ptr
                        buf = w.jobs(ptr, min(n, ptr + chunk), by_tenant)
                        buf_t = submit[ptr : ptr + len(buf)].tolist()
                    t_arr = buf_t[ptr - buf_at]
                if not fits[i]:
                    st[i] = FAILED
                    continue
                st[i] = PENDING
                queued_since[i] = now
                if fresh:
                    batch.append(job)
                else:
                    state.submit(job)
                dirty = True
            # other events at this instant
            while heap and heap[0][0] == now:
                _, kind, a, e = pop(heap)
                events += 1
                if kind == FINISH:
                    if e != epoch[a] or a not in rjobs:
                        continue
                    r = state.stop(a, now)
                    if attempts is not None:
                        attempts.append((a, r.start, now, ATT_SUCCEEDED, 0.0, r.placement))
                    mt = r.placement.milli * r.placement.n_devices
                    busy -= mt
                    run_ds[a] += (now - run_start[a]) * mt / WHOLE
                    if (st[a], SUCCEEDED) not in ok_tr:
                        move(a, SUCCEEDED)
                    st[a] = SUCCEEDED
                    finish[a] = now
                    t_end = now
                    done_jobs += 1
                    dirty = True
                elif kind == TICK:
                    if a == -2:  # a round end
                        dirty = round_due = True
                    elif a < 0:  # a waiting LAS job's promotion time
                        dirty = True
                    elif e == epoch[a] and a in running.jobs:
                        dirty = True
                        r = running.jobs[a]
                        att = r.served(now)
                        dev = r.job.devices_equiv * r.rate
                        for th in thresholds if dev > 0 else ():
                            if att + 1e-6 < th:
                                push(heap, (now + (th - att) / dev, TICK, a, e))
                                break
                elif kind in (FAIL_DEV, FAIL_NODE):
                    if not (ptr < n or rjobs or pjobs):
                        continue  # the cluster is idle and every job is done: nothing to fail
                    n_failures += 1
                    if a < 0:  # a random failure: which device, and does it take the node down?
                        d = int(rng.integers(n_dev))
                        whole_node = rng.random() >= fc.device_share
                        node = int(dev_node[d])
                        rep = float(rng.exponential(fc.node_repair_s if whole_node else fc.device_repair_s))
                        if ptr < n or rjobs:
                            push(heap, (now + float(rng.exponential(1.0 / fail_rate)), FAIL_DEV, -1, 0))
                        else:
                            fail_armed = False
                    else:
                        whole_node = kind == FAIL_NODE
                        d = -1 if whole_node else a
                        node = a if whole_node else int(dev_node[a])
                        rep = e / 1000.0
                    if not whole_node:
                        if alloc.dev_up[d] and alloc.node_up[node]:
                            for j in list(running.node_jobs[node]):
                                pl = running.jobs[j].placement
                                if d in pl.devices[pl.nodes.index(node)]:
                                    kill(int(j), now)
                            alloc.set_device_up(d, False)
                            up_devs -= 1
                            push(heap, (now + rep, REPAIR_DEV, d, 0))
                    elif alloc.node_up[node]:
                        for j in list(running.node_jobs[node]):
                            kill(int(j), now)
                        up_devs -= int(alloc.dev_up[c.node_devices_ids(node)].sum())
                        alloc.set_node_up(node, False)
                        push(heap, (now + rep, REPAIR_NODE, node, 0))
                    dirty = True
                elif kind == REPAIR_DEV:
                    alloc.set_device_up(a, True)
                    if alloc.node_up[int(dev_node[a])]:
                        up_devs += 1
                    dirty = True
                elif kind == REPAIR_NODE:
                    alloc.set_node_up(a, True)
                    up_devs += int(alloc.dev_up[c.node_devices_ids(a)].sum())
                    dirty = True
            if batch:
                # Jobs arriving onto an empty queue, nothing else happening: one after the other through
                # Scheduler.submit_now (start at once if step's lone-job rule places it), which decides what one pass
                # over them decides when the pass would take them in arrival order (keys in order), no packer learns
                # from submissions in between, and the pass does not look at the running set in a way a job started
                # earlier in the pass would change (backfill's shadow time does: several go to step together); the
                # first that does not start, and the rest, go to step below.
                if len(batch) > 1 and (state.on_submit is not None or sched.pol.blocking == "reserve"
                                       or not _in_key_order(batch, pending.key)):
                    for jb in batch:
                        state.submit(jb)
                else:
                    for k, jb in enumerate(batch):
                        r = sched.submit_now(state, jb, now)
                        if r is None:  # pending: it and the rest are the step's
                            for jb2 in batch[k + 1 :]:
                                state.submit(jb2)
                            break
                        on_start(r, now)
                    else:  # all started: what step would have decided
                        decide_calls += 1
                        if wait_counts:
                            wait_counts = {}  # nothing waits
                        dirty = False
                batch = []
            if dirty and (pjobs or (round_due and rjobs)):
                decide_calls += 1
                d, started = sched.step(state, now)
                if started is not None:  # no preemption: already carried out
                    for r in started:
                        on_start(r, now)
                elif d.preemptions or d.starts:
                    for p in d.preemptions:
                        jid = int(p.job_id)
                        queued_since[jid] = now
                        r = running.jobs[jid]
                        if attempts is not None:
                            attempts.append((jid, r.start, now, ATT_PREEMPTED, 0.0, r.placement))
                        busy -= r.placement.milli * r.placement.n_devices
                        ran = now - float(run_start[jid])
                        remaining[jid] = max(1e-9, remaining[jid] - ran * stab[jtype[jid]][r.model])
                        run_ds[jid] += ran * r.placement.milli * r.placement.n_devices / WHOLE
                        n_pre[jid] += 1
                        epoch[jid] += 1
                        move(jid, PREEMPTED)
                        move(jid, REQUEUED)
                    for r in state.apply(d, now):
                        on_start(r, now)
                if d.waiting:
                    wait_counts = reason_counts(d.waiting, len(pjobs), d.rest)
                elif pjobs:  # what reason_counts gives, without building a Counter on every pass
                    wait_counts = {d.rest[0] if d.rest is not None else Reason.WINDOW: len(pjobs)}
                elif wait_counts:
                    wait_counts = {}
                if promote:
                    t_p = pending.next_due(now)
                    if t_p < math.inf and t_p != promo_tick:
                        promo_tick = t_p
                        push(heap, (t_p, TICK, -1, 0))
            if rounds and round_tick <= now and (pjobs or rjobs):
                round_tick = sched.pol.next_round(now)
                push(heap, (round_tick, TICK, -2, 0))
            if now - last_rec >= res:
                last_rec = now
                tl_t.append(now)
                tl_b.append(busy / WHOLE)
                tl_p.append(len(pending))
                tl_u.append(up_devs)
            if progress is not None and ptr >= next_report:
                progress(ptr, n)
                next_report = ptr + max(1, n // 200)
        if progress is not None:
            progress(n, n)
        tl_t.append(last_t)
        tl_b.append(busy / WHOLE)
        tl_p.append(len(pending))
        tl_u.append(up_devs)
        return SimResult(
            policy=sched.policy, workload=w, cluster=c, state=np.frombuffer(st, dtype=np.int8).copy(),
            first_start=np.frombuffer(first_start).copy(), finish=np.frombuffer(finish).copy(),
            pending_s=np.frombuffer(pend_s).copy(),
            preemptions=np.frombuffer(n_pre, dtype=np.int32).copy(),
            failures=np.frombuffer(n_fail, dtype=np.int32).copy(), run_ds=np.frombuffer(run_ds).copy(),
            rejected=~fits_np, busy_ds=busy_ds, lost_ds=lost_ds,
            contended_s=cont_s, contended_busy_ds=cont_busy, contended_up_ds=cont_up, t_start=t_first, t_end=t_end,
            timeline_t=np.frombuffer(tl_t), timeline_busy=np.frombuffer(tl_b), timeline_pending=np.frombuffer(tl_p),
            timeline_up=np.frombuffer(tl_u), n_failures=n_failures, decide_calls=decide_calls, events=events,
            wall_s=time.perf_counter() - t_wall, capacity=n_dev, attempts=attempts,
            wait_by_reason={r.code: v for r, v in sorted(wait_s.items())},
        )

