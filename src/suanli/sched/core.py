"""The scheduler core: ``decide(state, now) -> Decisions``. Pure: no I/O, no clock, no threads; the state it is
given is exactly as it was when it returns (trial placements run on the allocation's journal and are rolled back).

Policies (ordering of the pending queue):

- ``fifo``: submission order (higher priority first); the first job that does not fit blocks the rest.
- ``backfill``: EASY backfilling - the blocked head gets a reservation at the *shadow time* computed from running
  jobs' expected ends; later jobs start now if they end before it or only use capacity the head will not need.
- ``sjf``: shortest expected runtime first; a job that does not fit is skipped.
- ``las``: Tiresias-style discretised least-attained-service: queues by attained device-seconds (thresholds),
  FIFO inside a queue; preemptive - a job in a lower queue may preempt jobs that have attained more. Starvation
  guard (Tiresias's PROMOTEKNOB): a job that has waited ``las_promote`` times as long as it has run since it was
  last promoted goes back to the top queue (its service is counted afresh from there); 0 turns it off.
- ``fair``: weighted queues with guaranteed quotas per accelerator model; a queue over its quota borrows idle
  capacity (such jobs are marked borrowed) and a queue within its quota reclaims it by preemption.

Every policy also does priority preemption (``preemption=True``): a job that does not fit may preempt running
preemptible jobs of strictly lower priority. Victims are whole jobs (a gang is never split), chosen as a small set:
on the fewest nodes, lowest priority and fewest devices first, then checked by a real trial placement.

A pass gives up after ``window`` pending jobs that could not start (Slurm's ``bf_max_job_test`` idea), and a job
shape that did not fit is not tried again in the same pass (capacity only shrinks within a pass).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from suanli.catalog.accelerators import accelerator, is_known_accelerator
from suanli.errors import UnknownName
from suanli.fleet.model import Cluster
from suanli.sched.alloc import WHOLE, Placement
from suanli.sched.placement import BestFitPacker, Packer, PlacementConfig, Placer, RandomPacker
from suanli.sched.policy import REGISTRY, Policy, make_policy
from suanli.sched.preempt import preempt_for, priority_victim
from suanli.sched.reasons import Reason, Why
from suanli.sched.state import MIXED, Decisions, Key, Preempt, RunningJob, SchedState, Start
from suanli.workload.spec import Job

POLICIES = tuple(REGISTRY)  # fifo, backfill, sjf, las, fair, gavel (suanli.sched.policy)
# LAS starvation guard: a job waits at most this many times its run since its last promotion. Tiresias leaves the
# knob to the operator; 32 is our choice, measured in docs/sim.md (worst 1% slowdown against average JCT).
LAS_PROMOTE = 32.0
MODEL_ORDERS = ("listed", "fastest", "most-free")
MIGRATE_GAIN = 2.0  # heterogeneity-aware migration: only to a model at least this much faster for the job
MIGRATE_PER_PASS = 4
SORT_MERGE_MAX = 4096  # pending jobs up to which a skipping pass (sjf, las) sorts all queues' entries, not merging


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue for the ``fair`` policy: weight, guaranteed quota (devices) per accelerator model."""

    name: str
    weight: float = 1.0
    quota: Mapping[str, int] = field(default_factory=dict)  # model key (or "*" for any) -> devices
    borrow: bool = True  # may use other queues' idle quota (preemptible)
    partitions: tuple[str, ...] | None = None  # partitions its jobs may use (a job may name its own); None: any

    def quota_for(self, model: str) -> int | None:
        if model in self.quota:
            return self.quota[model]
        return self.quota.get("*")


def _peak_speed(models: Sequence[str]) -> dict[str, float]:
    """Relative speed by dense BF16 peak (catalog; FP16 for GPUs without BF16); unknown peaks rank last."""
    out: dict[str, float] = {}
    for m in models:
        a = accelerator(m) if is_known_accelerator(m) else None
        v = (a.bf16_tflops.value if a.bf16_tflops.value is not None else a.fp16_tflops.value) if a else None
        out[m] = float(v) if v is not None else 0.0
    return out


