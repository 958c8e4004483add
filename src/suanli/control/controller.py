"""The controller: a reconcile loop that observes (store + executor), decides (``sched``), acts (start / stop
processes) and records. It is the only writer of job state; every change goes through the workload state machine
(:func:`suanli.workload.states.check_transition`) and is one transaction with its event.

Crash safety: an attempt is recorded (job RUNNING, attempt row) *before* its processes are spawned, their pids
after. On start-up the controller re-adopts attempts whose processes are still alive (it keeps watching them and
reads their exit codes from the files the rank wrapper writes), records the ones that ended while it was down, and
requeues the ones that never got spawned. Nothing is started twice: an attempt row exists for every spawn.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from suanli.control.db import job_attempts, job_events, jobs, nodes
from suanli.control.executor import Handle, LocalExecutor, proc_rank, scan_attempt_pids
from suanli.control.store import Store, job_from_row
from suanli.fleet.model import Cluster, NodeSpec, build_cluster
from suanli.sched import Allocation, Placement, QueueConfig, RunningJob, Scheduler, Start
from suanli.workload.spec import Job
from suanli.workload.states import JobState

log = logging.getLogger("suanli.controller")

S = JobState
_INTENT_KINDS = ("running", "preempting", "stopping")  # "running" starts an attempt: no intent yet
_STOP_FOR = {"preempting": "preempt", "stopping": "shutdown"}


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


class Controller:
    def __init__(self, store: Store, executor: LocalExecutor, node: str, *, policy: str = "fifo",
                 tick_s: float = 0.1, retry_base_s: float = 2.0, retry_cap_s: float = 300.0,
                 keep_jobs_on_stop: bool = False, metrics: Any = None) -> None:
        self.store = store
        self.ex = executor
        self.node = node
        self.policy = policy
        self.tick_s = tick_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.keep_jobs_on_stop = keep_jobs_on_stop
        self.metrics = metrics
        self.handles: dict[int, Handle] = {}
        self.delayed: dict[int, tuple[float, Job]] = {}  # retry backoff
        self.known: set[int] = set()  # non-terminal jobs the loop holds (pending, delayed or running)
        self.specs: dict[int, dict[str, Any]] = {}
        self.max_seen = 0
        self._seen_marks: list[tuple[float, int]] = []
        self.stats = Stats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._queues_sig: Any = None
        self._drained: dict[str, bool] = {}
        self._dirty = True
        self.lock = threading.Lock()  # guards the sched state for readers (metrics)

    # -- read by the API -----------------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        """Recovered and scheduling (the loop has not failed)."""
        return self.ready.is_set() and self.error is None

    def never_fits(self, job: Job) -> str | None:
        """Why ``job`` can never run on this cluster, even when it is empty (None: it can, or not known yet)."""
        if not self.serving:
            return None
        cl = self.cluster
        try:
            cands = self.sched.placer.candidate_models(job, None) if job.count else []
            ok = self.sched.placer.place(Allocation(cl), job, cands) is not None
        except Exception:
            return None  # let the scheduler judge
        if ok:
            return None
        inv = ", ".join(f"{n}x{m}" for m, n in cl.summary()["models"].items()) or "no accelerators"
        cpus, mem = int(cl.node_cpu.sum()) // 1000, int(cl.node_mem.sum())
        return f"can never run on this cluster ({inv}, {cpus} CPUs, {mem} MiB)"

    # -- set-up ---------------------------------------------------------------------------------------------
    def _load_cluster(self) -> Cluster:
        with self.store.read() as c:
            r = c.execute(sa.select(nodes).where(nodes.c.name == self.node)).first()
        if r is None:
            raise RuntimeError(f"node {self.node!r} is not registered")
        spec = NodeSpec(r.name, r.accelerator, r.devices, r.cpu_milli, r.memory_mib, r.domain, r.rack)
        return build_cluster("local", [spec])

    def _queue_configs(self) -> list[QueueConfig]:
        return [QueueConfig(q["name"], float(q["weight"]), dict(q["quota"] or {}), bool(q["borrow"]))
                for q in self.store.list_queues()]

    def recover(self) -> None:
        """Rebuild the scheduler state from the store; re-adopt, record or requeue what was running."""
        self.cluster = self._load_cluster()
        self.sched = Scheduler(self.cluster, self.policy, queues=self._queue_configs())
        self.state = self.sched.new_state()
        now = time.time()
        cols = [jobs.c.id, jobs.c.state, jobs.c.priority, jobs.c.queue, jobs.c.tenant, jobs.c.submit_time,
                jobs.c.sched, jobs.c.not_before, jobs.c.failures, jobs.c.attempts]
        with self.store.read() as c:
            live = c.execute(sa.select(*cols).where(jobs.c.state.in_(
                [S.PENDING.value, S.REQUEUED.value, S.RUNNING.value, S.PREEMPTED.value])).order_by(jobs.c.id)).all()
            self.max_seen = int(c.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0)
            running_ids = [r.id for r in live if r.state == S.RUNNING.value]
            attempts: dict[int, Any] = {}
            intents: dict[int, str] = {}  # a stop the previous controller had started (preempting, stopping)
            for i in range(0, len(running_ids), 500):
                chunk = running_ids[i : i + 500]
                for a in c.execute(sa.select(job_attempts).where(job_attempts.c.job_id.in_(chunk))
                                   .order_by(job_attempts.c.n)).all():
                    attempts[a.job_id] = a  # the last one wins
                for e in c.execute(sa.select(job_events.c.job_id, job_events.c.kind).where(
                        job_events.c.job_id.in_(chunk), job_events.c.kind.in_(_INTENT_KINDS))
                        .order_by(job_events.c.id)).all():
                    intents[e.job_id] = e.kind  # the last one wins
        found = scan_attempt_pids(self.ex.key_prefix) if running_ids else {}
        self._seen_marks = [(time.monotonic(), self.max_seen)]
        for r in live:
            job = job_from_row(r._mapping)
            st = S(r.state)
            if st == S.PREEMPTED:  # crashed between the two steps of a preemption
                with self.store.write() as c:
                    Store.transition(c, r.id, S.PREEMPTED, S.REQUEUED, now, "requeued after restart")
                st = S.REQUEUED
            if st == S.RUNNING:
                self._recover_running(job, attempts.get(r.id), found, now, _STOP_FOR.get(intents.get(r.id, "")))
                continue
            self.known.add(job.id)
            if r.not_before is not None and r.not_before > now:
                self.delayed[job.id] = (r.not_before, job)
            else:
                self.state.submit(job)
        self._apply_drains()

    def _recover_running(self, job: Job, a: Any, found: dict[str, list[int]], now: float,
                         stopping: str | None = None) -> None:
        jid = int(job.id)
        self.known.add(jid)
        if a is None or a.ended_at is not None:  # no live attempt: cannot happen unless edited by hand; requeue
            self._requeue_lost(job, a, now, "no live attempt found after restart")
            return
        pids = found.get(self.ex.attempt_key(a.id), [])
        try:
            pl, model = placement_from_json(self.cluster, a.placement)
        except (KeyError, ValueError, IndexError):
            pl, model = None, -1
        world = max(1, len(a.placement["local"][0])) if a.placement["local"] and a.placement["milli"] >= 1000 else 1
        h = self.ex.adopt(jid, a.id, a.n, a.procs, a.pgid, pids, world)
        alive = any(self.ex._alive(p, t) for p, t in (*h.procs, *h.extra))
        if pl is None:
            if alive:
                self.ex.kill_now(h)
                self.ex.wait(h, 5.0)
            self._requeue_lost(job, a, now, "placement no longer matches this node's devices")
            return
        if a.procs is None:
            # The controller died between recording the attempt and recording its pids: some, all or none of the
            # ranks were spawned. All of them (alive, or ended with an exit file): adopt. None: requeue. Some: the
            # attempt cannot work without the others; stop what exists and requeue. No failure is counted.
            ranks = {r for r in (proc_rank(p) for p, _ in h.extra) if r is not None}
            ranks |= {r for r, f in enumerate(h.exit_files) if f.exists()}
            if len(ranks) < world:
                if alive:
                    self.ex.kill_now(h)
                    self.ex.wait(h, 5.0)
                if not ranks:
                    self._requeue_lost(job, a, now, "controller stopped before the processes were started")
                else:
                    self._requeue_lost(job, a, now, f"controller stopped while starting the ranks ({len(ranks)} "
                                       f"of {world} started; stopped)", outcome="aborted")
                return
        self.state.running.add(RunningJob(job, pl, model, a.started_at))
        self.state.alloc.take(pl)
        self.handles[jid] = h
        if stopping is not None:  # the previous controller was stopping it: carry on (and do not count a failure)
            self.ex.stop(h, stopping)
        with self.store.write() as c:
            self.store.event(c, jid, "adopted", f"attempt {a.n}: re-adopted after a controller restart "
                             f"({'alive' if alive else 'ended while the controller was down'})", now)
            if a.procs is None and h.extra:
                c.execute(job_attempts.update().where(job_attempts.c.id == a.id).values(pgid=h.pgid))

    def _requeue_lost(self, job: Job, a: Any, now: float, why: str, outcome: str = "lost") -> None:
        with self.store.write() as c:
            if a is not None and a.ended_at is None:
                c.execute(job_attempts.update().where(job_attempts.c.id == a.id)
                          .values(ended_at=now, outcome=outcome))
            Store.transition(c, int(job.id), S.RUNNING, S.REQUEUED, now, why)
        self.state.submit(job)

    # -- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="suanli-controller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.recover()
            self.ready.set()
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
        if self._thread is not None:
            self._thread.join(timeout)
        if self.keep_jobs_on_stop or not self.handles:
            return
        now = time.time()
        for jid, h in self.handles.items():
            with self.store.write() as c:  # recorded first: a crash during the stop does not count as a failure
                self.store.event(c, jid, "stopping", "controller stopping; the job will be requeued", now)
            self.ex.stop(h, "shutdown")
        end = time.monotonic() + self.ex.grace_s + 2
        while self.handles and time.monotonic() < end + 5:
            self._observe_processes(time.time())
            time.sleep(0.05)

    def tick(self) -> None:
        now = time.time()
        self.stats.ticks += 1
        self._admit_new(now)
        self._apply_cancels(now)
        self._apply_drains()
        if self.stats.ticks % 10 == 1:
            self._reload_queues()
        self._observe_processes(now)
        for jid, (t, job) in list(self.delayed.items()):
            if t <= now:
                del self.delayed[jid]
                self.state.submit(job)
                self._dirty = True
        if len(self.state.pending) and (self._dirty or self.stats.ticks % 20 == 0):
            self._schedule(now)
        if self.metrics is not None:
            self.metrics.observe_state(self)

    # -- observe --------------------------------------------------------------------------------------------
    def _admit_new(self, now: float) -> None:
        """New pending jobs into the scheduler. SQLite commits ids in order (one writer at a time), so reading past
        the largest id seen is enough; with PostgreSQL an id can become visible after a larger one, so the ids of
        the last few seconds are read again (ids only; rows only for the ones not seen yet)."""
        cols = (jobs.c.id, jobs.c.priority, jobs.c.queue, jobs.c.tenant, jobs.c.submit_time, jobs.c.sched)
        with self.store.read() as c:
            if self.store.is_sqlite:
                rows = c.execute(sa.select(*cols).where(jobs.c.id > self.max_seen, jobs.c.state == S.PENDING.value)
                                 .order_by(jobs.c.id).limit(20000)).all()
            else:
                mono = time.monotonic()
                self._seen_marks = [(t, m) for t, m in self._seen_marks if mono - t < 5.0]
                horizon = min((m for _, m in self._seen_marks), default=self.max_seen)
                self._seen_marks.append((mono, self.max_seen))
                ids = c.execute(sa.select(jobs.c.id).where(jobs.c.id > horizon, jobs.c.state == S.PENDING.value)
                                .order_by(jobs.c.id).limit(50000)).scalars().all()
                new = [i for i in ids if i not in self.known][:20000]
                rows = []
                for k in range(0, len(new), 1000):
                    rows += c.execute(sa.select(*cols).where(jobs.c.id.in_(new[k : k + 1000]),
                                                             jobs.c.state == S.PENDING.value)).all()
                rows.sort(key=lambda r: r.id)
        for r in rows:
            if r.id in self.known:
                continue
            self.known.add(r.id)
            self.state.submit(job_from_row(r._mapping))
            self._dirty = True
            self.max_seen = max(self.max_seen, int(r.id))

    def _apply_cancels(self, now: float) -> None:
        with self.store.read() as c:
            rows = c.execute(sa.select(jobs.c.id, jobs.c.state).where(jobs.c.cancel_requested == sa.true())).all()
        for r in rows:
            jid, st = int(r.id), S(r.state)
            if st in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
                with self.store.write() as c:
                    c.execute(jobs.update().where(jobs.c.id == jid).values(cancel_requested=False))
                continue
            if st == S.RUNNING:
                h = self.handles.get(jid)
                if h is not None and h.stopping != "cancel":
                    h.stopping = None
                    self.ex.stop(h, "cancel")
                continue
            # waiting: take it out of the scheduler's queue
            if jid in self.state.pending:
                self.state.cancel_pending(jid)
            self.delayed.pop(jid, None)
            self.known.discard(jid)
            with self.store.write() as c:
                Store.transition(c, jid, st, S.CANCELLED, now, "cancelled while waiting", cancel_requested=False)
            self._dirty = True

    def _apply_drains(self) -> None:
        with self.store.read() as c:
            rows = c.execute(sa.select(nodes.c.name, nodes.c.drained)).all()
        for r in rows:
            if self._drained.get(r.name) == bool(r.drained):
                continue
            self._drained[r.name] = bool(r.drained)
            try:
                n = self.cluster.node_index(r.name)
            except KeyError:
                continue
            self.state.alloc.set_node_up(n, not r.drained)
            self._dirty = True

    def _reload_queues(self) -> None:
        qs = self._queue_configs()
        sig = tuple((q.name, q.weight, tuple(sorted(q.quota.items())), q.borrow) for q in qs)
        if sig != self._queues_sig:
            self._queues_sig = sig
            self.sched.queues = {q.name: q for q in qs}
            self._dirty = True

    def _observe_processes(self, now: float) -> None:
        for jid, h in list(self.handles.items()):
            done, code = self.ex.poll(h)
            if done:
                self._finish(jid, h, code, now)

    def _spec(self, jid: int) -> dict[str, Any]:
        s = self.specs.get(jid)
        if s is None:
            with self.store.read() as c:
                s = c.execute(sa.select(jobs.c.spec).where(jobs.c.id == jid)).scalar_one()
            self.specs[jid] = s
        return s

    def _finish(self, jid: int, h: Handle, code: int | None, now: float) -> None:
        """Record the end of an attempt and the job's next state, in one transaction; then update the scheduler.
        If the transaction fails, nothing changed: the handle stays and the next tick tries again."""
        r = self.state.running.jobs[jid]
        job = r.job
        why = h.stopping
        requeue_at: float | None = None
        codestr = "unknown" if code is None else str(code)
        with self.store.write() as c:
            row = c.execute(sa.select(jobs.c.failures, jobs.c.cancel_requested).where(jobs.c.id == jid)).one()
            outcome: str
            if why == "cancel":
                outcome = "cancelled"
                Store.transition(c, jid, S.RUNNING, S.CANCELLED, now, f"cancelled (exit {codestr})",
                                 exit_code=code, cancel_requested=False)
            elif why == "preempt":
                outcome = "preempted"
                Store.transition(c, jid, S.RUNNING, S.PREEMPTED, now, f"preempted (exit {codestr})")
                Store.transition(c, jid, S.PREEMPTED, S.REQUEUED, now, "back in the queue")
                requeue_at = now
            elif why == "shutdown":
                outcome = "stopped"
                Store.transition(c, jid, S.RUNNING, S.REQUEUED, now, "controller stopped; requeued")
                requeue_at = now
            elif code == 0:
                outcome = "succeeded"
                Store.transition(c, jid, S.RUNNING, S.SUCCEEDED, now, "exit 0", exit_code=0)
            else:
                outcome = "failed"
                failures = int(row.failures) + 1
                spec = self._spec(jid)
                max_retries = int(spec.get("max_retries", 0))
                if failures <= max_retries:
                    delay = min(self.retry_cap_s, self.retry_base_s * 2 ** (failures - 1))
                    requeue_at = now + delay
                    Store.transition(c, jid, S.RUNNING, S.REQUEUED, now,
                                     f"exit {codestr}; retry {failures}/{max_retries} in {delay:g}s",
                                     exit_code=code, failures=failures, not_before=requeue_at)
                else:
                    Store.transition(c, jid, S.RUNNING, S.FAILED, now,
                                     f"exit {codestr}; no retries left ({max_retries} allowed)",
                                     exit_code=code, failures=failures, reason=f"exit {codestr}")
            c.execute(job_attempts.update().where(job_attempts.c.id == h.attempt_id)
                      .values(ended_at=now, exit_code=code, outcome=outcome))
        del self.handles[jid]
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
        d = self.sched.decide(self.state, now)
        dt = time.perf_counter() - t0
        self.stats.decide_s_last = dt
        self.stats.decides += 1
        if self.metrics is not None:
            self.metrics.sched_latency.observe(dt)
        for p in d.preemptions:
            h = self.handles.get(int(p.job_id))
            if h is not None and h.stopping is None:
                with self.store.write() as c:
                    self.store.event(c, int(p.job_id), "preempting", f"for job {p.for_job} ({p.reason})", now)
                self.ex.stop(h, "preempt")
        # Victims keep their devices until their processes have exited: a start that needs them does not fit yet
        # and waits for a later pass.
        for s in d.starts:
            self._start(s, now)

    def _start(self, s: Start, now: float) -> None:
        jid = int(s.job_id)
        try:
            self.state.alloc._check_fits(s.placement)
        except ValueError:
            self._dirty = True
            return
        job = self.state.pending.jobs[jid]
        pl_json = placement_to_json(self.cluster, s.placement, s.model)
        spec = self._spec(jid)
        with self.store.write() as c:
            row = c.execute(sa.select(jobs.c.state, jobs.c.attempts).where(jobs.c.id == jid)).one()
            n = int(row.attempts) + 1
            Store.transition(c, jid, S(row.state), S.RUNNING, now,
                             f"attempt {n} on {','.join(pl_json['nodes'])} devices {pl_json['local']}",
                             attempts=n, not_before=None)
            aid = c.execute(job_attempts.insert().values(job_id=jid, n=n, started_at=now, placement=pl_json)
                            ).inserted_primary_key[0]
        self.state.start(s, now)
        self.stats.started += 1
        local = pl_json["local"][0] if pl_json["local"] else []
        try:
            h = self.ex.start(jid, int(aid), n, spec, pl_json["model"], list(local), s.placement.milli)
        except Exception as e:  # OSError, or a command the OS refuses (ValueError): the attempt fails, recorded
            with self.store.write() as c:
                c.execute(job_attempts.update().where(job_attempts.c.id == aid)
                          .values(ended_at=now, exit_code=None, outcome="spawn-failed"))
                failures_row = c.execute(sa.select(jobs.c.failures).where(jobs.c.id == jid)).scalar_one()
                Store.transition(c, jid, S.RUNNING, S.FAILED, now, f"could not start: {e}",
                                 failures=int(failures_row) + 1, reason="spawn failed")
            self.state.stop(jid, now)
            self.known.discard(jid)
            return
        self.handles[jid] = h
        with self.store.write() as c:
            c.execute(job_attempts.update().where(job_attempts.c.id == aid)
                      .values(procs=[list(p) for p in h.procs], pgid=h.pgid))
        del job
