"""The controller: a reconcile loop that observes (store + executor), decides (``sched``), acts (start / stop
attempts through the executor) and records (the store). It is the only writer of job state; every change goes
through the workload state machine (:func:`suanli.workload.states.check_transition`) and is one transaction with its
event. It talks to processes only through the :class:`~suanli.control.executors.base.Executor` interface and to the
database only through :class:`~suanli.control.store.Store` methods.

Crash safety: an attempt is recorded (job RUNNING, attempt row) *before* its processes are spawned, what the
executor needs to find them again after. On start-up the controller asks the executor to re-adopt attempts whose
processes are still alive (or ended while it was down, with their exit codes), and requeues the ones that never got
spawned or only partly. Nothing is started twice: an attempt row exists for every spawn.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from suanli.control import usage
from suanli.control.executors.base import (
    AdoptVerdict,
    AttemptRecord,
    AttemptSpec,
    Executor,
    Handle,
    NodeInfo,
    NodeUnavailable,
)
from suanli.control.store import Step, Store, job_from_row
from suanli.control.types import INFRA_REASONS, AttemptOutcome, NodeStatus, StopReason
from suanli.fleet.model import Cluster, NodeSpec, build_cluster
from suanli.sched import Allocation, Placement, QueueConfig, RunningJob, Scheduler, Start
from suanli.sched.reasons import Reason, Why, describe
from suanli.sched.reasons import counts as reason_counts
from suanli.workload.spec import Job
from suanli.workload.states import JobState

log = logging.getLogger("suanli.controller")

S = JobState
_MISS = object()
START_CHUNK = 64  # starts recorded and spawned together (see _schedule)
_STOP_FOR = {"preempting": StopReason.PREEMPT, "stopping": StopReason.SHUTDOWN}


@dataclass
class Stats:
    ticks: int = 0
    decide_s_last: float = 0.0
    decides: int = 0
    started: int = 0
    finished: int = 0


def placement_to_json(c: Cluster, p: Placement, model: int) -> dict[str, Any]:
    return {
        "nodes": [c.nodes[n].name for n in p.nodes],
        "local": [[c.device(d).local_index for d in ds] for ds in p.devices],
        "milli": p.milli, "cpu_milli": list(p.cpu_milli), "mem_mib": list(p.mem_mib),
        "model": c.models[model] if model >= 0 else "",
    }


def placement_from_json(c: Cluster, d: dict[str, Any]) -> tuple[Placement, int]:
    """Raises (KeyError/ValueError/IndexError) when it does not match the cluster any more."""
    ns = tuple(c.node_index(n) for n in d["nodes"])
    devs = []
    for n, loc in zip(ns, d["local"], strict=True):
        start, cnt = int(c.node_dev_start[n]), int(c.node_devices[n])
        if any(not 0 <= i < cnt for i in loc):
            raise IndexError("device index out of range")
        devs.append(tuple(start + i for i in loc))
    model = c.models.index(d["model"]) if d["model"] else -1
    return Placement(ns, tuple(devs), int(d["milli"]), tuple(d["cpu_milli"]), tuple(d["mem_mib"])), model


def _glibc() -> Any:
    """glibc, loaded once with the signatures used here (None where this is not glibc)."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def _malloc_trim() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_libc: Any = None

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(n: int = 2) -> bool:
    """At most ``n`` glibc malloc arenas for the process (as ``MALLOC_ARENA_MAX``, unless that is set): every
    thread that allocates (the API's worker threads, the controller, SQLite's callers) otherwise gets an arena of
    its own, and memory freed in one is not reused by the others. Call before the threads start. True if applied."""
    import os

    libc = _glibc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(n)))