class Scheduler:
    """A policy bound to one cluster. ``decide`` is the only decision entry point."""

    def __init__(
        self,
        cluster: Cluster,
        policy: str = "fifo",
        *,
        queues: Iterable[QueueConfig] = (),
        packer: str | Packer = "best-fit",
        model_order: str = "listed",
        speed: Mapping[str, float] | None = None,
        preemption: bool = True,
        window: int = 1000,
        las_thresholds: Sequence[float] = (3600.0, 36000.0),
        las_promote: float = LAS_PROMOTE,
        max_preempt_tries: int = 8,
        die_aligned: bool = True,
        seed: int = 0,
        policy_options: Mapping[str, Mapping[str, Any]] | None = None,
        strict_partitions: bool = False,
    ) -> None:
        # policy_options: per policy name, its keyword options (e.g. {"gavel": {"objective": "finish-time"}}); the
        # options of other policies are ignored, so one mapping serves a comparison of several
        self.pol: Policy = make_policy(policy, (policy_options or {}).get(policy))  # UnknownName, ValueError
        if model_order not in MODEL_ORDERS:
            raise UnknownName(f"unknown model order {model_order!r}; choose one of {', '.join(MODEL_ORDERS)}")
        if window < 1:
            raise ValueError("window must be at least 1")
        if not las_promote >= 0 or las_promote == math.inf:
            raise ValueError(f"las_promote must be a non-negative number (0: off), not {las_promote!r}")
        self.cluster = cluster
        self.policy = policy
        self.queues = {q.name: q for q in queues}  # the setter keeps the per-queue caches right
        if isinstance(packer, str):
            packer = make_packer(packer, seed, cluster)
        self.placer = Placer(cluster, PlacementConfig(packer=packer, die_aligned=die_aligned))
        self.model_order = model_order
        sp = dict(speed) if speed is not None else _peak_speed(cluster.models)
        self._fastest = sorted(cluster.models, key=lambda m: (-sp.get(m, 0.0), m))
        top = max(sp.values(), default=0.0)
        self._default_speeds = {m: (sp.get(m, 0.0) / top if top > 0 else 1.0) for m in cluster.models}
        self._llm_speeds: dict[tuple[str, str], dict[str, float]] = {}
        self.preemption = preemption
        self.window = window
        self.las_thresholds = tuple(sorted(las_thresholds))
        self.las_promote = float(las_promote)
        self.max_preempt_tries = max_preempt_tries
        self._qc: dict[str, QueueConfig] = {}
        # partitions named by a queue or a job bind also when no node is in any partition (strict_partitions: the
        # live control plane, where an admin moves nodes into partitions at run time: such a job can never run
        # until then); without it a cluster with no partitions ignores them (the twin's path for such clusters)
        self.partitioned = bool(cluster.partitions) or strict_partitions
        self.placer.partitioned = self.partitioned
        self.group_model = cluster.group_model.tolist()
        # the lone-job shortcut of step(): policies whose pass for one job is "place it or not"
        self._simple = not (self.pol.fair_share or self.pol.service_preemption or self.pol.heterogeneity_aware
                            or self.pol.own_pass)

    @property
    def queues(self) -> dict[str, QueueConfig]:
        return self._queues

    @queues.setter
    def queues(self, value: Mapping[str, QueueConfig]) -> None:
        """Queue configurations by name (the controller replaces them when the queues table changes)."""
        self._queues = dict(value)
        self._qparts = {q.name: frozenset(q.partitions) for q in self._queues.values() if q.partitions is not None}
        self._parts_cache: dict[tuple[tuple[str, ...] | None, str], frozenset[str] | None] = {}
        self._cands: dict[object, list[int]] = {}  # model_candidates' cache (partitions come from the queues)
        self._qc: dict[str, QueueConfig] = {}  # queue_config's cache
        # shape(): the plain function when no queue names partitions (called twice per job tried: no extra frame)
        self.shape = _shape if not self._qparts else type(self).shape.__get__(self)  # type: ignore[method-assign]

    # -- state -------------------------------------------------------------------------------------------
    def pending_key(self, job: Job) -> Key:
        """Order of the pending queue (static while a job waits): the policy's."""
        return self.pol.key(self, job)

    def job_speeds(self, job: Job) -> Mapping[str, float]:
        """Relative speed of ``job`` on each accelerator model: its own (spec, trace job type), else for an LLM job
        the planner's per-chip throughput of that LLM (``suanli.perf``), else the scheduler's per-model speed."""
        if job.speeds is not None:
            return job.speeds
        if job.llm is not None:
            k = (job.llm, "serve" if job.kind == "serve" else "train")
            sp = self._llm_speeds.get(k)
            if sp is None:
                sp = self._llm_speeds[k] = _llm_speeds(self.cluster.models, *k) or self._default_speeds
            return sp
        return self._default_speeds

    def promote_at(self, job: Job) -> float:
        """When a waiting job is promoted to the top LAS queue (inf: never): after waiting ``las_promote`` times
        the time it has run since its last promotion (Tiresias: pending time >= PROMOTEKNOB x executed time)."""
        served = job.attained - job.las_base
        if self.las_queue(served) == 0 or job.devices_equiv <= 0:
            return math.inf
        since = job.queued_at if job.queued_at is not None else job.submit_time
        return since + self.las_promote * served / job.devices_equiv

    def new_state(self) -> SchedState:
        """A state for this scheduler; a packer that learns the workload (``observe``) sees each submitted job."""
        promote = self.promote_at if self.pol.service_preemption and self.las_promote > 0 else None
        key = self.pending_key
        if type(self).pending_key is Scheduler.pending_key:
            key = functools.partial(self.pol.key, self)  # the same key, one call less per submitted job
        return SchedState(self.cluster, key, promote, getattr(self.placer.config.packer, "observe", None),
                          track_model_time=self.pol.tracks_model_time)

    def las_queue(self, attained: float) -> int:
        """The LAS queue of a job with this much service: the first threshold above it (the number of thresholds
        at or below it)."""
        return bisect.bisect_right(self.las_thresholds, attained)

    def queue_config(self, name: str) -> QueueConfig:
        q = self._qc.get(name)
        if q is None:
            q = self.queues.get(name)
            if q is None:
                q = QueueConfig(name)
            self._qc[name] = q
        return q

    # -- the decision ------------------------------------------------------------------------------------
    def decide(self, state: SchedState, now: float) -> Decisions:
        """What to start and what to preempt now. ``state`` is unchanged on return."""
        if state.cluster is not self.cluster:
            raise ValueError("state belongs to another cluster")
        p = _Pass(self, state, now)
        state.alloc.begin()
        try:
            if self.pol.fair_share:
                p.run_fair()
            elif self.pol.own_pass:
                self.pol.run_pass(p)
            else:
                p.run_ordered()
        finally:
            state.alloc.rollback()
        return p.out

    def step(self, state: SchedState, now: float) -> tuple[Decisions, list[RunningJob] | None]:
        """``decide``, and when the decisions hold no preemption carry them out at once: the same decisions and the
        same resulting state as ``decide`` + ``state.apply``, without undoing the pass's trial placements and
        redoing them. Returns the decisions and the started jobs, or None when there are preemptions: then the
        state is unchanged and the caller applies them (it may need the victims' records first)."""
        if state.cluster is not self.cluster:
            raise ValueError("state belongs to another cluster")
        if len(state.pending.jobs) == 1 and self._simple:
            job = next(iter(state.pending.jobs.values()))
            r = self._start_lone(state, job, now)
            if r is not None:
                state.pending.remove(job.id)
                return Decisions([Start(job.id, r.placement, r.model)], tested=1), [r]
        return self._step_pass(state, now)

    def submit_and_step(self, state: SchedState, job: Job, now: float) -> tuple[Decisions, list[RunningJob] | None]:
        """``state.submit(job)`` then :meth:`step`, in one call: the same decisions and the same resulting state.
        When nothing else is pending and the job can start at once (the lone-job shortcut of ``step``), it never
        enters the pending queue - the simulator's common case of an arrival on a cluster with room."""
        r = self.submit_now(state, job, now)
        if r is not None:
            return Decisions([Start(job.id, r.placement, r.model)], tested=1), [r]
        return self.step(state, now)

    def submit_now(self, state: SchedState, job: Job, now: float) -> RunningJob | None:
        """``state.submit(job)``, and when nothing else is pending and ``step`` would start the job at once (the
        lone-job shortcut), start it: its running record (the decision ``step`` returns is ``Start(job.id,
        r.placement, r.model)``). None: the job is pending and nothing else changed - the caller calls ``step``."""
        if state.cluster is not self.cluster:
            raise ValueError("state belongs to another cluster")
        if state.pending.jobs or not self._simple:
            state.submit(job)
            return None
        if job.id in state.running.jobs:
            raise ValueError(f"job {job.id} is already running")  # as state.submit
        if state.on_submit is not None:
            state.on_submit(job)
        r = self._start_lone(state, job, now)
        if r is None:
            state.pending.add(job)
        return r

    def _step_pass(self, state: SchedState, now: float) -> tuple[Decisions, list[RunningJob] | None]:
        """:meth:`step` by a full pass."""
        p = _Pass(self, state, now)
        alloc = state.alloc
        alloc.begin()
        ok = False
        try:
            if self.pol.fair_share:
                p.run_fair()
            elif self.pol.own_pass:
                self.pol.run_pass(p)
            else:
                p.run_ordered()
            ok = not p.out.preemptions
        finally:
            if ok:
                alloc.commit()
            else:
                alloc.rollback()
        d = p.out
        if not ok:
            return d, None
        return d, state.adopt(d, p.started)

    def _start_lone(self, state: SchedState, job: Job, now: float) -> RunningJob | None:
        """The pass of a lone pending job under a policy without service preemption or migration, when it can
        start where the placer puts it and nothing could be preempted for it: what the full pass decides (the
        same placement, Start and running record), without its per-pass machinery; the job is running on return
        (the caller takes it off the pending queue if it was there). None (nothing changed): take the full pass."""
        if self.preemption:
            pp = state.running.preemptible_by_priority  # RunningSet.any_preemptible_below, inline
            if pp and min(pp) < job.priority:
                return None
        alloc = state.alloc
        cands = self.model_candidates(state, job)
        count = job.count
        if count and job.milli == WHOLE:
            mf = alloc._mf
            if count > (mf[cands[0]] if len(cands) == 1 else sum(mf[m] for m in cands)):
                return None
        res = self.placer.place(alloc, job, cands, self.job_partitions(job) if self.partitioned else None)
        if res is None:
            return None
        pl, g = res
        m = self.group_model[g] if g >= 0 and self.partitioned else g
        alloc.take(pl, check=False)
        r = RunningJob(job, pl, m, now, False, 1.0)
        state.running.add(r)
        return r

    @functools.cached_property
    def group_devices(self) -> list[int]:
        """Devices of each group (an accelerator model, split by partition membership): for "can never run"."""
        c = self.cluster
        return [int(c.node_devices[c.group_nodes[g]].sum()) for g in range(c.n_groups)]

    @functools.cached_property
    def n_devices(self) -> int:
        return sum(self.group_devices)

    def job_partitions(self, job: Job) -> frozenset[str] | None:
        """The partitions whose nodes ``job`` may use: its own, else its queue's; None = any node."""
        if job.partitions is None and not self._qparts:
            return None  # the common case (no partitions named anywhere): no key to build
        k = (job.partitions, job.queue)
        v = self._parts_cache.get(k, _NONE)
        if v is _NONE:
            v = self._parts_cache[k] = (frozenset(job.partitions) if job.partitions is not None
                                        else self._qparts.get(job.queue))
        return v  # type: ignore[return-value]

    def shape(self, job: Job) -> tuple[object, ...]:
        """What placement depends on: the request, and the partitions it may use (bound per queue set: without
        queue partitions the plain request shape, whose tuple already holds the job's own partitions)."""
        return (*_shape(job), self.job_partitions(job))

    def model_candidates(self, state: SchedState, job: Job) -> list[int]:
        """Candidate groups (accelerator models, split by partition; a model when there are no partitions). With a
        static model order (listed, fastest) the list is cached per (models, partitions): callers must not change
        it."""
        if self.model_order != "most-free":
            k = (job.models, self.job_partitions(job)) if self.partitioned else job.models
            v = self._cands.get(k)
            if v is None:
                order = self._fastest if self.model_order == "fastest" else None
                v = self._cands[k] = (self.placer.candidate_models(job, order, self.job_partitions(job))
                                      if self.partitioned else self.placer.candidate_models(job, order))
            return v
        mf = state.alloc.model_free
        if self.partitioned:
            free = [0] * len(self.cluster.models)
            for g, mi in enumerate(self.group_model):
                free[mi] += int(mf[g])
            order: Sequence[str] = sorted(self.cluster.models, key=lambda m: -free[self.placer.model_ids[m]])
        else:
            order = sorted(self.cluster.models, key=lambda m: -int(mf[self.placer.model_ids[m]]))
        if not self.partitioned:
            return self.placer.candidate_models(job, order)
        return self.placer.candidate_models(job, order, self.job_partitions(job))

    def group_of(self, r: RunningJob) -> int:
        """The group a running job's devices are in (-1 CPU-only)."""
        if not self.partitioned or r.model < 0:
            return r.model
        return int(self.cluster.node_group[r.placement.nodes[0]])


