"""Summary metrics of a simulation run.

Definitions (all over the jobs that completed, unless said otherwise):

- JCT = finish - submit; queueing delay (``avg_queue_s``) = first start - submit (the wait before the job first ran).
- pending time (``avg_pending_s``) = all the time a job waited: before its first start plus after each preemption
  or failure kill, until it ran again (what published simulators call queueing; preemptive policies hide waits from
  ``avg_queue_s``).
- bounded slowdown = max(1, JCT / max(work, 10 s)) (Feitelson's bound of 10 s); ``worst_1pct_slowdown`` = the mean
  bounded slowdown of the worst 1% of jobs (at least one): starvation that p99 JCT, dominated by long jobs, hides.
- Rejected jobs (they can never fit the cluster) are left out of everything but the ``rejected`` count: load,
  makespan and utilization are over the accepted jobs.
- makespan = last completion - first accepted submission (failures and repairs after the last completion do not
  stretch it).
- ``utilization``: allocated device-seconds / (devices x makespan): how busy the cluster was over the run.
- ``alloc_ratio``: allocated / up devices, time-averaged over the periods when some job was waiting - how much
  of the cluster a policy manages to hand out under contention (1.0 when nothing ever waited).
- ``fragmentation``: 1 - alloc_ratio: the share of up devices left idle while jobs waited.
- ``lost_chip_hours``: work destroyed by failures (run time since the last checkpoint x chips) / 3600.
- ``goodput``: 1 - lost / allocated device-seconds.
- ``fairness``: Jain's index over tenants of 1 / (their mean bounded slowdown); 1.0 = every tenant equally served.
- ``load``: offered load of the accepted jobs = work / (devices x arrival span); above 1 the cluster cannot keep
  up. ``load_with_rejected`` counts the rejected jobs too.
- ``work_cv``: coefficient of variation of the accepted jobs' work (device-seconds). LAS beats FIFO on mean JCT when
  job sizes are heavy-tailed (CV well above 1, as in every published GPU trace); on light-tailed work (CV below 1:
  every job alike) LAS only interleaves jobs and is rightly worse than FIFO. ``light_tailed`` flags CV < 1.
- ``partitions`` (when jobs name partitions): per partition ``jobs`` (that named it), ``completed``, ``devices``
  (of its nodes), ``avg_jct_s``, ``avg_queue_s`` and ``utilization`` = device-seconds its jobs ran / (its devices x
  makespan); null when the cluster has no such partition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from suanli.sim.engine import SUCCEEDED, SimResult


def jain(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x) or not (x**2).sum():
        return 1.0
    return float(x.sum() ** 2 / (len(x) * (x**2).sum()))


def _load(w: Any, sel: np.ndarray, capacity: int) -> float:
    """Offered load of the jobs ``sel``: their work / (capacity x their arrival span)."""
    if not sel.any() or capacity <= 0:
        return 0.0
    sub = w.submit[sel]
    dur = w.duration[sel]
    span = float(sub[-1] - sub[0])
    if span <= 0:
        span = float(np.median(dur)) or 1.0
    return float((dur * w.count[sel] * w.milli[sel] / 1000.0).sum()) / (capacity * span)


def summarize(r: SimResult) -> dict[str, Any]:
    w = r.workload
    done = r.state == SUCCEEDED
    accepted = ~r.rejected
    sub = w.submit[done]
    jct = r.finish[done] - sub
    qd = r.first_start[done] - sub
    pend = r.pending_s[done]
    npre = r.preemptions[done]
    work = w.duration[done]
    bsd = np.maximum(1.0, jct / np.maximum(work, 10.0))
    worst = np.sort(bsd)[-max(1, len(bsd) // 100):] if len(bsd) else bsd
    size = (w.duration * w.count * w.milli / 1000.0)[accepted]
    cv = float(size.std() / size.mean()) if len(size) > 1 and size.mean() > 0 else 0.0
    makespan = max(0.0, r.t_end - r.t_start)
    cap = max(r.capacity, 1)
    util = r.busy_ds / (cap * makespan) if makespan > 0 else 0.0
    alloc = r.contended_busy_ds / r.contended_up_ds if r.contended_up_ds > 0 else 1.0
    ten = w.tenant[done]
    per_t: dict[str, dict[str, float]] = {}
    inv = []
    for t in np.unique(ten).tolist():
        m = ten == t
        s = float(bsd[m].mean())
        per_t[w.tenants[t]] = {"jobs": int(m.sum()), "avg_jct_s": float(jct[m].mean()), "avg_slowdown": s}
        inv.append(1.0 / s)

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) if len(a) else 0.0

    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if len(a) else 0.0

    extra: dict[str, Any] = {}
    if w.partitions:
        c = r.cluster
        parts: dict[str, dict[str, Any]] = {}
        pa_done = w.partition[done]
        for i, name in enumerate(w.partitions):
            nd = c.partition_nodes.get(name)
            dev = int(c.node_devices[nd].sum()) if nd is not None else 0
            m = pa_done == i
            parts[name] = {"jobs": int((w.partition == i).sum()), "completed": int(m.sum()), "devices": dev,
                           "avg_jct_s": mean(jct[m]), "avg_queue_s": mean(qd[m]),
                           "utilization": float(r.run_ds[w.partition == i].sum() / (dev * makespan))
                           if dev and makespan > 0 else None}
        extra["partitions"] = parts

    return {
        "policy": r.policy,
        "workload": w.name,
        "cluster": r.cluster.name,
        "devices": r.capacity,
        "load": round(_load(w, accepted, r.capacity), 4),
        "load_with_rejected": round(w.offered_load(r.capacity), 4),
        "jobs": len(w),
        "completed": int(done.sum()),
        "unfinished": int(((r.state >= 0) & ~done & ~r.rejected).sum()),
        "rejected": int(r.rejected.sum()),
        "work_cv": round(cv, 3),
        "light_tailed": bool(len(size) > 1 and cv < 1.0),
        "skipped_rows": int(w.skipped),
        "avg_jct_s": mean(jct),
        "p50_jct_s": pct(jct, 50),
        "p95_jct_s": pct(jct, 95),
        "p99_jct_s": pct(jct, 99),
        "avg_queue_s": mean(qd),
        "p99_queue_s": pct(qd, 99),
        "avg_pending_s": mean(pend),
        "p99_pending_s": pct(pend, 99),
        "avg_bounded_slowdown": mean(bsd),
        "p99_bounded_slowdown": pct(bsd, 99),
        "worst_1pct_slowdown": mean(worst),
        "makespan_s": makespan,
        "utilization": util,
        "alloc_ratio": alloc,
        "fragmentation": 1.0 - alloc,
        "contended_share": min(1.0, r.contended_s / makespan) if makespan > 0 else 0.0,
        "preemptions": int(r.preemptions.sum()),
        "preemptions_per_job": mean(npre.astype(np.float64)),
        "max_preemptions_per_job": int(npre.max()) if len(npre) else 0,
        "preempted_jobs": int((npre > 0).sum()),
        "failures": int(r.n_failures),
        "jobs_killed": int(r.failures.sum()),
        "lost_chip_hours": r.lost_ds / 3600.0,
        "goodput": 1.0 - r.lost_ds / r.busy_ds if r.busy_ds > 0 else 1.0,
        "fairness": jain(np.array(inv)),
        "tenants": per_t,
        # job-hours spent waiting, by the scheduler's reason (sched.reasons): what held the queue
        "wait_by_reason_h": {k: v / 3600.0 for k, v in r.wait_by_reason.items()},
        **extra,
        "decide_calls": r.decide_calls,
        "events": r.events,
        "wall_s": r.wall_s,
    }


KEYS = ("policy", "jobs", "avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_queue_s", "makespan_s", "utilization",
        "alloc_ratio", "lost_chip_hours", "goodput", "wall_s")
