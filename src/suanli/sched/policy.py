"""Policies as objects: what distinguishes one scheduling policy from another, in one place.

A policy says

- ``key``: the order of the pending queue (static while a job waits);
- ``blocking``: what a job that cannot start does to the jobs behind it - ``"block"`` (fifo: they wait, per
  partition), ``"reserve"`` (backfill: it gets a reservation the later jobs must respect, per partition) or
  ``"skip"`` (sjf, las: nothing, the next one is tried);
- ``service_preemption``: whether a waiting job may preempt running jobs that have received more service (LAS
  queues, Tiresias); priority preemption is common to every policy (:mod:`suanli.sched.preempt`);
- ``fair_share``: whether the pass is the weighted-queue pass with quotas (``fair``) instead of the ordered one;
- ``service_rate``: how fast a running job accrues service (1.0: device-seconds; heterogeneity-aware policies
  count work normalised to the job's best accelerator);
- ``model_order``: the order in which a job's candidate models (groups) are tried;
- ``own_pass``: the policy runs its own pass (``run_pass``) instead of the ordered or fair one (``gavel``: an LP
  allocation and rounds, :mod:`suanli.sched.gavel`); ``round_s`` > 0: it wants to be called at every round end
  (``next_round``); ``tracks_model_time``: the state keeps each job's run time per model (``Job.model_s``).

A new policy is a subclass registered in :data:`REGISTRY`; :class:`~suanli.sched.core.Scheduler` takes its name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from suanli.workload.spec import Job

if TYPE_CHECKING:
    from suanli.sched.core import Scheduler
    from suanli.sched.state import SchedState

Key = tuple[Any, ...]


class Policy:
    name: ClassVar[str] = ""
    blocking: ClassVar[str] = "skip"
    service_preemption: ClassVar[bool] = False
    fair_share: ClassVar[bool] = False
    heterogeneity_aware: ClassVar[bool] = False
    migrate: ClassVar[bool] = False  # move running jobs to free, much faster models (after the pending jobs)
    own_pass: ClassVar[bool] = False
    tracks_model_time: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()  # keyword options the policy takes (make_policy)
    round_s: float = 0.0  # > 0: the driver wakes the scheduler at every round end (next_round)

    def next_round(self, now: float) -> float:
        return math.inf

    def run_pass(self, p: Any) -> None:
        raise NotImplementedError

    def key(self, s: Scheduler, job: Job) -> Key:
        return (-job.priority, job.submit_time)

    def service_rate(self, s: Scheduler, job: Job, model: int) -> float:
        return 1.0

    def pass_context(self, s: Scheduler, state: SchedState) -> Any:
        """Per-pass data the policy computes once from the state (read only)."""
        return None

    def model_order(self, s: Scheduler, job: Job, cands: list[int], ctx: Any) -> list[int]:
        return cands


class Fifo(Policy):
    """Submission order (higher priority first); a job that cannot start blocks the later jobs of its
    partitions."""

    name = "fifo"
    blocking = "block"


class Backfill(Policy):
    """EASY backfilling: the blocked head gets a reservation at its shadow time; later jobs start if they end
    before it or use capacity the head will not need."""

    name = "backfill"
    blocking = "reserve"


class Sjf(Policy):
    """Shortest expected runtime first; a job that does not fit is skipped."""

    name = "sjf"

    def key(self, s: Scheduler, job: Job) -> Key:
        rt = job.expected_runtime
        return (-job.priority, rt if rt is not None else math.inf, job.submit_time)


class Las(Policy):
    """Tiresias-style discretised least-attained-service, preemptive between LAS queues."""

    name = "las"
    service_preemption = True

    def key(self, s: Scheduler, job: Job) -> Key:
        return (-job.priority, s.las_queue(job.attained - job.las_base), job.submit_time)


class Fair(Policy):
    """Weighted queues with guaranteed quotas per accelerator model; borrowing and reclaiming."""

    name = "fair"
    fair_share = True


class GavelEvents(Las):
    """Heterogeneity-aware placement after Gavel (Narayanan et al., OSDI 2020), event-driven, without an LP
    (``gavel-events``; the LP and round-based ``gavel`` is :class:`suanli.sched.gavel.GavelPolicy`).

    - Fairness: least *normalised* attained service first - a job accrues service at its speed on the model it
      runs on divided by its speed on its best model, so an hour on a slow accelerator counts for less. Ordering
      and preemption by that service give heterogeneity-aware max-min fairness over time (Gavel's LAS policy
      with effective throughputs), in LAS queues as ``las`` does.
    - Throughput: when others wait, each job tries models in order of *comparative advantage*: its speed on a
      model divided by the mean speed of the competing jobs (waiting and running) on that model (the LP's dual
      price in spirit). A job that gains little from a fast accelerator leaves it to one that gains a lot, which
      raises the total normalised throughput. Alone in the queue, a job takes its fastest free model.
    - Reallocation: Gavel recomputes its allocation every round; here, once the waiting jobs had their turn, a
      running job moves to a free model on which it runs at least twice as fast (a preemption that keeps its work).

    Speeds come from the job (``Job.speeds``: from its spec or its trace's job type), else from the scheduler's
    per-model speed. Unlike Gavel, allocations change at events, not in fixed rounds, and finish-time fairness
    (Themis' rho) is not an objective.
    """

    name = "gavel-events"
    heterogeneity_aware = True
    migrate = True

    def key(self, s: Scheduler, job: Job) -> Key:
        return (-job.priority, s.las_queue(job.attained - job.las_base), job.submit_time)

    def service_rate(self, s: Scheduler, job: Job, model: int) -> float:
        if model < 0:
            return 1.0
        sp = s.job_speeds(job)
        best = max(sp.values(), default=0.0)
        v = sp.get(s.cluster.models[model], 0.0)
        return v / best if best > 0 else 1.0

    def pass_context(self, s: Scheduler, state: SchedState) -> dict[str, float]:
        """Mean speed on each model of the jobs competing for the cluster, waiting and running (each distinct speed
        table weighted by its jobs)."""
        seen: dict[int, tuple[Mapping[str, float], int]] = {}
        for j in itertools.chain(state.pending.jobs.values(), (r.job for r in state.running.jobs.values())):
            sp = s.job_speeds(j)
            k = id(sp)
            e = seen.get(k)
            seen[k] = (sp, e[1] + 1 if e else 1)
        n = sum(c for _, c in seen.values())
        models = s.cluster.models
        if len(state.pending) <= 1:  # nobody else waits: the fastest free model, as the LP gives an idle cluster
            return {}
        return {m: sum(sp.get(m, 0.0) * c for sp, c in seen.values()) / n for m in models}

    def model_order(self, s: Scheduler, job: Job, cands: list[int], ctx: Any) -> list[int]:
        if len(cands) < 2:
            return cands
        sp = s.job_speeds(job)
        names = s.cluster.models
        gm = s.group_model

        def adv(g: int) -> tuple[float, float]:
            m = names[gm[g]]
            mean = ctx.get(m, 0.0)
            v = sp.get(m, 0.0)
            return (-(v / mean if mean > 0 else 0.0), -v)

        return sorted(cands, key=adv)


from suanli.sched.gavel import GavelPolicy  # noqa: E402  (it subclasses Policy, defined above)

REGISTRY: dict[str, type[Policy]] = {p.name: p for p in (Fifo, Backfill, Sjf, Las, Fair, GavelPolicy, GavelEvents)}


def make_policy(name: str, options: Mapping[str, Any] | None = None) -> Policy:
    """The policy ``name`` with its keyword ``options`` (only the ones it declares; bad values: ValueError)."""
    from suanli.errors import UnknownName

    cls = REGISTRY.get(name)
    if cls is None:
        raise UnknownName(f"unknown policy {name!r}; choose one of {', '.join(REGISTRY)}")
    opts = dict(options or {})
    bad = sorted(set(opts) - set(cls.options))
    if bad:
        raise ValueError(f"policy {name!r} takes no option {bad[0]!r}"
                         + (f" (it takes {', '.join(cls.options)})" if cls.options else ""))
    return cls(**opts)


def names() -> Sequence[str]:
    return tuple(REGISTRY)