def _llm_speeds(models: Sequence[str], llm: str, kind: str) -> dict[str, float] | None:
    """Per-chip throughput of ``llm`` on each model from the planner, normalised (None if it knows none)."""
    from suanli.perf.api import relative_speed

    try:
        rel = relative_speed([m for m in models if is_known_accelerator(m)], llm, kind)  # type: ignore[arg-type]
    except Exception:  # an LLM the catalog does not know: no opinion
        return None
    known = {m: v for m, v in rel.items() if v is not None}
    return known or None


_NEVER: Why = (Reason.NEVER, None)
_NO_CAPACITY: Why = (Reason.CAPACITY, None)
_NONE_FREE: Why = (Reason.CAPACITY, 0)


def make_packer(name: str, seed: int = 0, cluster: Cluster | None = None) -> Packer:
    if name == "best-fit":
        return BestFitPacker()
    if name == "random":
        return RandomPacker(seed)
    if name == "fgd":
        from suanli.sched.packing import FragmentationPacker

        return FragmentationPacker()
    raise UnknownName(f"unknown packer {name!r}; choose best-fit, fgd or random")


_NONE = object()


def _shape(job: Job) -> tuple[object, ...]:
    return (job.count, job.milli, job.models, job.per_node, job.cpu_milli, job.mem_mib, job.gang, job.partitions)


