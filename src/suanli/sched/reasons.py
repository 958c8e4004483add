"""Why a job waits: a small fixed set of numbered reasons, recorded by the scheduling pass for each pending job it
examined and did not start (``Decisions.waiting``), with the few facts the sentence needs. The sentence itself
(:func:`describe`) is built only when someone asks (the API, the CLI, a report): the pass stays cheap.

Jobs the pass did not reach get ``Decisions.rest``: behind the fifo head, or beyond the scheduler's window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from suanli.fleet.model import Cluster
from suanli.workload.spec import Job


class Reason(IntEnum):
    """The codes are part of the API (``reason``) and of reports: never renumber, only add."""

    CAPACITY = 1  # not enough free devices of the models it accepts
    TOPOLOGY = 2  # enough free devices, but not where its shape needs them (per node, one domain, CPU/memory)
    QUOTA = 3  # its queue is at its quota for the model and may not borrow
    BEHIND = 4  # fifo: behind a blocked job that came first
    RESERVED = 5  # backfill: would delay the reservation of a blocked job
    NEVER = 6  # no node of the cluster (or of its partitions) has what it asks for
    BACKOFF = 7  # retry back-off after a failed attempt (the controller's, not the scheduler's)
    WINDOW = 8  # not examined in this pass: beyond the scheduler's window of jobs looked at

    @property
    def code(self) -> str:
        return self.name.lower()


#: (reason, fact): the fact is what the sentence needs (a job id, a model index, free devices...)
Why = tuple[Reason, Any]


def counts(waiting: Mapping[Any, Why], n_pending: int, rest: Why | None) -> Counter[Reason]:
    """Pending jobs by reason: the examined ones by theirs, the others by ``rest``."""
    c: Counter[Reason] = Counter(w[0] for w in waiting.values())
    left = n_pending - len(waiting)
    if left > 0:
        c[rest[0] if rest is not None else Reason.WINDOW] += left
    return c


def _in(t: float, now: float | None) -> str:
    if now is None:
        return f"t={t:.0f}"
    s = max(0.0, t - now)
    return f"in {s:.0f} s" if s < 120 else f"in {s / 60:.0f} min" if s < 7200 else f"in {s / 3600:.1f} h"


def describe(why: Why, job: Job | None = None, cluster: Cluster | None = None, now: float | None = None) -> str:
    """The sentence for ``why`` (``job`` and ``cluster`` make it more precise; ``now``: times as "in N min")."""
    r, fact = why
    models = cluster.models if cluster is not None else None

    def model(m: Any) -> str:
        if isinstance(m, int) and models is not None and 0 <= m < len(models):
            return models[m]
        return str(m)

    want = ""
    if job is not None and job.count:
        if job.models:
            acc = "/".join(job.models)
        elif models is not None and len(models) == 1:
            acc = models[0]
        else:
            acc = "accelerator" if job.count == 1 else "accelerators"
        share = f" x {job.milli / 1000:g} device" if job.milli < 1000 else ""
        want = f"{job.count} {acc}{share}"
    if r is Reason.CAPACITY:
        free = f"; {fact} free" if fact is not None else ""
        return f"waiting for capacity: needs {want or 'resources'}{free}"
    if r is Reason.TOPOLOGY:
        how = ""
        if job is not None and job.count:
            if job.per_node:
                how = f" ({job.per_node} per node)"
            elif job.gang and job.count > 1:
                how = " (one gang)"
        free = f"; {fact} free, but not where it fits" if fact is not None else "; free devices are not where it fits"
        return f"waiting for placement: needs {want or 'CPU/memory on one node'}{how}{free}"
    if r is Reason.QUOTA:
        m, used, quota = fact
        return f"queue at its {model(m)} quota ({used:g}/{quota:g} devices) and may not borrow"
    if r is Reason.BEHIND:
        return f"behind job {fact} (fifo: the first job that cannot start blocks the ones after it)"
    if r is Reason.RESERVED:
        head, shadow = fact
        when = "" if shadow is None or shadow == float("inf") else f" (expected to start {_in(shadow, now)})"
        return f"would delay job {head}, which has the reservation (backfill){when}"
    if r is Reason.NEVER:
        if isinstance(fact, str) and fact.startswith("no node is in partition"):
            return f"can never run: {fact}"
        if isinstance(fact, str) and fact.startswith("in partition"):
            return f"can never run: no node has {want or 'what it asks for'} {fact}"
        return f"can never run: no node has {want or 'what it asks for'}" + (f" ({fact})" if fact else "")
    if r is Reason.BACKOFF:
        return f"retry back-off after a failed attempt (next try {_in(fact, now)})" if fact is not None else \
            "retry back-off after a failed attempt"
    return "not examined yet: beyond the scheduler's window of jobs per pass"
