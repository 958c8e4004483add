"""Gavel's heterogeneity-aware allocation (Narayanan et al., "Heterogeneity-Aware Cluster Scheduling Policies for
Deep Learning Workloads", OSDI 2020): a linear program over X[job][accelerator type] (the fraction of time each job
spends on each type), then a round-based mechanism that turns X into placements.

The linear programs (this module's functions are pure: arrays in, arrays out; solved by HiGHS through
``scipy.optimize.linprog``):

- **max-min fairness** (Gavel's heterogeneity-aware LAS): maximise ``min_j thr_j(X) / thr_j(X_equal)``, where
  ``thr_j(X) = sum_k T[j,k] X[j,k]`` is job j's throughput (work per second, reference accelerator = 1) and
  ``X_equal`` gives every active job an equal share of every type's devices. Among the allocations that reach the
  optimum, the one with the largest total normalised throughput ``sum_j thr_j(X) / thr_j(X_equal)`` (a second LP).
- **finish-time fairness** (Themis' rho, as Gavel's ``finish_time_fairness_perf``): minimise ``max_j rho_j(X)``,
  ``rho_j(X) = (t_j + r_j / thr_j(X)) / (t_j + r_j / thr_j(X_equal))`` with ``t_j`` the time since the job arrived
  and ``r_j`` its remaining work. Not linear in X; solved by a sequence of max-min LPs: for a bound R,
  ``rho_j <= R`` is ``thr_j(X) >= r_j / (R (t_j + r_j / thr_eq_j) - t_j)``, achievable iff the max-min LP over
  those demands reaches 1; secant steps on that value inside a bracket (each feasible X's worst rho bounds it from
  above), to 0.1% of R.

Both share the constraints: ``X >= 0``; ``sum_k X[j,k] <= 1`` (a job runs on one type at a time);
``sum_j s_j X[j,k] <= n_k`` (scale factor ``s_j`` = devices of the job, ``n_k`` devices of type k);
``X[j,k] = 0`` where the job cannot run (T = 0).

The mechanism (:class:`GavelPolicy`, the scheduler's ``gavel`` policy): every ``round_s`` seconds of the caller's
clock (``now`` is an argument: the scheduler reads no clock) the jobs are assigned to types for the next round by
priority ``X[j,k] / f[j,k]``, ``f[j,k]`` the fraction of its time since it arrived that job j has run on type k
(Gavel counts from the last recompute of X; a job that has not run there yet: ``X * 1e9``, as Gavel's scheduler):
for each type, fastest first, the jobs in priority order that fit
its remaining devices and are not already placed; running jobs not chosen are preempted (their work is kept), a
running job chosen for its own type keeps its devices. The LP runs only when the active job set changed since the
last one (its result is memoised per job set, as Gavel recomputes ``X`` only when jobs arrive or finish); max-min
is solved over classes of alike jobs (one LP row each), finish-time fairness over at most ``max_lp_jobs`` jobs. Between
round ends, devices that free up are given to waiting jobs by the same priorities, without preempting anyone (Gavel
leaves them idle until the round ends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from suanli.sched.alloc import WHOLE
from suanli.sched.policy import Key, Policy
from suanli.sched.reasons import Reason, Why
from suanli.sched.state import Preempt
from suanli.workload.spec import Job

if TYPE_CHECKING:
    from suanli.sched.core import Scheduler, _Pass
    from suanli.sched.state import RunningJob, SchedState

OBJECTIVES = ("max-min", "finish-time")
_WAIT: Why = (Reason.CAPACITY, None)
ROUND_S = 360.0  # Gavel's simulations use 6-minute rounds
# the finish-time LP (one row per job) covers at most this many active jobs, the longest waiting first; the rest get
# X = 0 (max-min has one row per class of alike jobs and covers them all)
MAX_LP_JOBS = 512
NEW_JOB = 1e9  # priority factor of a job that has not yet run on a type (Gavel's scheduler: X * 1e9)
_FTF_ITERS = 12
_FTF_TOL = 1e-3


class LPError(RuntimeError):
    """The solver did not return an optimal allocation (should not happen: X_equal is always feasible)."""


# -- the linear programs ------------------------------------------------------------------------------------------
def equal_share(T: np.ndarray, s: np.ndarray, cap: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
    """X_equal: each of the m jobs gets 1/m of every type's devices it can use - ``X[j,k] = n_k / (m s_j)`` - scaled
    down so that a job's fractions add up to at most 1. Feasible by construction. ``count``: rows stand for that many
    alike jobs each (m = their sum)."""
    m = T.shape[0] if count is None else float(np.sum(count))
    if m == 0:
        return np.zeros_like(T, dtype=np.float64)
    x = np.where(T > 0, cap[None, :] / (m * s[:, None]), 0.0)
    rows = x.sum(axis=1)
    over = rows > 1.0
    x[over] /= rows[over, None]
    return x


def _solve(c: np.ndarray, A: Any, b: np.ndarray, ub: np.ndarray) -> np.ndarray:
    from scipy.optimize import linprog

    bounds = np.column_stack([np.zeros(len(ub)), ub])
    res = linprog(c, A_ub=A, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        raise LPError(f"linprog: {res.message}")
    return np.asarray(res.x)


def max_min_allocation(T: np.ndarray, s: np.ndarray, cap: np.ndarray, demand: np.ndarray | None = None,
                       norm: np.ndarray | None = None, total: bool = True,
                       count: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Maximise ``min_j thr_j(X) / demand_j`` (default demand: thr_j(X_equal)), then (``total``), at that minimum,
    the sum of ``thr_j(X) / norm_j`` (default norm: the demand). Returns X (m x n) and the optimal minimum.

    ``T`` (m x n): throughput of each job on each type (0: cannot run there); ``s`` (m): devices per job;
    ``cap`` (n): devices per type; ``count`` (m, default 1): each row stands for that many alike jobs (same
    throughputs, scale factor and demand), which share one row of X - exact, since averaging an optimal X over
    alike jobs keeps it feasible and optimal (the minimum and the total are concave and linear in X)."""
    from scipy.sparse import csc_matrix

    m, n = T.shape
    if m == 0:
        return np.zeros((0, n)), math.inf
    T = np.asarray(T, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    cap = np.asarray(cap, dtype=np.float64)
    cnt = np.ones(m) if count is None else np.asarray(count, dtype=np.float64)
    if demand is None:
        demand = (T * equal_share(T, s, cap, count)).sum(axis=1)
    if norm is None:
        norm = demand
    runnable = demand > 0
    Tn = np.where(runnable[:, None], T / np.where(runnable, demand, 1.0)[:, None], 0.0)
    nv = m * n
    jj = np.repeat(np.arange(m), n)  # row of each x variable's job
    kk = np.tile(np.arange(n), m)  # its type
    cols = np.arange(nv)
    # rows 0..m-1: t - thr_j/d_j <= 0 (runnable jobs); m..2m-1: sum_k x_jk <= 1; 2m..2m+n-1: sum_j s_j x_jk <= n_k
    tr = np.flatnonzero(runnable)
    A = csc_matrix((np.concatenate([-Tn.reshape(-1), np.ones(nv), np.repeat(s * cnt, n), np.ones(len(tr))]),
                    (np.concatenate([jj, m + jj, 2 * m + kk, tr]),
                     np.concatenate([cols, cols, cols, np.full(len(tr), nv)]))), shape=(2 * m + n, nv + 1))
    b = np.concatenate([np.zeros(m), np.ones(m), cap])
    ub = np.concatenate([np.where(T.reshape(-1) > 0, 1.0, 0.0), [np.inf if runnable.any() else 0.0]])
    c = np.zeros(nv + 1)
    c[-1] = -1.0
    x = _solve(c, A, b, ub)
    t = float(x[-1]) if runnable.any() else 0.0
    if not total:
        return np.clip(x[:nv].reshape(m, n), 0.0, 1.0), t
    # second stage: the floor stays (a hair below the optimum, for the solver's tolerances); maximise the total
    w = np.where(runnable, cnt / np.where(norm > 0, norm, 1.0), 0.0)
    c2 = np.concatenate([-(T * w[:, None]).reshape(-1), [0.0]])
    ub2 = ub.copy()
    b2 = b.copy()
    lo = t * (1.0 - 1e-7) - 1e-12
    # t fixed at the floor: t <= thr_j/d_j becomes lo <= thr_j/d_j; move it to the right-hand side (t's column 0)
    b2[:m] = np.where(runnable, -lo, 0.0)
    ub2[-1] = 0.0
    x2 = _solve(c2, A, b2, ub2)
    X = np.clip(x2[:nv].reshape(m, n), 0.0, 1.0)
    return X, t


def finish_time_allocation(T: np.ndarray, s: np.ndarray, cap: np.ndarray, elapsed: np.ndarray,
                           remaining: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise ``max_j rho_j(X)`` (Themis' finish-time fairness, Gavel's form; see the module docstring). Returns X
    and the worst rho. Jobs that cannot run anywhere (no throughput) are left out of the objective."""
    m, n = T.shape
    if m == 0:
        return np.zeros((0, n)), 0.0
    T = np.asarray(T, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    cap = np.asarray(cap, dtype=np.float64)
    t = np.maximum(np.asarray(elapsed, dtype=np.float64), 0.0)
    r = np.maximum(np.asarray(remaining, dtype=np.float64), 1e-9)
    eq = (T * equal_share(T, s, cap)).sum(axis=1)
    ok = eq > 0
    iso = np.where(ok, t + r / np.where(ok, eq, 1.0), 1.0)

    def worst(X: np.ndarray) -> float:
        thr = (T * X).sum(axis=1)
        with np.errstate(divide="ignore"):
            rho = np.where(ok, (t + np.where(thr > 0, r / np.where(thr > 0, thr, 1.0), np.inf)) / iso, 0.0)
        return float(rho.max())

    def demand(R: float) -> np.ndarray:
        gap = R * iso - t  # > 0 for every R above the lower bound below
        return np.where(ok, r / np.where(gap > 0, gap, 1e-12), 0.0)

    # lam(R) = the max-min value for the demands of bound R: R is achievable iff lam(R) >= 1. It falls as R falls;
    # the optimum R* has lam(R*) = 1. Bracket it: below, no allocation beats each job alone on its best type; above,
    # X_equal gives every job rho = 1, and each feasible solve gives an X whose worst rho is a new upper bound.
    # Secant steps on lam(R) - 1 inside the bracket, bisection when a step leaves it.
    tmax = T.max(axis=1)
    lo = float(np.max(np.where(ok, (t + r / np.where(tmax > 0, tmax, 1.0)) / iso, 0.0)))
    pts: list[tuple[float, float]] = []
    R, hi, best = 1.0, math.inf, None
    for _ in range(_FTF_ITERS):
        X, lam = max_min_allocation(T, s, cap, demand=demand(R), total=False)
        if lam >= 1.0:
            w = worst(X)
            if w < hi:
                hi, best = w, R
            hi = min(hi, R)
        else:
            lo = max(lo, R)
        pts.append((R, lam))
        if hi - lo <= _FTF_TOL * hi:
            break
        nxt = hi if len(pts) == 1 else math.nan
        if len(pts) >= 2:
            (r0, l0), (r1, l1) = pts[-2], pts[-1]
            nxt = r1 - (l1 - 1.0) * (r1 - r0) / (l1 - l0) if l1 != l0 else math.nan
        if not (lo < nxt < hi) or nxt == R:
            nxt = 0.5 * (lo + hi)
        R = nxt
    # at the best bound found, the allocation with the largest total normalised throughput (every rho within it)
    X, _lam = max_min_allocation(T, s, cap, demand=demand(hi if best is not None else 1.0), norm=eq)
    return X, max(worst(X), 0.0)


# -- the policy ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Allocation:
    """An LP's answer: job ids in row order, X (rows: jobs, columns: the cluster's models), the objective value."""

    ids: tuple[int | str, ...]
    X: np.ndarray
    value: float
    row: dict[int | str, int]


class GavelPolicy(Policy):
    """Gavel: an LP allocation over accelerator types and a round-based mechanism (see the module docstring).

    Options (``Scheduler(policy_options={"gavel": {...}})``, ``suanli sim --gavel-objective``):
    ``objective`` ``max-min`` (default) or ``finish-time``; ``round_s`` (default 360 s); ``max_lp_jobs`` (finish-time
    only)."""

    name = "gavel"
    heterogeneity_aware = True
    own_pass = True
    tracks_model_time = True
    options: ClassVar[tuple[str, ...]] = ("objective", "round_s", "max_lp_jobs")

    def __init__(self, objective: str = "max-min", round_s: float = ROUND_S, max_lp_jobs: int = MAX_LP_JOBS) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"gavel objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
        if not (isinstance(round_s, int | float) and math.isfinite(round_s) and round_s > 0):
            raise ValueError(f"gavel round_s must be a positive number of seconds, not {round_s!r}")
        if int(max_lp_jobs) < 1:
            raise ValueError(f"gavel max_lp_jobs must be at least 1, not {max_lp_jobs!r}")
        self.objective = objective
        self.round_s = float(round_s)
        self.max_lp_jobs = int(max_lp_jobs)
        self._memo: tuple[tuple[Any, ...], Allocation] | None = None
        self._rows: dict[int | str, np.ndarray] = {}  # speeds_row per job id (memo)
        self.lp_runs = 0  # how often the LP ran (tests, benches)
        self.lp_jobs = self.lp_rows = 0  # jobs the last LP covered, and its rows (classes of alike jobs for max-min)

    def key(self, s: Scheduler, job: Job) -> Key:
        return (-job.priority, job.submit_time)

    # -- inputs of the LP -------------------------------------------------------------------------------------------
    def is_round_end(self, now: float) -> bool:
        k = round(now / self.round_s)
        return abs(now - k * self.round_s) <= 1e-6 * max(1.0, self.round_s)

    def next_round(self, now: float) -> float:
        """The first round end after ``now`` (a driver wakes the scheduler then)."""
        return (math.floor(now / self.round_s + 1e-9) + 1) * self.round_s

    def speeds_row(self, s: Scheduler, state: SchedState, job: Job) -> np.ndarray:
        """Throughput of ``job`` on each model (0 where it may not run)."""
        names = s.cluster.models
        sp = s.job_speeds(job)
        row = np.zeros(len(names))
        for g in s.model_candidates(state, job):
            mi = s.group_model[g] if s.partitioned else g
            row[mi] = max(float(sp.get(names[mi], 0.0)), 0.0)
        return row

    def done_work(self, s: Scheduler, job: Job, now: float, running: RunningJob | None) -> float:
        """Work the job has done (reference seconds): its run time on each model times its speed there."""
        names = s.cluster.models
        sp = s.job_speeds(job)
        w = sum(t * float(sp.get(names[mi], 0.0)) for mi, t in (job.model_s or {}).items())
        if running is not None and running.model >= 0:
            w += max(0.0, now - running.start) * float(sp.get(names[running.model], 0.0))
        return w

    def allocation(self, s: Scheduler, state: SchedState, jobs: Sequence[Job], now: float,
                   capacity: np.ndarray) -> Allocation:
        """The LP's X for ``jobs`` (memoised per job set: the LP runs again only when the set changes)."""
        ids = tuple(j.id for j in jobs)
        key = (*ids, *capacity.tolist())  # the job set and the devices it shares (fixed jobs hold the rest)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        T = self.speeds_matrix(s, state, jobs)
        sf = np.array([max(j.devices_equiv, 1e-9) for j in jobs])
        if self.objective == "max-min":
            # one LP row per class of alike jobs (throughputs and scale factor): its size stays that of the job mix
            _, first, inv, cnt = np.unique(np.column_stack([T, sf]), axis=0, return_index=True,
                                             return_inverse=True, return_counts=True)
            Xc, v = max_min_allocation(T[first], sf[first], capacity, count=cnt)
            X = Xc[inv.reshape(-1)]
            self.lp_rows = len(first)
        else:
            run = state.running.jobs
            el = np.array([now - j.submit_time for j in jobs])
            rem = np.array([(j.expected_runtime if j.expected_runtime is not None else math.inf)
                            - self.done_work(s, j, now, run.get(j.id)) for j in jobs])
            rem = np.where(np.isfinite(rem), rem, np.nanmax(np.where(np.isfinite(rem), rem, 0.0), initial=3600.0))
            X, v = finish_time_allocation(T, sf, capacity, el, rem)
            self.lp_rows = len(jobs)
        self.lp_runs += 1
        self.lp_jobs = len(jobs)
        # to 1e-6: the solver's tolerances must not decide a tie between jobs the LP treats alike
        a = Allocation(ids, np.round(X, 6), v, {jid: i for i, jid in enumerate(ids)})
        self._memo = (key, a)
        live = set(ids)
        self._rows = {k: v for k, v in self._rows.items() if k in live}  # forget finished jobs' rows
        return a

    # -- the pass ----------------------------------------------------------------------------------------------------
    def run_pass(self, p: _Pass) -> None:
        """One decision: at a round end the full round assignment (preempting running jobs not chosen), else only
        waiting jobs onto free devices by the current priorities."""
        s, state, now = p.s, p.state, p.now
        n = len(s.cluster.models)
        boundary = self.is_round_end(now) and s.preemption
        running = state.running.jobs
        # the mechanism moves running preemptible accelerator jobs; the others keep their devices
        movable = {jid: r for jid, r in running.items() if r.job.preemptible and r.model >= 0 and r.job.count > 0}
        pend = state.pending.jobs
        cap = np.zeros(n)
        for g, d in enumerate(s.group_devices):
            cap[s.group_model[g] if s.partitioned else g] += d
        for jid, r in running.items():
            if jid not in movable and r.model >= 0:
                cap[r.model] -= r.placement.n_devices * r.placement.milli / WHOLE
        capacity = np.maximum(cap, 0.0)
        if boundary:
            active = [r.job for r in movable.values()] + [j for j in pend.values() if j.count > 0]
        else:  # between round ends only waiting jobs move
            active = [j for j in pend.values() if j.count > 0]
        active.sort(key=lambda j: (j.submit_time, j.seq))
        if active:
            if boundary:
                lp_jobs = sorted([r.job for r in movable.values()] + [j for j in pend.values() if j.count > 0],
                                 key=lambda j: (j.submit_time, j.seq))
                if self.objective == "finish-time":
                    lp_jobs = lp_jobs[: self.max_lp_jobs]
                alloc: Allocation | None = self.allocation(s, state, lp_jobs, now, capacity)
            else:
                alloc = self._memo[1] if self._memo is not None else None
            prio = self.priorities(s, state, active, alloc, now)
            fastest = [s.placer.model_ids[m] for m in s._fastest]
            if boundary:
                self._round(p, active, prio, movable, fastest, capacity)
            else:
                self._fill(p, active, prio, fastest)
        for j in list(pend.values()):
            if j.count == 0 and j.id not in p.started:  # CPU-only jobs: nothing to share, placed when they fit
                res = p.try_place(j)
                if res is not None:
                    p.commit_start(j, res)
        waiting = p.out.waiting
        for jid in pend:
            if jid not in p.started:
                waiting[jid] = _WAIT
        p.out.tested = len(pend)

    def speeds_matrix(self, s: Scheduler, state: SchedState, jobs: Sequence[Job]) -> np.ndarray:
        """Rows of :meth:`speeds_row` (each job's row computed once and remembered: a job's speeds do not change)."""
        rows = self._rows
        out = []
        for j in jobs:
            row = rows.get(j.id)
            if row is None:
                row = rows[j.id] = self.speeds_row(s, state, j)
            out.append(row)
        return np.array(out).reshape(len(jobs), len(s.cluster.models))

    def priorities(self, s: Scheduler, state: SchedState, jobs: Sequence[Job], alloc: Allocation | None,
                   now: float) -> np.ndarray:
        """Priority of each job (rows, in ``jobs`` order) on each model: X / the fraction of its time since it arrived
        that it ran there; X x 1e9 where it has not run yet (Gavel); -1 where it cannot run. A job the LP did not
        cover (arrived since the last one, or beyond ``max_lp_jobs``) counts as X = 1e-6 x its relative speed there:
        after the covered jobs, fastest model first."""
        m = len(jobs)
        T = self.speeds_matrix(s, state, jobs)
        X = np.zeros_like(T)
        top = T.max(axis=1) if m else np.zeros(0)
        got = np.zeros_like(T)
        age = np.empty(m)
        run = state.running.jobs
        for i, j in enumerate(jobs):
            row = alloc.row.get(j.id) if alloc is not None else None
            if row is not None:
                X[i] = alloc.X[row]  # type: ignore[union-attr]
            elif top[i] > 0:
                X[i] = T[i] / top[i] * 1e-6
            if j.model_s:
                for mi, t in j.model_s.items():
                    got[i, mi] += t
            r = run.get(j.id)
            if r is not None and r.model >= 0:
                got[i, r.model] += max(0.0, now - r.start)
            age[i] = now - j.submit_time
        frac = np.where(age[:, None] > 0, got / np.where(age > 0, age, 1.0)[:, None], got)
        with np.errstate(divide="ignore", invalid="ignore"):
            pr = np.where(frac > 0, X / np.where(frac > 0, frac, 1.0), X * NEW_JOB)
        return np.where(T > 0, pr, -1.0)

    def _round(self, p: _Pass, jobs: list[Job], prio: np.ndarray, movable: Mapping[int | str, RunningJob],
               types: list[int], capacity: np.ndarray) -> None:
        """Gavel's round: per type (fastest first) the jobs by priority that fit its remaining devices."""
        left = capacity.copy()
        chosen: dict[int, int] = {}  # job row -> model
        need = [j.devices_equiv for j in jobs]
        for k in types:
            col = prio[:, k]
            for i in np.argsort(-col, kind="stable").tolist():
                if col[i] < 0 or left[k] < 1e-9:
                    break
                if i not in chosen and need[i] <= left[k] + 1e-9:
                    chosen[i] = k
                    left[k] -= need[i]
        where = {jobs[i].id: k for i, k in chosen.items()}
        # running jobs that lose their type this round make room first
        for jid, r in movable.items():
            if where.get(jid) != r.model:
                p.gone.add(jid)
                p.out.preemptions.append(Preempt(jid, jid, "round"))
                p.add_usage(r.job.queue, r.model, -r.placement.milli * r.placement.n_devices)
                p.alloc.give(r.placement)
        moved = []
        for i, k in chosen.items():
            r = movable.get(jobs[i].id)
            if r is None or r.model != k:
                moved.append(i)
                self._place(p, jobs[i], k)
        # what the placer could not fit (devices free but split across nodes): the rest by priority, no preemption
        rest = [i for i in range(len(jobs)) if jobs[i].id not in p.started and
                (jobs[i].id not in movable or jobs[i].id in p.gone)]
        if rest and left.sum() + sum(need[i] for i in moved if jobs[i].id not in p.started) > 0:
            self._fill(p, [jobs[i] for i in rest], prio[rest], types)

    def _fill(self, p: _Pass, jobs: list[Job], prio: np.ndarray, types: list[int]) -> None:
        """Waiting jobs onto free devices by priority, nobody preempted (between round ends, and what a round's
        placements left)."""
        mf = p.alloc._mf
        for k in types:
            groups = self._groups(p.s, k)
            free = sum(int(mf[g]) for g in groups)
            if free <= 0:
                continue
            col = prio[:, k]
            for i in np.argsort(-col, kind="stable").tolist():
                if col[i] < 0:
                    break
                j = jobs[i]
                if j.id in p.started or j.count > free:
                    continue
                if self._place(p, j, k):
                    free = sum(int(mf[g]) for g in groups)
                    if free <= 0:
                        break

    def _groups(self, s: Scheduler, k: int) -> list[int]:
        if not s.partitioned:
            return [k]
        return [g for g, mi in enumerate(s.group_model) if mi == k]

    def _place(self, p: _Pass, job: Job, k: int) -> bool:
        s = p.s
        groups = self._groups(s, k)
        cands = [g for g in s.model_candidates(p.state, job) if g in groups]
        if not cands:
            return False
        res = s.placer.place(p.alloc, job, cands, s.job_partitions(job) if s.partitioned else None)
        if res is None:
            return False
        p.commit_start(job, res)
        return True
