"""The scheduler's input: free capacity, the pending queue and the running set.

The simulator and the controller each own one :class:`SchedState` and change it only through its methods
(:meth:`submit`, :meth:`apply`, :meth:`stop`...), so the indexes stay right. ``Scheduler.decide`` reads it and
leaves it exactly as it was.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from suanli.fleet.model import Cluster
from suanli.sched.alloc import Allocation, Placement
from suanli.sched.reasons import Why
from suanli.workload.spec import Job

Key = tuple[Any, ...]
MIXED = object()  # PendingQueue.queue_parts: a queue whose jobs name different partitions


@dataclass(slots=True)
class RunningJob:
    job: Job
    placement: Placement
    model: int  # model index in the cluster, -1 for CPU-only
    start: float
    borrowed: bool = False  # started on capacity lent from other queues' idle quota (reclaimable)
    rate: float = 1.0  # service accrued per device-second (heterogeneity-aware policies: speed here / best speed)

    @property
    def expected_end(self) -> float:
        rt = self.job.expected_runtime
        return self.start + rt if rt is not None else float("inf")

    def attained(self, now: float) -> float:
        """Device-seconds of service including the current run (for LAS)."""
        return self.job.attained + self.job.devices_equiv * self.rate * max(0.0, now - self.start)

    def served(self, now: float) -> float:
        """Service since the job's last LAS promotion: what its LAS queue is computed from."""
        return self.attained(now) - self.job.las_base


class PendingQueue:
    """Pending jobs per queue, each kept sorted by the policy's key (insertion O(log n) search + memmove).

    With ``promote_at`` (LAS's starvation guard), ``due`` lists the jobs that will be promoted, sorted by when:
    ``(time, seq, id)``, a job's time fixed while it waits."""

    def __init__(self, key: Callable[[Job], Key], promote_at: Callable[[Job], float] | None = None) -> None:
        self.key = key
        self.promote_at = promote_at
        self.jobs: dict[int | str, Job] = {}
        self._keys: dict[int | str, tuple[Key, int, int | str]] = {}  # each pending job's (key, seq, id)
        self.by_queue: dict[str, list[tuple[Key, int, int | str]]] = {}
        # per queue: the partitions every one of its jobs names (None: none names any), or MIXED
        self.queue_parts: dict[str, object] = {}
        self.n_partial = 0  # pending jobs that need less than a whole device (shares, CPU-only)
        self.due: list[tuple[float, int, int | str]] = []
        self._due: dict[int | str, float] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.jobs

    def add(self, job: Job) -> None:
        jid = job.id
        if jid in self.jobs:
            raise ValueError(f"job {jid} is already pending")
        e = (self.key(job), job.seq, jid)
        self.jobs[jid] = job
        self._keys[jid] = e  # the queue entry: remove() finds it again
        q = job.queue
        lst = self.by_queue.get(q)
        if lst is None:
            self.by_queue[q] = [e]
            self.queue_parts[q] = job.partitions
        else:
            qp = self.queue_parts
            if qp[q] is not MIXED and qp[q] != job.partitions:
                qp[q] = MIXED
            bisect.insort(lst, e)
        if job.count == 0 or job.milli < 1000:
            self.n_partial += 1
        if self.promote_at is not None:
            t = self.promote_at(job)
            if t < math.inf:
                self._due[jid] = t
                bisect.insort(self.due, (t, job.seq, jid))

    def remove(self, job_id: int | str) -> Job:
        job = self.jobs.pop(job_id)
        e = self._keys.pop(job_id)
        lst = self.by_queue[job.queue]
        if len(lst) == 1:
            del self.by_queue[job.queue]
            del self.queue_parts[job.queue]
        else:
            del lst[bisect.bisect_left(lst, e)]
        if job.count == 0 or job.milli < 1000:
            self.n_partial -= 1
        if self._due:
            t = self._due.pop(job_id, None)
            if t is not None:
                del self.due[bisect.bisect_left(self.due, (t, job.seq, job_id))]
        return job

    def entries(self) -> Iterator[tuple[Key, int, int | str]]:
        """``(key, seq, id)`` of all pending jobs in key order across queues."""
        if len(self.by_queue) == 1:
            return iter(next(iter(self.by_queue.values())))
        import heapq

        return heapq.merge(*self.by_queue.values())

    def next_due(self, now: float) -> float:
        """The earliest promotion time after ``now`` (inf: none)."""
        i = bisect.bisect_right(self.due, (now, math.inf))
        return self.due[i][0] if i < len(self.due) else math.inf

    def queue_iter(self, queue: str) -> Iterator[Job]:
        for _, _, jid in self.by_queue.get(queue, ()):
            yield self.jobs[jid]

    def __iter__(self) -> Iterator[Job]:
        """All pending jobs in key order across queues."""
        import heapq

        if len(self.by_queue) == 1:
            for _, _, jid in next(iter(self.by_queue.values())):
                yield self.jobs[jid]
            return
        for _, _, jid in heapq.merge(*self.by_queue.values()):
            yield self.jobs[jid]


