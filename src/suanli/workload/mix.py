"""A seedable job mix for demos and benchmarks, shaped like a public trace.

``PHILLY_SIZE_MIX`` is the distribution of devices per job in the Microsoft Philly trace (82,247 jobs; counted from
``philly.csv`` of the Pollux OSDI'21 artifact, see ../shared/traces/philly/SOURCE.txt). Durations are log-normal
with the trace's order of magnitude (median ~15 min, long tail to days).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from suanli.workload.spec import Job

PHILLY_SIZE_MIX: tuple[tuple[int, int], ...] = (
    (1, 76627), (2, 1818), (4, 1870), (8, 1643), (12, 7), (16, 199), (24, 7), (32, 67), (64, 6), (128, 3),
)


def size_mix_from_counts(counts: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """A size mix from a list of per-job device counts (e.g. read from a trace)."""
    vals, freq = np.unique(np.asarray(counts, dtype=np.int64), return_counts=True)
    return tuple((int(v), int(f)) for v, f in zip(vals, freq, strict=True) if v > 0)


def sample_jobs(
    n: int,
    *,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] = PHILLY_SIZE_MIX,
    models: Sequence[str] | None = None,
    queues: Sequence[str] = ("research", "prod", "dev", "batch"),
    arrival_rate: float | None = None,
    median_runtime_s: float = 900.0,
    sigma: float = 1.8,
    start_id: int = 0,
) -> list[Job]:
    """``n`` jobs with the given size mix; each accepts one or two of ``models`` (None = any model).

    With ``arrival_rate`` (jobs/s) submit times follow a Poisson process, else all arrive at 0.
    """
    rng = np.random.default_rng(seed)
    vals = np.array([s for s, _ in sizes])
    p = np.array([c for _, c in sizes], dtype=float)
    p /= p.sum()
    counts = rng.choice(vals, size=n, p=p)
    runtimes = np.exp(rng.normal(np.log(median_runtime_s), sigma, size=n)).clip(30, 30 * 86400)
    submit = np.cumsum(rng.exponential(1.0 / arrival_rate, size=n)) if arrival_rate else np.zeros(n)
    qi = rng.integers(len(queues), size=n)
    pick = rng.random(n)
    mi = rng.integers(len(models), size=(n, 2)) if models else None
    jobs: list[Job] = []
    for i in range(n):
        acc: tuple[str, ...] | None = None
        if models and mi is not None:
            a, b = models[int(mi[i, 0])], models[int(mi[i, 1])]
            acc = (a,) if pick[i] < 0.6 or a == b else (a, b)
        c = int(counts[i])
        jobs.append(
            Job(
                id=start_id + i,
                count=c,
                models=acc,
                cpu_milli=4000 * c,
                mem_mib=32 * 1024 * c,
                queue=queues[int(qi[i])],
                tenant=queues[int(qi[i])],
                submit_time=float(submit[i]),
                expected_runtime=float(runtimes[i]),
                kind="train" if c >= 8 else "batch",
            )
        )
    return jobs
