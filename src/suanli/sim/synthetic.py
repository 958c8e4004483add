"""A seedable synthetic LLM-era workload: the simulator's embedded default (no files needed).

Job classes (share of jobs; chips; duration median and lognormal sigma) - chosen to land on the published
AcmeTrace statistics (Hu et al., NSDI'24, ``traces/acme-2023/cluster_summary.csv``): the median GPU job asks for
1 GPU (Seren, Kalos), the median GPU runtime is about two minutes (Seren 122 s, Kalos 124 s) because evaluation
jobs dominate the count, the mean request is between Seren's 5.7 and Kalos' 26.8 GPUs, and large pre-training gangs
(64-4,096 chips) take most of the GPU time (Kalos: pre-training 94% of GPU time in the paper).

=============  ======  ===========================  ===================  =========================================
class          share   chips                        duration (median)    notes
=============  ======  ===========================  ===================  =========================================
pre-training   0.5%    64-4,096 (powers of 2)       8 h, sigma 1.2       gang, whole nodes
fine-tuning    7%      8-256                        1.5 h, sigma 1.0     gang
evaluation     65.5%   1, 2, 4, 8                   2 min, sigma 1.2     arrive in bursts of 5-50 at one instant
dev session    25%     1 (70%), 2, 4, 8             40 min, sigma 1.0
inference      2%      1, 2, 4, 8                   1 day, sigma 0.8     priority 100, not preemptible
=============  ======  ===========================  ===================  =========================================

Arrivals are a Poisson process whose rate is set so that the offered load (work / (capacity x span)) is ``load``;
the job count and the cluster size fix the span. Tenants: 8 teams with Zipf-like shares.
"""

from __future__ import annotations

import numpy as np

from suanli.sim.workload import KINDS, Workload

CLASSES: tuple[tuple[str, float, tuple[int, ...], tuple[float, ...], float, float], ...] = (
    # kind, share, sizes, size weights, median duration s, sigma
    ("train", 0.005, (64, 128, 256, 512, 1024, 2048, 4096), (0.30, 0.25, 0.18, 0.12, 0.08, 0.05, 0.02), 8 * 3600, 1.2),
    ("finetune", 0.07, (8, 16, 32, 64, 128, 256), (0.40, 0.25, 0.15, 0.10, 0.06, 0.04), 1.5 * 3600, 1.0),
    ("eval", 0.655, (1, 2, 4, 8), (0.55, 0.10, 0.10, 0.25), 120.0, 1.2),
    ("dev", 0.25, (1, 2, 4, 8), (0.70, 0.10, 0.10, 0.10), 2400.0, 1.0),
    ("serve", 0.02, (1, 2, 4, 8), (0.40, 0.20, 0.20, 0.20), 86400.0, 0.8),
)
TENANT_SHARES = (0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05, 0.05)
MAX_DURATION = 14 * 86400.0


def synthetic(
    n_jobs: int = 10_000,
    capacity: int = 1024,
    *,
    load: float = 0.9,
    seed: int = 0,
    max_gang: int | None = None,
    node_size: int = 8,
) -> Workload:
    """``n_jobs`` jobs for a cluster of ``capacity`` chips at offered load ``load``.

    ``max_gang``: largest job (default: min(4,096, capacity / 2)); larger draws are clipped to it.
    """
    if n_jobs < 0 or capacity <= 0 or load <= 0:
        raise ValueError("n_jobs must be >= 0, capacity and load positive")
    rng = np.random.default_rng(seed)
    cap_gang = max_gang if max_gang is not None else max(1, min(4096, capacity // 2))
    shares = np.array([c[1] for c in CLASSES])
    cls = rng.choice(len(CLASSES), size=n_jobs, p=shares / shares.sum())
    count = np.empty(n_jobs, dtype=np.int32)
    duration = np.empty(n_jobs, dtype=np.float64)
    kind = np.empty(n_jobs, dtype=np.int8)
    priority = np.zeros(n_jobs, dtype=np.int16)
    preemptible = np.ones(n_jobs, dtype=bool)
    for i, (k, _, sizes, w, med, sigma) in enumerate(CLASSES):
        idx = np.flatnonzero(cls == i)
        if not len(idx):
            continue
        wa = np.array(w) / sum(w)
        count[idx] = np.minimum(rng.choice(np.array(sizes), size=len(idx), p=wa), cap_gang)
        duration[idx] = np.clip(rng.lognormal(np.log(med), sigma, len(idx)), 10.0, MAX_DURATION)
        kind[idx] = KINDS.index(k)
        if k == "serve":
            priority[idx] = 100
            preemptible[idx] = False
    count = np.maximum(count, 1)
    work = float((count * duration).sum())
    span = work / (load * capacity) if n_jobs else 0.0
    submit = np.sort(rng.uniform(0.0, span, n_jobs)) if n_jobs else np.zeros(0)
    # evaluation bursts: runs of consecutive evaluation jobs share the arrival time of the first of the run
    is_eval = kind == KINDS.index("eval")
    burst = rng.integers(5, 51, size=max(1, n_jobs // 5))
    starts = np.cumsum(np.concatenate([[0], burst]))[:-1]
    bid = np.searchsorted(starts, np.arange(n_jobs), side="right") - 1
    first = starts[bid]
    submit = np.where(is_eval & is_eval[first], submit[first], submit)
    submit = np.maximum.accumulate(submit) if n_jobs else submit
    ts = np.array(TENANT_SHARES)
    tenant = rng.choice(len(ts), size=n_jobs, p=ts / ts.sum()).astype(np.int32)
    per_node = np.where(count >= node_size, node_size, 0).astype(np.int32)
    return Workload(
        name=f"synthetic(n={n_jobs}, chips={capacity}, load={load:g}, seed={seed})",
        submit=submit.astype(np.float64),
        duration=duration,
        count=count,
        milli=np.full(n_jobs, 1000, dtype=np.int32),
        per_node=per_node,
        cpu_milli=np.zeros(n_jobs, dtype=np.int64),
        mem_mib=np.zeros(n_jobs, dtype=np.int64),
        models=np.full(n_jobs, -1, dtype=np.int32),
        tenant=tenant,
        kind=kind,
        priority=priority,
        preemptible=preemptible,
        estimate=np.full(n_jobs, np.nan),
        gang=np.ones(n_jobs, dtype=bool),
        partition=np.full(n_jobs, -1, dtype=np.int32),
        job_type=np.full(n_jobs, -1, dtype=np.int16),
        model_sets=[],
        tenants=[f"team-{chr(97 + i)}" for i in range(len(ts))],
    )