class Controller:
    def __init__(self, store: Store, executor: Executor, *, policy: str = "fifo", tick_s: float = 0.1,
                 retry_base_s: float = 2.0, retry_cap_s: float = 300.0, keep_jobs_on_stop: bool = False,
                 metrics: Any = None, nodes_every_s: float = 1.0, services: Any = None,
                 act_budget_s: float = 0.1, freeze_gc: bool = False, trim_every_s: float = 0.0) -> None:
        self.store = store
        self.ex = executor
        self.policy = policy
        self.tick_s = tick_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.keep_jobs_on_stop = keep_jobs_on_stop
        self.metrics = metrics
        self.nodes_every_s = nodes_every_s
        self.act_budget_s = act_budget_s  # a pass stops starting more chunks of jobs after this long (the rest wait)
        # gc.freeze() once recovered: the cluster, the allocation and the API's objects are no longer scanned by
        # every full collection (pauses that hold the GIL); for the long-running server, not for tests
        self.freeze_gc = freeze_gc
        # glibc keeps the memory freed after a burst (per-thread arenas): hand it back every trim_every_s (0: never)
        self.trim_every_s = trim_every_s
        self._trim_at = time.monotonic()
        self.services = services  # the service manager (control/services.py): started and stopped with the loop
        self.node_addresses: dict[str, str] = {}  # node name -> address its processes listen on (the executor's)
        self.handles: dict[int, Handle] = {}
        self._unrecorded: set[int] = set()  # jobs whose attempt's end was seen but not yet recorded (store failed)
        self.placements: dict[int, dict[str, Any]] = {}  # running job -> its attempt's placement (JSON)
        self.delayed: dict[int, tuple[float, Job]] = {}  # retry backoff
        # migrations decided (a running job preempted and started elsewhere in one pass): the start, carried out
        # once the preemption has ended the job's processes and put it back in the queue
        self._moves: dict[int, Start] = {}
        self.known: set[int] = set()  # non-terminal jobs the loop holds (pending, delayed or running)
        self.specs: dict[int, dict[str, Any]] = {}
        self.max_seen = 0
        self._seen_marks: list[tuple[float, int]] = []
        self.stats = Stats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self._waiting: dict[int | str, Why] = {}  # the last pass's reasons (sched.reasons)
        self._rest: Why | None = None
        self.error: BaseException | None = None
        self._queues_sig: Any = None
        self._node_up: dict[str, bool] = {}  # what the allocation was last told (drained or lost: down)
        self._dev_down: dict[int, str] = {}  # cluster device id -> why it is down in the allocation
        self._node_sigs: dict[str, Any] = {}  # what was last registered per live node
        self._last_infos: list[NodeInfo] | None = None  # the executor's last membership report (by identity)
        self._health_seen: dict[tuple[str, int], Any] = {}  # the executor's last health report per device
        self.live_nodes: set[str] = set()
        self._nodes_at = 0.0
        self._nodes_edited = False  # an admin changed a node (its partitions): read the cluster again
        self._dirty = True
        self.lock = threading.Lock()  # guards the sched state for readers (metrics)
        self._nodes_dirty = True  # node flags and device health to be read again (see _apply_node_changes)
        self._node_mark = -1
        self._node_mark_at = 0.0
        self._fits_cache: dict[Any, Any] = {}  # never_fits: job shape -> answer, for one scheduler (see there)

    # -- read by the API -----------------------------------------------------------------------------------
    def wait_reason(self, job_id: int) -> tuple[str, str] | None:
        """Why a waiting job the controller holds is not running: (code, sentence) from the last scheduling pass
        (or its retry back-off); None for a job it does not hold as waiting."""
        d = self.delayed.get(job_id)
        if d is not None:
            return Reason.BACKOFF.code, describe((Reason.BACKOFF, d[0]), d[1], None, time.time())
        job = self.state.pending.jobs.get(job_id) if self.serving else None
        if job is None:
            return None
        why = self._waiting.get(job_id) or self._rest or (Reason.WINDOW, None)
        return why[0].code, describe(why, job, self.cluster, time.time())

    def reason_counts(self) -> dict[str, int]:
        """Waiting jobs by reason code (the last pass's reasons; retry back-offs)."""
        c = reason_counts(self._waiting, len(self.state.pending), self._rest)
        out = {r.code: n for r, n in c.items() if n}
        if self.delayed:
            out[Reason.BACKOFF.code] = len(self.delayed)
        return out

    def nodes_changed(self) -> None:
        """An admin changed a node in the store (its partitions): the next tick reads the cluster again."""
        self._nodes_edited = True

    @property
    def serving(self) -> bool:
        """Recovered and scheduling (the loop has not failed)."""
        return self.ready.is_set() and self.error is None

    def never_fits(self, job: Job) -> str | None:
        """Why ``job`` can never run on this cluster, even when it is empty (None: it can, or not known yet)."""
        if not self.serving:
            return None
        sched = self.sched  # read once: the loop may swap in a new scheduler (and cluster) meanwhile
        cl = sched.cluster
        try:
            key = sched.shape(job)
            hash(key)
        except Exception:
            return None  # let the scheduler judge
        cache = self._fits_cache
        if cache.get("sched") is not sched:  # answers hold for one scheduler (cluster, queues' partitions)
            cache.clear()
            cache["sched"] = sched
        hit = cache.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        empty = cache.get("empty")
        if empty is None:  # an empty allocation of this cluster: built once (10,000 devices cost ~10 ms each time)
            empty = cache["empty"] = Allocation(cl)
        try:
            parts = sched.job_partitions(job) if sched.partitioned else None
            cands = sched.placer.candidate_models(job, None, parts) if job.count else []
            ok = sched.placer.place(empty, job, cands, parts) is not None
        except Exception:
            return None  # let the scheduler judge
        why = None
        if not ok and parts is not None and not any(p in cl.partition_nodes for p in parts):
            why = (f"can never run: no node is in partition {', '.join(sorted(parts))} (an admin puts one there: "
                   "suanli nodes --update NODE --partition NAME)")
        elif not ok:
            inv = ", ".join(f"{n}x{m}" for m, n in cl.summary()["models"].items()) or "no accelerators"
            cpus, mem = int(cl.node_cpu.sum()) // 1000, int(cl.node_mem.sum())
            why = f"can never run on this cluster ({inv}, {cpus} CPUs, {mem} MiB)"
        if len(cache) > 4096:  # shapes a real workload submits are few; a flood of odd ones must not grow it
            cache.clear()
            cache["sched"], cache["empty"] = sched, empty
        cache[key] = why
        return why

    # -- set-up ---------------------------------------------------------------------------------------------
    def _load_cluster(self) -> Cluster:
        """One cluster from every node registered in the store (lost and drained ones are kept down)."""
        specs = [NodeSpec(r["name"], r["accelerator"], r["devices"], r["cpu_milli"], r["memory_mib"], r["domain"],
                          r["rack"], partitions=tuple(r.get("partitions") or ())) for r in self.store.list_nodes()]
        return build_cluster("suanli", specs)

    def _queue_configs(self) -> list[QueueConfig]:
        return [QueueConfig(q["name"], float(q["weight"]), dict(q["quota"] or {}), bool(q["borrow"]),
                            tuple(q["partitions"]) if q.get("partitions") else None)
                for q in self.store.list_queues()]

    def _sync_nodes(self, now: float) -> bool:
        """Membership and device health from the executor into the store: nodes it reports are registered (up),
        registered nodes it no longer reports are marked lost, health changes it reports are recorded. True when
        something was registered (the caller compares the topology)."""
        infos: list[NodeInfo] = self.ex.nodes()
        self.node_addresses = {i.name: i.address for i in infos}  # read by the service manager (replica addresses)
        if infos is self._last_infos:  # the executor says nothing changed (it returns the same list): skip the work
            return False
        status = {name: st for name, _d, st in self.store.node_flags()}
        changed: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for i in infos:
            spec, rows = i.store_spec()
            sig = (tuple(sorted(spec.items())), tuple(tuple(sorted(r.items())) for r in rows))
            if self._node_sigs.get(i.name) != sig or status.get(i.name) != NodeStatus.UP:
                if status.get(i.name) == NodeStatus.LOST:
                    self.store.set_node_status(i.name, NodeStatus.UP, "reported by the executor again", now)
                changed.append((spec, rows))
                self._node_sigs[i.name] = sig
        if changed:  # one transaction for all of them (a virtual fleet registers 1,250 nodes at start)
            self.store.upsert_nodes(changed, now=now)
        wrote = bool(changed)
        for i in infos:
            for d in i.devices:
                if d.health is None:  # the executor does not know: the store's record stands
                    continue
                key, h = (i.name, d.index), (d.health, d.health_reason)
                if self._health_seen.get(key) != h:
                    self._health_seen[key] = h
                    self.store.set_device_health(i.name, d.index, d.health, d.health_reason, now)
        live = {i.name for i in infos}
        for name, st in status.items():
            if name not in live and st == NodeStatus.UP:
                self.store.set_node_status(name, NodeStatus.LOST, "not reported by the executor", now)
        self.live_nodes = live
        self._last_infos = infos  # only once everything above was recorded
        return wrote

    def _topology_changed(self) -> bool:
        return self._load_cluster().nodes != self.cluster.nodes

    def recover(self) -> None:
        """Rebuild the scheduler state from the store; re-adopt, record or requeue what was running."""
        now = time.time()
        self._sync_nodes(now)
        self.cluster = self._load_cluster()
        self.sched = Scheduler(self.cluster, self.policy, queues=self._queue_configs(), strict_partitions=True)
        self.state = self.sched.new_state()
        rec = self.store.recovery()
        self.max_seen = rec.max_id
        self._seen_marks = [(time.monotonic(), self.max_seen)]
        running: list[tuple[Job, Any, StopReason | None]] = []
        for r in rec.live:
            job = job_from_row(r._mapping)
            st = S(r.state)
            if st == S.PREEMPTED:  # crashed between the two steps of a preemption
                self.store.requeue_preempted(r.id, now)
                st = S.REQUEUED
            if st == S.RUNNING:
                running.append((job, rec.attempts.get(r.id), _STOP_FOR.get(rec.intents.get(r.id, ""))))
                continue
            self.known.add(job.id)
            if r.not_before is not None and r.not_before > now:
                self.delayed[job.id] = (r.not_before, job)
            else:
                self.state.submit(job)
        records = [AttemptRecord(int(job.id), a.id, a.n, tuple(a.placement["nodes"]),
                                 tuple(tuple(x) for x in a.placement["local"]), int(a.placement["milli"]),
                                 self._spec(int(job.id)), a.procs, a.pgid)
                   for job, a, _ in running if a is not None and a.ended_at is None]
        found = self.ex.adopt(records) if records else {}
        for job, a, stopping in running:
            self._recover_running(job, a, found.get(a.id) if a is not None else None, now, stopping)
        self._apply_node_flags()
        self._apply_health(now)

    def _recover_running(self, job: Job, a: Any, found: Any, now: float, stopping: StopReason | None) -> None:
        jid = int(job.id)
        self.known.add(jid)
        if a is None or a.ended_at is not None or found is None:  # cannot happen unless edited by hand; requeue
            self._requeue_lost(job, a, now, "no live attempt found after restart")
            return
        if found.verdict == AdoptVerdict.NOT_STARTED:
            self._requeue_lost(job, a, now, "controller stopped before the processes were started")
            return
        if found.verdict == AdoptVerdict.PARTIAL:
            self._requeue_lost(job, a, now, f"controller stopped while starting the ranks ({found.started} of "
                               f"{found.world} started; stopped)", outcome=AttemptOutcome.ABORTED)
            return
        h = found.handle
        try:
            pl, model = placement_from_json(self.cluster, a.placement)
            if not self.ex.dynamic_membership and not set(a.placement["nodes"]) <= self.live_nodes:
                raise KeyError("node not live")  # (an executor with membership reports lost parts itself)
        except (KeyError, ValueError, IndexError):
            if found.alive:
                self.ex.kill(h)
                self.ex.wait(h, 5.0)
            self._requeue_lost(job, a, now, "placement no longer matches the nodes' devices")
            return
        self.state.running.add(RunningJob(job, pl, model, a.started_at))
        self.state.alloc.take(pl)
        self.handles[jid] = h
        self.placements[jid] = a.placement
        if stopping is not None:  # the previous controller was stopping it: carry on (and do not count a failure)
            self.ex.stop(h, stopping)
        self.store.record_adopted(jid, a.id, f"attempt {a.n}: re-adopted after a controller restart "
                                  f"({'alive' if found.alive else 'ended while the controller was down'})", now,
                                  h.record() if a.procs is None else None)

    def _requeue_lost(self, job: Job, a: Any, now: float, why: str,
                      outcome: AttemptOutcome = AttemptOutcome.LOST) -> None:
        self.store.requeue_lost(int(job.id), a.id if a is not None and a.ended_at is None else None, now, why,
                                outcome)
        self.state.submit(job)

    def _rebuild_cluster(self) -> None:
        """The nodes changed (one joined, or its devices did): a new cluster and scheduler state with the same
        pending and running jobs (running ones keep their devices, mapped by node name and local index)."""
        old = self.state
        self.cluster = self._load_cluster()
        self.sched = Scheduler(self.cluster, self.policy, queues=self._queue_configs(), strict_partitions=True)
        st = self.sched.new_state()
        for jid, r in list(old.running.jobs.items()):
            pl, model = placement_from_json(self.cluster, self.placements[int(jid)])
            st.running.add(RunningJob(r.job, pl, model, r.start, r.borrowed))
            st.alloc.take(pl)
        for job in old.pending:
            st.submit(job)
        with self.lock:
            self.state = st
        self._node_up = {}
        self._dev_down = {}
        self._nodes_dirty = True
        self._queues_sig = None
        self._dirty = True

    # -- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="suanli-controller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.recover()
            if self.freeze_gc:  # what recovery built lives as long as the process: out of the collector's scans
                gc.collect()
                gc.freeze()
            self.ready.set()
            if self.services is not None:
                self.services.start()
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    self.tick()
                except Exception as e:  # keep the loop alive; the store is the truth, the next tick re-reads it
                    log.exception("reconcile tick failed: %s", e)
                    time.sleep(0.5)
                self._stop.wait(max(0.0, self.tick_s - (time.monotonic() - t0)))
        except BaseException as e:
            self.error = e
            self.ready.set()
            log.exception("controller stopped: %s", e)
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop; unless ``keep_jobs_on_stop``, stop running jobs and requeue them (no failure counted)."""
        self._stop.set()
        if self.services is not None:
            self.services.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.keep_jobs_on_stop or not self.handles:
            self.ex.close()
            return
        now = time.time()
        for jid, h in self.handles.items():
            # recorded first: a crash during the stop does not count as a failure
            self.store.add_event(jid, "stopping", "controller stopping; the job will be requeued", now)
            self.ex.stop(h, StopReason.SHUTDOWN)
        grace = max([self.ex.grace_s, *(h.grace_s for h in self.handles.values() if h.grace_s is not None)])
        end = time.monotonic() + grace + 2  # each job's termination_grace
        while self.handles and time.monotonic() < end + 5:
            self._observe_processes(time.time())
            time.sleep(0.05)
        self.ex.close()

    def tick(self) -> None:
        now = time.time()
        self.ex.at_tick(now)
        self.stats.ticks += 1
        self._admit_new(now)
        self._apply_cancels(now)
        self._observe_processes(now)  # first: a node loss it reports makes the membership check below due now
        if self._nodes_edited:  # before the membership check: a rebuild there reads the edit too
            self._nodes_edited = False
            if self._topology_changed():
                self._rebuild_cluster()
        if time.monotonic() - self._nodes_at >= self.nodes_every_s:
            self._nodes_at = time.monotonic()
            if self._sync_nodes(now):
                self._nodes_dirty = True
                if self._topology_changed():
                    self._rebuild_cluster()
        self._apply_node_changes(now)
        if self.stats.ticks % 10 == 1:
            self._reload_queues()
        for jid, (t, job) in list(self.delayed.items()):
            if t <= now:
                del self.delayed[jid]
                self.state.submit(job)
                self._dirty = True
        if len(self.state.pending) and (self._dirty or self.stats.ticks % 20 == 0):
            self._schedule(now)
        if self.metrics is not None:
            self.metrics.observe_state(self)
        if self.trim_every_s and time.monotonic() - self._trim_at >= self.trim_every_s:
            self._trim_at = time.monotonic()
            _malloc_trim()

    # -- observe --------------------------------------------------------------------------------------------
    def _admit_new(self, now: float) -> None:
        """New pending jobs into the scheduler. SQLite commits ids in order (one writer at a time), so reading past
        the largest id seen is enough; with PostgreSQL an id can become visible after a larger one, so the ids of
        the last few seconds are read again (:meth:`Store.pending_after`)."""
        if self.store.is_sqlite:
            after = self.max_seen
        else:
            mono = time.monotonic()
            self._seen_marks = [(t, m) for t, m in self._seen_marks if mono - t < 5.0]
            after = min((m for _, m in self._seen_marks), default=self.max_seen)
            self._seen_marks.append((mono, self.max_seen))
        for r in self.store.pending_after(after, self.known):
            if r.id in self.known:
                continue
            self.known.add(r.id)
            self.state.submit(job_from_row(r._mapping))
            self._dirty = True
            self.max_seen = max(self.max_seen, int(r.id))

    def _apply_cancels(self, now: float) -> None:
        for jid, st in self.store.cancel_requests():
            if st in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
                self.store.clear_cancel_flag(jid)
                continue
            if st == S.RUNNING:
                h = self.handles.get(jid)
                if h is not None and h.stopping != StopReason.CANCEL:
                    h.stopping = None
                    self.ex.stop(h, StopReason.CANCEL)
                continue
            # waiting: take it out of the scheduler's queue
            if jid in self.state.pending:
                self.state.cancel_pending(jid)
            self.delayed.pop(jid, None)
            self.known.discard(jid)
            self.store.cancel_waiting(jid, st, now)
            self._dirty = True

    def _apply_node_changes(self, now: float) -> None:
        """Drain flags, node status and device health into the allocation, when they may have changed: every such
        change writes a node event, so the newest event's id tells (reading 1,250 nodes' rows every tick held the
        GIL ~10 ms per tick at 10,000 chips). PostgreSQL may make an event visible after a larger id: there the
        rows are read again for a few seconds after the mark moved."""
        mark = self.store.node_events_mark()  # before the reads below: what committed before it, they see
        mono = time.monotonic()
        recent = not self.store.is_sqlite and mono - self._node_mark_at < 5.0
        if not (self._nodes_dirty or mark != self._node_mark or recent):
            return
        self._apply_node_flags()
        self._apply_health(now)
        self._nodes_dirty = False
        if mark != self._node_mark:
            self._node_mark, self._node_mark_at = mark, mono

    def _apply_node_flags(self) -> None:
        """Drained and lost nodes take no new jobs (``Allocation.set_node_up``); running jobs on a drained node go
        on, those on a lost node are stopped (node-lost) unless the executor already ended them."""
        for name, drained, status in self.store.node_flags():
            up = not drained and status == NodeStatus.UP
            if self._node_up.get(name) == up:
                continue
            self._node_up[name] = up
            try:
                n = self.cluster.node_index(name)
            except KeyError:
                continue
            self.state.alloc.set_node_up(n, up)
            self._dirty = True
            if status == NodeStatus.LOST:
                for jid, h in self.handles.items():
                    if name in self.placements[jid]["nodes"] and h.stopping not in INFRA_REASONS:
                        h.stopping = None
                        self.ex.stop(h, StopReason.NODE_LOST)

    def _apply_health(self, now: float) -> None:
        """Unhealthy devices (the store's ``devices.health``) are taken out of placement
        (``Allocation.set_device_up``); a job running on one is stopped and requeued, as for a lost node."""
        bad = self.store.unhealthy_devices()
        down: dict[int, str] = {}
        for (node, idx), why in bad.items():
            try:
                n = self.cluster.node_index(node)
            except KeyError:
                continue
            if 0 <= idx < int(self.cluster.node_devices[n]):
                down[int(self.cluster.node_dev_start[n]) + idx] = why
        if down == self._dev_down:
            return
        for d in set(self._dev_down) - set(down):
            self.state.alloc.set_device_up(d, True)
        newly = set(down) - set(self._dev_down)
        for d in newly:
            self.state.alloc.set_device_up(d, False)
        self._dev_down = down
        self._dirty = True
        for jid, h in self.handles.items():
            r = self.state.running.jobs.get(jid)
            if r is None or h.stopping in INFRA_REASONS:
                continue
            hit = [d for ds in r.placement.devices for d in ds if d in newly]
            if hit:
                dev = self.cluster.device(hit[0])
                self.store.add_event(jid, "device-unhealthy", f"device {dev.local_index} of node "
                                     f"{self.cluster.nodes[dev.node].name} is unhealthy ({down[hit[0]]}); "
                                     "stopping the attempt", now)
                h.stopping = None
                self.ex.stop(h, StopReason.DEVICE_UNHEALTHY)

    def _reload_queues(self) -> None:
        qs = self._queue_configs()
        sig = tuple((q.name, q.weight, tuple(sorted(q.quota.items())), q.borrow, q.partitions) for q in qs)
        if sig != self._queues_sig:
            self._queues_sig = sig
            self.sched.queues = {q.name: q for q in qs}
            self._dirty = True

    def _observe_processes(self, now: float) -> None:
        """Attempts whose processes ended: recorded together, in one transaction (50 ends a second paid one commit
        each); should that fail, one by one, and what still fails is tried again at the next tick."""
        ended = []
        handles = self.handles
        # the executor names the handles that may have ended (all of them, but for one that knows when its
        # processes end); ends seen before whose recording failed are polled again whatever it says
        due = dict.fromkeys(self.ex.due(handles))
        if self._unrecorded:
            due.update(dict.fromkeys(self._unrecorded))
            self._unrecorded.clear()
        for jid in due:
            h = handles.get(jid)
            if h is None:
                continue
            done, code = self.ex.poll(h)
            if done:
                ended.append(self._finish_plan(jid, h, code, now))
        if not ended:
            return
        self._unrecorded.update(f[1] for f in ended)  # until recorded: a failing store is tried again next tick
        if len(ended) > 1:
            try:
                self.store.finish_attempts([f[0] for f in ended], now)
            except Exception as e:
                log.warning("recording %d ended attempts together failed (%s); one by one", len(ended), e)
            else:
                for f in ended:
                    self._finish_done(*f[1:], now)
                self._unrecorded.clear()
                return
        for f in ended:
            self.store.finish_attempts([f[0]], now)
            self._finish_done(*f[1:], now)
            self._unrecorded.discard(f[1])

    def _spec(self, jid: int) -> dict[str, Any]:
        s = self.specs.get(jid)
        if s is None:
            s = self.specs[jid] = self.store.job_spec(jid)
        return s

    def _finish_plan(self, jid: int, h: Handle, code: int | None, now: float
                     ) -> tuple[tuple[Any, ...], int, Job, float | None]:
        """The end of an attempt and the job's next state: what the store records in one transaction (the
        arguments of :meth:`Store.finish_attempts`) and what :meth:`_finish_done` does once it has: (record, job
        id, job, requeue at). If the transaction fails, nothing changed: the handle stays, the next tick tries
        again."""
        r = self.state.running.jobs[jid]
        job = r.job
        why = h.stopping
        requeue_at: float | None = None
        lost_ds: float | None = None
        codestr = "unknown" if code is None else str(code)
        steps: list[Step]
        if why == StopReason.CANCEL:
            outcome = AttemptOutcome.CANCELLED
            steps = [Step(S.RUNNING, S.CANCELLED, f"cancelled (exit {codestr})",
                          {"exit_code": code, "cancel_requested": False})]
        elif why == StopReason.PREEMPT:
            outcome = AttemptOutcome.PREEMPTED
            steps = [Step(S.RUNNING, S.PREEMPTED, f"preempted (exit {codestr})"),
                     Step(S.PREEMPTED, S.REQUEUED, "back in the queue")]
            requeue_at = now
        elif why == StopReason.SHUTDOWN:
            outcome = AttemptOutcome.STOPPED
            steps = [Step(S.RUNNING, S.REQUEUED, "controller stopped; requeued")]
            requeue_at = now
        elif why in INFRA_REASONS:
            outcome = AttemptOutcome.NODE_LOST
            self._nodes_at = 0.0  # ask the executor for its nodes before the next placement
            # lost work as the twin counts it: the time since the last checkpoint (or since the start) on every
            # device of the attempt
            ck = self.ex.last_checkpoint(jid)
            since = r.start if ck is None else max(r.start, ck)
            until = min(now, h.lost_at) if h.lost_at is not None else now
            lost_ds = max(0.0, until - since) * job.devices_equiv
            where = "a node was lost" if why == StopReason.NODE_LOST else "a device turned unhealthy"
            steps = [Step(S.RUNNING, S.REQUEUED, f"{why}: {where}; requeued; {lost_ds / 3600:.4f} device-hours "
                          f"lost since the {'last checkpoint' if ck and ck > r.start else 'start'}")]
            requeue_at = now
        elif code == 0:
            outcome = AttemptOutcome.SUCCEEDED
            steps = [Step(S.RUNNING, S.SUCCEEDED, "exit 0", {"exit_code": 0})]
        else:
            outcome = AttemptOutcome.FAILED
            failures = self.store.job_failures(jid) + 1  # the loop is the only writer of failures
            max_retries = int(self._spec(jid).get("max_retries", 0))
            if failures <= max_retries:
                delay = min(self.retry_cap_s, self.retry_base_s * 2 ** (failures - 1))
                requeue_at = now + delay
                steps = [Step(S.RUNNING, S.REQUEUED, f"exit {codestr}; retry {failures}/{max_retries} in {delay:g}s",
                              {"exit_code": code, "failures": failures, "not_before": requeue_at})]
            else:
                steps = [Step(S.RUNNING, S.FAILED, f"exit {codestr}; no retries left ({max_retries} allowed)",
                              {"exit_code": code, "failures": failures, "reason": f"exit {codestr}"})]
        energy = usage.energy_used(self.ex, self.placements.get(jid))  # measured where the executor can read it
        return (jid, h.attempt_id, outcome, code, why, steps, lost_ds, energy), jid, job, requeue_at

    def _finish_done(self, jid: int, job: Job, requeue_at: float | None, now: float) -> None:
        """The scheduler's side of an ended attempt, once the store has it."""
        del self.handles[jid]
        self.placements.pop(jid, None)
        self.state.stop(jid, now)
        self.stats.finished += 1
        self._dirty = True
        if requeue_at is None:
            self.known.discard(jid)
            self.specs.pop(jid, None)
        elif requeue_at > now:
            self.delayed[jid] = (requeue_at, job)
        else:
            self.state.submit(job)

    # -- decide and act ---------------------------------------------------------------------------------------
    def _schedule(self, now: float) -> None:
        self._dirty = False
        t0 = time.perf_counter()
        if self._moves:
            self._carry_moves(now)
        d = self.sched.decide(self.state, now)
        dt = time.perf_counter() - t0
        self._waiting, self._rest = d.waiting, d.rest  # why the others wait, until the next pass
        self.stats.decide_s_last = dt
        self.stats.decides += 1
        if self.metrics is not None:
            self.metrics.sched_latency.observe(dt)
        for p in d.preemptions:
            h = self.handles.get(int(p.job_id))
            if h is not None and h.stopping is None:
                self.store.add_event(int(p.job_id), "preempting", f"for job {p.for_job} ({p.reason})", now)
                self.ex.stop(h, StopReason.PREEMPT)
        # Victims keep their devices until their processes have exited: a start that needs them does not fit yet
        # and waits for a later pass. Starts are carried out in chunks within a time budget: a burst of a
        # thousand starts held the loop (and the GIL the API shares) for seconds; what is left over is decided
        # again at the next tick (the pass is marked dirty), a tick later.
        starts = d.starts
        for k in range(0, len(starts), START_CHUNK):
            if k and time.perf_counter() - t0 > self.act_budget_s:
                self._dirty = True
                break
            self._start_all(starts[k : k + START_CHUNK], now)
            time.sleep(0)  # let the API's threads have the GIL between chunks
        if self.metrics is not None:
            self.metrics.pass_latency.observe(time.perf_counter() - t0)

    def _carry_moves(self, now: float) -> None:
        """Start the migrated jobs that are back in the queue where the pass that moved them placed them (the
        twin does the stop and the start at one instant); a move that no longer fits is left to this pass."""
        pending, running = self.state.pending.jobs, self.state.running.jobs
        ready = []
        for jid, s in list(self._moves.items()):
            if s.job_id in pending:
                ready.append(s)
                del self._moves[jid]
            elif s.job_id not in running:  # ended otherwise (cancelled, finished, failed): nothing to move
                del self._moves[jid]
        if ready:
            self._start_all(ready, now)

    def _start_all(self, starts: list[Start], now: float) -> None:
        """Carry out starts: every attempt is recorded (one transaction for all of them) before any is spawned,
        their processes after (one more transaction). A crash in between leaves attempts without processes
        recorded: after a restart the executor finds them (adopted) or not (requeued, never run)."""
        ok: list[Start] = []
        pending = self.state.pending.jobs
        for s in starts:
            if s.job_id not in pending:  # a migration: the job still runs where it was until its preemption ends it
                self._moves[int(s.job_id)] = s
                continue
            try:
                self.state.alloc._check_fits(s.placement)
            except ValueError:
                self._dirty = True
                continue
            self.state.start(s, now)  # takes the devices: the next start's check sees them
            ok.append(s)
        if not ok:
            return
        need = [int(s.job_id) for s in ok if int(s.job_id) not in self.specs]
        if need:
            self.specs.update(self.store.job_specs(need))
        pls = []
        for s in ok:
            pl_json = placement_to_json(self.cluster, s.placement, s.model)
            if (e0 := usage.energy_counters(self.ex, pl_json)) is not None:  # accounting: measured energy
                pl_json["energy_mj0"] = e0
            pls.append(pl_json)
        try:
            recs = self.store.begin_attempts(
                [(int(s.job_id), pl, f"{','.join(pl['nodes'])} devices {pl['local']}") for s, pl in zip(ok, pls,
                                                                                                     strict=True)],
                now)
        except Exception:  # nothing was recorded: the jobs wait again (the next pass tries anew)
            for s in ok:
                self.state.submit(self.state.stop(s.job_id, now).job)
            self._dirty = True
            raise
        spawned: list[tuple[int, list[Any], int | None]] = []
        for s, pl_json, (aid, n) in zip(ok, pls, recs, strict=True):
            jid = int(s.job_id)
            self.stats.started += 1
            a = AttemptSpec(jid, aid, n, self._spec(jid), pl_json["model"], tuple(pl_json["nodes"]),
                            tuple(tuple(x) for x in pl_json["local"]), s.placement.milli)
            try:
                h = self.ex.start(a)
            except NodeUnavailable as e:  # not the job's fault: requeued (after the membership check), no failure
                self.store.requeue_lost(jid, aid, now, f"could not start: {e}", AttemptOutcome.NODE_LOST)
                self.delayed[jid] = (now + 1.0, self.state.stop(jid, now).job)
                self._nodes_at = 0.0
                self._dirty = True
                continue
            except Exception as e:  # OSError, or a command the OS refuses (ValueError): the attempt fails, recorded
                self.store.spawn_failed(jid, aid, now, str(e))
                self.state.stop(jid, now)
                self.known.discard(jid)
                self.specs.pop(jid, None)
                continue
            self.handles[jid] = h
            self.placements[jid] = pl_json
            self.specs.pop(jid, None)  # not kept while it runs (read again if a failure needs max_retries)
            spawned.append((aid, *h.record()))
        self.store.record_spawned_many(spawned)
