"""Heterogeneous job streams as Gavel generates them (Narayanan et al., "Heterogeneity-Aware Cluster Scheduling
Policies for Deep Learning Workloads", OSDI 2020; artifact stanford-futuredata/gavel, ``scheduler/utils.py``
``generate_job``):

- job type drawn uniformly from the measured models;
- scale factor (GPUs) from Gavel's Philly-derived distribution: 1 (70%), 2 (10%), 4 (15%), 8 (5%);
- duration on the reference GPU (V100): 60 x 10^U(1.5, 3) s with probability 0.8, else 60 x 10^U(3, 4) s;
- Poisson arrivals at ``jobs_per_hour``.

Per-model speed of each job type = its isolated throughput on that GPU / on a V100, from the artifact's
``scheduler/combined_throughputs.json`` (commit 474a31a2, the ``null`` entries: steps/s alone on one GPU). The
language model (LM) is left out: its V100 figure (96.2 steps/s) against 2.5 on a P100 comes from a different
measurement configuration and would make any heterogeneity-aware policy look better than it is.
"""

from __future__ import annotations

import numpy as np

from suanli.sim.workload import Workload, WorkloadBuilder

# steps/s alone on one GPU (Gavel artifact, combined_throughputs.json, isolated "null" entries)
GAVEL_THROUGHPUTS: dict[str, dict[str, float]] = {
    "Transformer": {"K80": 1.7486, "P100": 3.9976, "V100": 8.7418},
    "CycleGAN": {"K80": 0.5128, "P100": 1.8726, "V100": 3.6756},
    "ResNet-50": {"K80": 0.5813, "P100": 0.8619, "V100": 1.3769},
    "ResNet-18": {"K80": 5.9139, "P100": 21.6965, "V100": 46.8173},
    "A3C": {"K80": 3.1273, "P100": 4.2870, "V100": 7.2380},
    "Recommendation": {"K80": 0.2395, "P100": 0.3900, "V100": 0.4302},
}
# Gavel's names -> catalog keys
GAVEL_GPUS = {"V100": "V100-16GB", "P100": "P100", "K80": "K80"}


def type_speeds(reference: str = "V100") -> dict[str, dict[str, float]]:
    """Relative speed (work per second, reference GPU = 1) of each job type on each catalog accelerator."""
    return {t: {GAVEL_GPUS[g]: v / thr[reference] for g, v in thr.items()} for t, thr in GAVEL_THROUGHPUTS.items()}


def gavel_workload(n_jobs: int, jobs_per_hour: float, seed: int = 0, multi_gpu: bool = True) -> Workload:
    """``n_jobs`` jobs generated with Gavel's method (see the module docstring); durations are work on a V100."""
    if n_jobs < 1 or jobs_per_hour <= 0:
        raise ValueError("n_jobs must be positive and jobs_per_hour above 0")
    rng = np.random.default_rng(seed)
    speeds = type_speeds()
    names = list(speeds)
    b = WorkloadBuilder(f"gavel-generated(n={n_jobs}, {jobs_per_hour:g} jobs/h, seed={seed})")
    ids = [b.job_type_id(t, speeds[t]) for t in names]
    kind = rng.integers(len(names), size=n_jobs)
    r = rng.random(n_jobs)
    scale = np.where(r < 0.7, 1, np.where(r < 0.8, 2, np.where(r < 0.95, 4, 8))) if multi_gpu else np.ones(n_jobs)
    long = rng.random(n_jobs) >= 0.8
    dur = 60.0 * 10 ** np.where(long, rng.uniform(3, 4, n_jobs), rng.uniform(1.5, 3, n_jobs))
    arrivals = np.cumsum(rng.exponential(3600.0 / jobs_per_hour, n_jobs))
    arrivals -= arrivals[0]
    b.add_columns(submit=arrivals, duration=dur, count=scale.astype(np.int64), kind="train",
                  job_type=np.array(ids, dtype=np.int64)[kind], per_node=0)
    return b.build(rebase=False)
