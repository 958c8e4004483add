"""Summary metrics of a simulation run.

Definitions (all over the jobs that completed, unless said otherwise):

- JCT = finish - submit; queueing delay = first start - submit (the wait before the job first ran).
- bounded slowdown = max(1, JCT / max(work, 10 s)) (Feitelson's bound of 10 s).
- makespan = last completion - first submission.
- ``utilization``: allocated device-seconds / (devices x makespan): how busy the cluster was over the run.
- ``alloc_ratio``: allocated / up devices, time-averaged over the periods when some job was waiting - how much
  of the cluster a policy manages to hand out under contention (1.0 when nothing ever waited).
- ``fragmentation``: 1 - alloc_ratio: the share of up devices left idle while jobs waited.
- ``lost_chip_hours``: work destroyed by failures (run time since the last checkpoint x chips) / 3600.
- ``goodput``: 1 - lost / allocated device-seconds.
- ``fairness``: Jain's index over tenants of 1 / (their mean bounded slowdown); 1.0 = every tenant equally served.
- ``load``: offered load = work / (devices x arrival span); above 1 the cluster cannot keep up.
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


def summarize(r: SimResult) -> dict[str, Any]:
    w = r.workload
    done = r.state == SUCCEEDED
    sub = w.submit[done]
    jct = r.finish[done] - sub
    qd = r.first_start[done] - sub
    work = w.duration[done]
    bsd = np.maximum(1.0, jct / np.maximum(work, 10.0))
    t0 = float(w.submit[0]) if len(w) else 0.0
    makespan = max(0.0, r.t_end - t0)
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

    return {
        "policy": r.policy,
        "workload": w.name,
        "cluster": r.cluster.name,
        "devices": r.capacity,
        "load": round(w.offered_load(r.capacity), 4),
        "jobs": len(w),
        "completed": int(done.sum()),
        "unfinished": int(((r.state >= 0) & ~done & ~r.rejected).sum()),
        "rejected": int(r.rejected.sum()),
        "skipped_rows": int(w.skipped),
        "avg_jct_s": mean(jct),
        "p50_jct_s": pct(jct, 50),
        "p95_jct_s": pct(jct, 95),
        "p99_jct_s": pct(jct, 99),
        "avg_queue_s": mean(qd),
        "p99_queue_s": pct(qd, 99),
        "avg_bounded_slowdown": mean(bsd),
        "makespan_s": makespan,
        "utilization": util,
        "alloc_ratio": alloc,
        "fragmentation": 1.0 - alloc,
        "contended_share": r.contended_s / makespan if makespan > 0 else 0.0,
        "preemptions": int(r.preemptions.sum()),
        "failures": int(r.n_failures),
        "jobs_killed": int(r.failures.sum()),
        "lost_chip_hours": r.lost_ds / 3600.0,
        "goodput": 1.0 - r.lost_ds / r.busy_ds if r.busy_ds > 0 else 1.0,
        "fairness": jain(np.array(inv)),
        "tenants": per_t,
        "decide_calls": r.decide_calls,
        "events": r.events,
        "wall_s": r.wall_s,
    }


KEYS = ("policy", "jobs", "avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_queue_s", "makespan_s", "utilization",
        "alloc_ratio", "lost_chip_hours", "goodput", "wall_s")