@dataclass(slots=True)
class _Reservation:
    """Backfill: a blocked head job, the partitions it may use, its models, shadow time and extra devices."""

    parts: frozenset[str] | None
    job: Job
    models: set[int]
    shadow: float
    extra: int


class _Pass:
    """One scheduling pass: the working data of a single ``decide`` call."""

    def __init__(self, s: Scheduler, state: SchedState, now: float) -> None:
        self.s = s
        self.state = state
        self.alloc = state.alloc
        self.now = now
        self.out = Decisions()
        self.failed: dict[tuple[object, ...], Why] = {}  # shapes that did not fit in this pass, and why
        self.why: Why = _NO_CAPACITY  # why the last placement attempt failed (sched.reasons)
        self.gone: set[int | str] = set()  # running jobs preempted in this pass
        self.started: dict[int | str, RunningJob] = {}
        self.preempt_tries = 0
        self.preempt_failed: set[tuple[object, ...]] = set()
        self.hopeless: dict[tuple[object, ...], Why] = {}
        self._max_lasq: int | None = None
        self.usage_delta: dict[tuple[str, int], int] = {}
        self._qtotal: dict[str, int] = {}  # fair: devices (milli) each queue holds, with this pass's changes
        self._las_q: dict[int | str, int] = {}  # LAS queue of running jobs at ``now`` (fixed within a pass)
        # LAS starvation guard: pending jobs whose promotion time has come (they count as top-queue jobs)
        self.promoted: dict[int | str, Job] = {}
        if s.pol.service_preemption and s.las_promote > 0:
            pend = state.pending
            for t, _, jid in pend.due:
                if t > now:
                    break
                self.promoted[jid] = pend.jobs[jid]
        self._ctx: object = _NONE  # the policy's per-pass data, computed when first needed
        self._hetero = s.pol.heterogeneity_aware

    def las_queue_of(self, r: RunningJob) -> int:
        """LAS queue of a running job at this pass's time, computed once per pass (victim searches ask often)."""
        j = r.job
        v = self._las_q.get(j.id)
        if v is None:
            # r.served(now), inline: the same operations in the same order
            served = j.attained + j.count * j.milli / 1000.0 * r.rate * max(0.0, self.now - r.start) - j.las_base
            v = self._las_q[j.id] = bisect.bisect_right(self.s.las_thresholds, served)  # Scheduler.las_queue
        return v

    def las_queue_pending(self, job: Job) -> int:
        """LAS queue of a pending job: the top one once its promotion time has come."""
        if job.id in self.promoted:
            return 0
        return bisect.bisect_right(self.s.las_thresholds, job.attained - job.las_base)  # Scheduler.las_queue

    def order(self) -> Iterable[Job]:
        """Pending jobs in the policy's order; promoted LAS jobs take the place of a top-queue job."""
        pend = self.state.pending
        if not self.promoted:
            if len(pend.by_queue) > 1 and self.s.pol.blocking == "skip" and len(pend.jobs) <= SORT_MERGE_MAX:
                # a pass that skips a job that cannot start reads most of the queue: one C sort of every queue's
                # entries (unique, so the same order) costs less than a Python heap merge (backfill stops early
                # when nothing is free: it keeps the lazy merge)
                jobs = pend.jobs
                return [jobs[e[2]] for e in sorted(itertools.chain.from_iterable(pend.by_queue.values()))]
            return pend
        jobs = pend.jobs
        prom = self.promoted
        first = sorted(((-j.priority, 0, j.submit_time), j.seq, j.id) for j in prom.values())
        rest = (e for e in pend.entries() if e[2] not in prom)
        return (jobs[jid] for _, _, jid in heapq.merge(first, rest))

    def order_dropping_blocked(self, blocked: set[str]) -> Iterator[Job]:
        """fifo with partitions: the pending jobs in order, queue by queue merged, leaving out the rest of a queue
        as soon as one of its jobs was blocked when all its jobs name the same partitions (they are all behind
        it). A pass then costs the heads of the partitions' queues, not every waiting job of a blocked one."""
        pend = self.state.pending
        jobs, lists, qparts = pend.jobs, pend.by_queue, pend.queue_parts
        s = self.s
        heap = [(lst[0], q, 0) for q, lst in lists.items() if lst]
        heapq.heapify(heap)
        while heap:
            e, q, i = heapq.heappop(heap)
            job = jobs[e[2]]
            yield job
            if qparts.get(q) is not MIXED and blocked:
                parts = s.job_partitions(job)
                if parts is None or not blocked.isdisjoint(parts):
                    continue  # this queue's remaining jobs are blocked too
            lst = lists[q]
            if i + 1 < len(lst):
                heapq.heappush(heap, (lst[i + 1], q, i + 1))

    # -- basic moves ----------------------------------------------------------------------------------------
    def try_place(self, job: Job, sh: tuple[object, ...] | None = None) -> tuple[Placement, int] | None:
        if sh is None:
            sh = self.s.shape(job)
        why = self.failed.get(sh)
        if why is not None:
            self.why = why
            return None
        if job.count and job.milli == WHOLE:
            cands = self.s.model_candidates(self.state, job)
            mf = self.alloc._mf
            free = sum(mf[m] for m in cands)
            if job.count > free:
                self.why = self.failed[sh] = self._short(job, cands, free)
                return None
        else:
            cands = self.s.model_candidates(self.state, job)
        if self._hetero:
            if self._ctx is _NONE:
                self._ctx = self.s.pol.pass_context(self.s, self.state)
            cands = self.s.pol.model_order(self.s, job, cands, self._ctx)
        res = self.s.placer.place(self.alloc, job, cands, self.s.job_partitions(job) if self.s.partitioned else None)
        if res is None:
            self.why = self.failed[sh] = self._misfit(job, cands)
        return res

    def _short(self, job: Job, cands: Sequence[int], free: int) -> Why:
        """Not enough free devices: for now (capacity), or ever (no such devices in the cluster or partitions)."""
        if not cands:
            return self._never(job)
        have = sum(self.s.group_devices[m] for m in cands)
        if job.count > have:
            return (Reason.NEVER, f"the cluster has {have}")
        return (Reason.CAPACITY, free)

    def _never(self, job: Job) -> Why:
        """Why a job limited to partitions has no candidate: no node is in them, or none of theirs has its model."""
        parts = self.s.job_partitions(job) if self.s.partitioned else None
        if parts is None:
            return _NEVER
        names = ", ".join(sorted(parts))
        if not any(p in self.s.cluster.partition_nodes for p in parts):
            return (Reason.NEVER, f"no node is in partition {names}")
        return (Reason.NEVER, f"in partition {names}")

    def _misfit(self, job: Job, cands: Sequence[int]) -> Why:
        """The placer found no room: enough free devices but not where the job's shape needs them, or too few."""
        if job.count and not cands:
            return self._never(job)
        if not job.count and self.s.partitioned:  # CPU only: limited to partitions that have no node at all
            parts = self.s.job_partitions(job)
            if parts is not None and not any(p in self.s.cluster.partition_nodes for p in parts):
                return self._never(job)
        mf = self.alloc._mf
        free = sum(mf[m] for m in cands)
        if job.count and job.milli == WHOLE and job.count > free:
            return self._short(job, cands, free)
        return (Reason.TOPOLOGY, free if job.count else None)

    def commit_start(self, job: Job, res: tuple[Placement, int], borrowed: bool = False) -> None:
        pl, g = res
        m = self.s.group_model[g] if g >= 0 and self.s.partitioned else g  # the placer answers a group
        self.alloc.take(pl, check=False)  # the placer found it on this very allocation
        rate = self.s.pol.service_rate(self.s, job, m) if self._hetero else 1.0
        self.out.starts.append(Start(job.id, pl, m, borrowed, job.id in self.promoted, rate))
        self.started[job.id] = RunningJob(job, pl, m, self.now, borrowed, rate)
        key = (job.queue, m)
        milli = pl.milli * pl.n_devices
        self.usage_delta[key] = self.usage_delta.get(key, 0) + milli
        if self._qtotal and job.queue in self._qtotal:
            self._qtotal[job.queue] += milli

    def add_usage(self, queue: str, m: int, milli: int) -> None:
        key = (queue, m)
        self.usage_delta[key] = self.usage_delta.get(key, 0) + milli
        if queue in self._qtotal:
            self._qtotal[queue] += milli

    # -- preemption ----------------------------------------------------------------------------------------
    # -- preemption (suanli.sched.preempt) ---------------------------------------------------------------------
    def try_preempt(self, job: Job, is_victim: Callable[[RunningJob], bool], reason: str,
                    models: Sequence[int] | None = None) -> tuple[Placement, int] | None:
        return preempt_for(self, job, is_victim, reason, models)

    def priority_victim(self, job: Job) -> Callable[[RunningJob], bool]:
        return priority_victim(job)

    def place_or_preempt(self, job: Job) -> bool:
        # a job like one that could neither be placed nor make room in this pass cannot either (same shape,
        # priority, queue and LAS queue), until a preemption changes the running set
        las = self.s.pol.service_preemption
        q = self.las_queue_pending(job) if las else 0
        sh = self.s.shape(job)
        key = (sh, job.priority, job.queue, q)
        why = self.hopeless.get(key)
        if why is not None:
            self.why = why
            return False
        res = self.try_place(job, sh)
        running = self.state.running
        if res is None and self.s.preemption and running.any_preemptible_below(job.priority):
            res = self.try_preempt(job, self.priority_victim(job), "priority")
        if (res is None and las and self.s.preemption and running.preemptible_by_priority
                and self.max_running_las_queue() > q):
            lq = self.las_queue_of
            res = self.try_preempt(
                job, lambda r: r.job.preemptible and r.job.priority <= job.priority and lq(r) > q, "las"
            )
        if res is None:
            self.hopeless[key] = self.why
            return False
        self.commit_start(job, res)
        return True

    def max_running_las_queue(self) -> int:
        """The highest LAS queue of a running preemptible job (computed once per pass)."""
        if self._max_lasq is None:
            lq = self.las_queue_of
            top = len(self.s.las_thresholds)
            best = -1
            for r in self.state.running.jobs.values():
                if r.job.preemptible:
                    v = lq(r)
                    if v > best:
                        best = v
                        if best >= top:
                            break  # no queue is higher: the rest cannot change the answer
            self._max_lasq = best
        return self._max_lasq

    # -- ordered policies ----------------------------------------------------------------------------------
    def run_ordered(self) -> None:
        """fifo, backfill, sjf, las. Blocking holds per partition: under fifo a job that cannot start blocks the
        later jobs that could use its partitions, and only those (a job limited to other partitions still starts, as
        Slurm does per partition); under backfill each blocked partition set gets its own reservation and a later
        job must respect the reservations of the partitions it could use. Without partitions both are the classic
        rules (the first blocked job stops fifo's pass; one reservation)."""
        s = self.s
        blocking = s.pol.blocking
        parted = s.partitioned
        blocked: set[str] = set()  # fifo: partitions whose first job is blocked
        n_parts = len(s.cluster.partitions)
        resv: list[_Reservation] = []
        free_whole = 0
        splits: dict[tuple[object, ...], tuple[list[int], list[int]]] = {}
        tested = 0
        skipped = 0  # jobs looked at that did not start: bounded by the window
        waiting = self.out.waiting  # why each job that did not start waits (sched.reasons)
        heads: dict[str, int | str] = {}  # fifo with partitions: the blocked job of each blocked partition
        behind: dict[frozenset[str] | None, Why] = {}
        it = self.order()
        if blocking == "block" and parted and len(self.state.pending.by_queue) > 1:
            it = self.order_dropping_blocked(blocked)
        for job in it:
            if skipped >= s.window:
                break
            tested += 1
            parts = s.job_partitions(job) if parted else None
            if blocked and (parts is None or not blocked.isdisjoint(parts)):
                why = behind.get(parts)
                if why is None:  # once per partition set in a pass: the blocked job it waits behind
                    head = next((heads[p] for p in parts or blocked if p in heads), None)
                    why = behind[parts] = (Reason.BEHIND, head)
                waiting[job.id] = why
                continue  # fifo: behind a blocked job of its partition (cheap: not counted against the window)
            if not resv or parts is None:
                rel = resv
            else:
                rel = [r for r in resv if r.parts is None or not r.parts.isdisjoint(parts)]
            if not rel:
                if self.place_or_preempt(job):
                    if resv:
                        free_whole = int(self.alloc.model_free.sum())
                    continue
                skipped += 1
                waiting[job.id] = self.why
                if self.why[0] is Reason.NEVER:
                    continue  # it could not run even on an empty cluster: it blocks no one and reserves nothing
                if blocking == "block":
                    if parts is None:
                        self.out.rest = (Reason.BEHIND, job.id)
                        break
                    for p_ in parts - blocked:
                        heads[p_] = job.id
                    blocked |= parts
                    behind.clear()
                    if len(blocked) >= n_parts:
                        self.out.rest = (Reason.BEHIND, job.id)
                        break
                elif blocking == "reserve":
                    models, shadow, extra = self.reservation(job)
                    resv.append(_Reservation(parts, job, models, shadow, extra))
                    if self.out.reservation is None:
                        self.out.reservation = (job.id, shadow)
                    free_whole = int(self.alloc.model_free.sum())
                continue
            # backfill candidates (a head it could delay is blocked): a job that ends before the shadow time may go
            # anywhere; one that outlasts it may use models the head cannot use, or the head's within `extra` devices
            if job.count > free_whole and job.milli == WHOLE:
                if not free_whole and not self.state.pending.n_partial:
                    self.out.rest = _NONE_FREE
                    break  # no free device anywhere and every pending job needs whole ones
                skipped += 1  # cheap refusal: not enough free devices of any model
                waiting[job.id] = self._refused(job, free_whole)
                continue
            end = self.now + job.expected_runtime if job.expected_runtime is not None else math.inf
            if len(rel) == 1:
                r0 = rel[0]
                if end <= r0.shadow:
                    res = self.try_place(job)
                else:
                    key = (job.models, parts, id(r0))
                    split = splits.get(key)
                    if split is None:
                        cands = s.model_candidates(self.state, job)
                        split = splits[key] = ([m for m in cands if m not in r0.models],
                                               [m for m in cands if m in r0.models])
                    res = self.try_place_in(job, split[0])
                    if res is None and job.count <= r0.extra:
                        res = self.try_place_in(job, split[1])
                        if res is not None:
                            r0.extra -= res[0].n_devices
                    if res is None and self._fits_free(job, split[1]):
                        self.why = (Reason.RESERVED, (r0.job.id, r0.shadow))  # room on the head's devices
            else:  # several reservations it could delay: respect each (no use of their extra devices)
                late = [r for r in rel if end > r.shadow]
                if not late:
                    res = self.try_place(job)
                else:
                    cands = [m for m in s.model_candidates(self.state, job) if not any(m in r.models for r in late)]
                    res = self.try_place_in(job, cands)
                    if res is None and self._fits_free(job, s.model_candidates(self.state, job)):
                        self.why = (Reason.RESERVED, (late[0].job.id, late[0].shadow))
            if res is None:
                skipped += 1
                waiting[job.id] = self.why
                continue
            self.commit_start(job, res)
            free_whole = int(self.alloc.model_free.sum())
        self.out.tested = tested
        if s.pol.migrate and s.preemption:
            self.migrate()

    def migrate(self) -> None:
        """Heterogeneity-aware policies: after the pending jobs had their turn, a running job moves to a free model
        on which it runs at least ``MIGRATE_GAIN`` times as fast (preempted and restarted there in this pass; its
        work is kept, as for any preemption). Fastest gains first, a few per pass."""
        s = self.s
        names = s.cluster.models
        moves = []
        for r in self.state.running.jobs.values():
            if r.model < 0 or not r.job.preemptible or r.job.id in self.gone:
                continue
            sp = s.job_speeds(r.job)
            here = sp.get(names[r.model], 0.0)
            best = max(sp.values(), default=0.0)
            if here > 0 and best >= MIGRATE_GAIN * here:
                moves.append((best / here, r))
        moves.sort(key=lambda t: (-t[0], t[1].job.seq))
        done = 0
        for _gain, r in moves:
            if done >= MIGRATE_PER_PASS:
                break
            sp = s.job_speeds(r.job)
            here = sp.get(names[r.model], 0.0)
            faster = [g for g in s.model_candidates(self.state, r.job)
                      if sp.get(names[s.group_model[g]], 0.0) >= MIGRATE_GAIN * here]
            faster.sort(key=lambda g: -sp.get(names[s.group_model[g]], 0.0))
            if not faster:
                continue
            mf = self.alloc._mf
            if r.job.milli == WHOLE and r.job.count > sum(mf[g] for g in faster):
                continue
            res = s.placer.place(self.alloc, r.job, faster)
            if res is None:
                continue
            self.gone.add(r.job.id)
            self.out.preemptions.append(Preempt(r.job.id, r.job.id, "migrate"))
            self.add_usage(r.job.queue, r.model, -r.placement.milli * r.placement.n_devices)
            self.alloc.give(r.placement)
            self.commit_start(r.job, res)
            done += 1

    def try_place_in(self, job: Job, models: list[int]) -> tuple[Placement, int] | None:
        """Like :meth:`try_place`, restricted to ``models`` (in that order)."""
        if job.count and not models:
            self.why = _NO_CAPACITY
            return None
        base = self.s.shape(job)
        sh = (*base, tuple(models))
        why = self.failed.get(sh) or self.failed.get(base)
        if why is not None:
            self.why = why
            return None
        if job.count and job.milli == WHOLE:
            free = sum(int(self.alloc.model_free[m]) for m in models)
            if job.count > free:
                self.why = self.failed[sh] = (Reason.CAPACITY, free)
                return None
        res = self.s.placer.place(self.alloc, job, models)
        if res is None:
            self.why = self.failed[sh] = self._misfit(job, models)
        return res

    def _fits_free(self, job: Job, models: Sequence[int]) -> bool:
        """Enough free devices of ``models`` for ``job`` (a backfill candidate kept off the head's devices)."""
        mf = self.alloc._mf
        return job.count <= sum(mf[m] for m in models)

    def _refused(self, job: Job, free_whole: int) -> Why:
        """A job turned away because it needs more whole devices than are free anywhere."""
        if job.count > self.s.n_devices:
            return (Reason.NEVER, f"the cluster has {self.s.n_devices}")
        return (Reason.CAPACITY, free_whole)

    def reservation(self, head: Job) -> tuple[set[int], float, int]:
        """Models the head may use, its shadow time and the extra devices it leaves at that time."""
        models = set(self.s.model_candidates(self.state, head))
        if head.count == 0 or head.milli < WHOLE:
            return models, math.inf, 0
        avail = sum(int(self.alloc.model_free[m]) for m in models)
        running = self.state.running.jobs
        for end, _, jid in self.state.running.ends:
            if jid in self.gone:
                continue
            r = running[jid]
            if self.s.group_of(r) in models and r.placement.milli == WHOLE:
                avail += r.placement.n_devices
                if avail >= head.count:
                    return models, end, avail - head.count
        return models, math.inf, 0

    # -- fair share ----------------------------------------------------------------------------------------
    def usage(self, queue: str, m: int) -> int:
        u = self.state.running.usage.get(queue)
        base = int(u[m]) if u is not None else 0
        return base + self.usage_delta.get((queue, m), 0)

    def queue_total(self, queue: str) -> int:
        """Milli-devices ``queue`` holds, with this pass's starts and preemptions (summed once per pass)."""
        v = self._qtotal.get(queue)
        if v is None:
            u = self.state.running.usage.get(queue)
            base = int(u.sum()) if u is not None else 0
            v = self._qtotal[queue] = base + sum(d for (q, _), d in self.usage_delta.items() if q == queue)
        return v

    def run_fair(self) -> None:
        s = self.s
        pend = self.state.pending
        running = self.state.running
        alloc = self.alloc
        iters = {q: pend.queue_iter(q) for q in pend.by_queue}
        weight = {q: max(s.queue_config(q).weight, 1e-9) for q in iters}
        # a queue may reclaim lent devices only within a quota; no quota anywhere: only priority preemption
        reclaim = {q: bool(s.queue_config(q).quota) for q in iters}
        any_reclaim = any(reclaim.values())
        heap: list[tuple[float, str]] = []
        for q in iters:
            heapq.heappush(heap, (self.queue_total(q) / weight[q], q))
        tested = skipped = 0
        free_whole = int(alloc.model_free.sum())
        below_cache: dict[int, bool] = {}

        def below(prio: int) -> bool:
            v = below_cache.get(prio)
            if v is None:
                v = below_cache[prio] = running.any_preemptible_below(prio)
            return v

        waiting = self.out.waiting
        while heap and skipped < s.window:
            if not free_whole and not pend.n_partial and (not s.preemption or not self._fair_may_preempt(any_reclaim)):
                self.out.rest = _NONE_FREE
                break  # no free device, every pending job needs whole ones, and none may preempt anything
            _, q = heapq.heappop(heap)
            job = next(iters[q], None)
            if job is None:
                continue
            tested += 1
            if job.milli == WHOLE and job.count > free_whole and (not s.preemption or not (
                    (reclaim[q] and running.n_borrowed) or below(job.priority))):
                skipped += 1  # cheap refusal: not enough free devices and no victim it may take
                waiting[job.id] = self._refused(job, free_whole)
            elif self.fair_one(job):
                free_whole = int(alloc.model_free.sum())
            else:
                skipped += 1
                waiting[job.id] = self.why
            heapq.heappush(heap, (self.queue_total(q) / weight[q], q))
        self.out.tested = tested

    def _fair_may_preempt(self, any_reclaim: bool) -> bool:
        """Could any pending job preempt something: a borrowed job runs (and some queue has a quota to reclaim
        it for), or a preemptible one of lower priority than the most urgent pending job."""
        running = self.state.running
        if running.n_borrowed and any_reclaim:
            return True
        top = max((-lst[0][0][0] for lst in self.state.pending.by_queue.values()), default=None)
        return top is not None and running.any_preemptible_below(top)

    def fair_one(self, job: Job) -> bool:
        # a job like one that could not start in this pass (same shape, priority, queue) cannot either: its queue's
        # usage only grows and capacity only shrinks until a preemption (which clears the cache)
        key = (self.s.shape(job), job.priority, job.queue)
        why = self.hopeless.get(key)
        if why is not None:
            self.why = why
            return False
        s = self.s
        qc = s.queue_config(job.queue)
        names = s.cluster.models
        need = job.count * job.milli
        gm = s.group_model
        cands = s.model_candidates(self.state, job)
        capped = -1  # the first model at its queue's quota (no borrowing), while no other model was tried
        tried = False
        for m in cands:  # m: a group (the model itself without partitions)
            mi = gm[m]
            quota = qc.quota_for(names[mi])
            within = quota is not None and self.usage(job.queue, mi) + need <= quota * WHOLE
            if not within and not qc.borrow:
                if capped < 0:
                    capped = mi
                continue
            tried = True  # a model it may use: its placement failure says why
            res = self.try_place_in(job, [m])
            if res is None and within and s.preemption and self.state.running.n_borrowed:
                res = self.try_preempt(
                    job, lambda r: r.borrowed and r.job.queue != job.queue and r.job.preemptible, "reclaim", [m]
                )
            if res is None and s.preemption and self.state.running.any_preemptible_below(job.priority):
                res = self.try_preempt(job, self.priority_victim(job), "priority", [m])
            if res is not None:
                self.commit_start(job, res, borrowed=not within)
                return True
        if job.count == 0:
            res = self.try_place(job)
            if res is not None:
                self.commit_start(job, res)
                return True
        if not tried and job.count:
            if capped >= 0:
                self.why = (Reason.QUOTA, (capped, self.usage(job.queue, capped) / WHOLE,
                                           qc.quota_for(names[capped]) or 0))
            else:
                self.why = _NEVER if not cands else _NO_CAPACITY
        self.hopeless[key] = self.why
        return False