class RunningSet:
    """Running jobs with what the policies need: usage per queue and model, jobs per node, expected ends."""

    def __init__(self, n_nodes: int, n_models: int) -> None:
        self.jobs: dict[int | str, RunningJob] = {}
        self.n_models = n_models
        self.usage: dict[str, np.ndarray] = {}  # queue -> milli-devices per model (last slot: CPU-only)
        self.borrowed_usage: dict[str, np.ndarray] = {}
        self._buf: dict[str, array] = {}  # the array.array buffers behind usage / borrowed_usage
        self._buf_b: dict[str, array] = {}
        self.node_jobs: list[dict[int | str, None]] = [{} for _ in range(n_nodes)]
        # (expected end, seq, id) of the jobs with a known end, sorted: built when first read (backfill's shadow
        # time), then kept up to date; a run that never reads it (fifo, las...) never pays for it
        self._ends: list[tuple[float, int, int | str]] | None = None
        self.preemptible_by_priority: dict[int, int] = {}  # priority -> running preemptible jobs
        self.n_borrowed = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.jobs

    @property
    def ends(self) -> list[tuple[float, int, int | str]]:
        """``(expected end, seq, id)`` of the running jobs with a known end, in order (RunningJob.expected_end)."""
        e = self._ends
        if e is None:
            e = self._ends = sorted((r.start + rt, r.job.seq, jid) for jid, r in self.jobs.items()
                                    if (rt := r.job.expected_runtime) is not None)
        return e

    def _use(self, q: str, borrowed: bool) -> array:
        """The usage counters of queue ``q`` as an array.array (cheap element updates); ``usage[q]`` / ``borrowed_
        usage[q]`` is a numpy view of the same buffer."""
        d = self._buf_b if borrowed else self._buf
        u = d.get(q)
        if u is None:
            u = d[q] = array("q", bytes(8 * (self.n_models + 1)))
            (self.borrowed_usage if borrowed else self.usage)[q] = np.frombuffer(u, dtype=np.int64)
        return u

    def add(self, r: RunningJob) -> None:
        j = r.job
        if j.id in self.jobs:
            raise ValueError(f"job {j.id} is already running")
        jid = j.id
        self.jobs[jid] = r
        pl = r.placement
        milli = pl.milli * pl.n_devices
        u = self._buf.get(j.queue)
        if u is None:
            u = self._use(j.queue, False)
        u[r.model] += milli
        if r.borrowed:
            self._use(j.queue, True)[r.model] += milli
            self.n_borrowed += 1
        nj = self.node_jobs
        for n in pl.nodes:
            nj[n][jid] = None
        rt = j.expected_runtime
        if rt is not None and self._ends is not None:
            bisect.insort(self._ends, (r.start + rt, j.seq, jid))  # RunningJob.expected_end
        if j.preemptible:
            pp = self.preemptible_by_priority
            pp[j.priority] = pp.get(j.priority, 0) + 1

    def remove(self, job_id: int | str) -> RunningJob:
        r = self.jobs.pop(job_id)
        j = r.job
        jid = j.id
        pl = r.placement
        milli = pl.milli * pl.n_devices
        self._buf[j.queue][r.model] -= milli
        if r.borrowed:
            self._buf_b[j.queue][r.model] -= milli
            self.n_borrowed -= 1
        nj = self.node_jobs
        for n in pl.nodes:
            del nj[n][jid]
        rt = j.expected_runtime
        ends = self._ends
        if rt is not None and ends is not None:
            del ends[bisect.bisect_left(ends, (r.start + rt, j.seq, jid))]
        if j.preemptible:
            pp = self.preemptible_by_priority
            left = pp[j.priority] - 1
            if left:
                pp[j.priority] = left
            else:
                del pp[j.priority]
        return r

    def any_preemptible_below(self, priority: int) -> bool:
        """Is some running preemptible job of priority lower than ``priority``? O(distinct priorities)."""
        pp = self.preemptible_by_priority
        return bool(pp) and min(pp) < priority


@dataclass(slots=True, unsafe_hash=True)
class Start:
    """A decision to start a job (treat as immutable; not a frozen dataclass: those cost several times as much to
    build, and the simulator builds one per start)."""

    job_id: int | str
    placement: Placement
    model: int  # model index, -1 CPU-only
    borrowed: bool = False
    promoted: bool = False  # LAS starvation guard: the job starts back in the top queue (its service recounted)
    rate: float = 1.0  # service it accrues per device-second (RunningJob.rate)


@dataclass(frozen=True, slots=True)
class Preempt:
    job_id: int | str
    for_job: int | str
    reason: str  # "priority", "las", "reclaim"


@dataclass(slots=True)
class Decisions:
    starts: list[Start] = field(default_factory=list)
    preemptions: list[Preempt] = field(default_factory=list)
    reservation: tuple[int | str, float] | None = None  # backfill: (head job, shadow time)
    tested: int = 0  # pending jobs looked at
    waiting: dict[int | str, Why] = field(default_factory=dict)  # examined, not started: why (sched.reasons)
    rest: Why | None = None  # why the pending jobs the pass did not reach wait (None: the window)

    def __bool__(self) -> bool:
        return bool(self.starts or self.preemptions)


class SchedState:
    """Everything ``decide`` reads. Mutate it only through these methods."""

    def __init__(self, cluster: Cluster, pending_key: Callable[[Job], Key],
                 promote_at: Callable[[Job], float] | None = None,
                 on_submit: Callable[[Job], None] | None = None, track_model_time: bool = False) -> None:
        self.cluster = cluster
        self.alloc = Allocation(cluster)
        self.pending = PendingQueue(pending_key, promote_at)
        self.running = RunningSet(cluster.n_nodes, len(cluster.models))
        # what the scheduler learns from the workload (the FGD packer's task distribution) it learns here, when a
        # job is submitted - never inside ``decide``, which stays a pure function of the state
        self.on_submit = on_submit
        self.track_model_time = track_model_time  # keep Job.model_s (run seconds per model; gavel's priorities)

    def submit(self, job: Job) -> None:
        if job.id in self.running.jobs:
            raise ValueError(f"job {job.id} is already running")
        self.pending.add(job)
        if self.on_submit is not None:
            self.on_submit(job)

    def cancel_pending(self, job_id: int | str) -> Job:
        return self.pending.remove(job_id)

    def start(self, s: Start, now: float) -> RunningJob:
        job = self.pending.jobs[s.job_id]
        self.alloc.take(s.placement)  # raises, changing nothing, if it does not fit
        self.pending.remove(s.job_id)
        if s.promoted:
            job.las_base = job.attained  # LAS promotion: its queue counts service from here
        r = RunningJob(job, s.placement, s.model, now, s.borrowed, s.rate)
        self.running.add(r)
        return r

    def stop(self, job_id: int | str, now: float) -> RunningJob:
        """Take a running job off its devices (finished, failed, cancelled or preempted); counts its service."""
        r = self.running.remove(job_id)
        self.alloc.give(r.placement)
        j = r.job
        # r.attained(now), inline (the same operations in the same order)
        j.attained = j.attained + j.count * j.milli / 1000.0 * r.rate * max(0.0, now - r.start)
        j.queued_at = now  # if it goes back to the queue, it waits from now
        if self.track_model_time and r.model >= 0:
            ms = r.job.model_s
            if ms is None:
                ms = r.job.model_s = {}
            ms[r.model] = ms.get(r.model, 0.0) + max(0.0, now - r.start)
        return r

    def adopt(self, d: Decisions, started: dict[int | str, RunningJob]) -> list[RunningJob]:
        """The starts of ``d`` whose placements the allocation already holds (``Scheduler.step``): move the jobs
        from pending to running without touching the allocation again."""
        out = []
        for s in d.starts:
            r = started[s.job_id]
            self.pending.remove(s.job_id)
            if s.promoted:
                r.job.las_base = r.job.attained  # as start() does
            self.running.add(r)
            out.append(r)
        return out

    def apply(self, d: Decisions, now: float) -> list[RunningJob]:
        """Carry out ``d``: preempted jobs go back to the pending queue, then the starts happen."""
        for p in d.preemptions:
            r = self.stop(p.job_id, now)
            self.pending.add(r.job)
        return [self.start(s, now) for s in d.starts]
