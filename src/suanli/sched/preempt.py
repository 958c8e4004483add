"""Preemption: free a small set of whole victim jobs so that a job fits, and place it.

Victims are whole jobs (a gang is never split), chosen node by node: cheapest nodes first, cost = (highest victim
priority, devices preempted, number of victims); the result is checked by a real trial placement. Which running
jobs may be victims is the caller's predicate: priority preemption (:func:`priority_victim`, every policy), LAS
queues (the policy's ``service_preemption``), reclaiming borrowed quota (``fair``).

Works on a scheduling pass (:class:`suanli.sched.core._Pass`): its allocation journal, its preempted set
(``gone``), its failed-search caches and its decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from suanli.sched.alloc import WHOLE, Placement
from suanli.sched.state import Preempt, RunningJob
from suanli.workload.spec import Job

if TYPE_CHECKING:
    from suanli.sched.core import _Pass


def priority_victim(job: Job) -> Callable[[RunningJob], bool]:
    """Running jobs ``job`` may preempt for its priority: preemptible and of strictly lower priority."""
    return lambda r: r.job.preemptible and r.job.priority < job.priority


def preempt_for(p: _Pass, job: Job, is_victim: Callable[[RunningJob], bool], reason: str,
                models: Sequence[int] | None = None) -> tuple[Placement, int] | None:
    """Free a small set of whole victim jobs so that ``job`` fits, and place it; None (nothing changed) if
    impossible. Victims are chosen node by node: cheapest nodes first, cost = (highest victim priority,
    devices preempted, number of victims); the result is checked by a real placement."""
    if job.count == 0 or p.preempt_tries >= p.s.max_preempt_tries:
        return None
    # the victims a job may take depend only on its shape, priority, queue and LAS queue: a search that
    # failed for that combination fails again until a preemption in this pass changes the running set
    key = (p.s.shape(job), reason, job.priority, job.queue, p.las_queue_pending(job),
           tuple(models) if models is not None else None)
    if key in p.preempt_failed:
        return None
    p.preempt_tries += 1
    res = _preempt(p, job, is_victim, reason, models)
    if res is None:
        p.preempt_failed.add(key)
    return res


def _preempt(p: _Pass, job: Job, is_victim: Callable[[RunningJob], bool], reason: str,
             models: Sequence[int] | None) -> tuple[Placement, int] | None:
    placer = p.s.placer
    running = p.state.running
    alloc = p.alloc
    cands = list(models) if models is not None else p.s.model_candidates(p.state, job)
    for m in cands:
        maxd = placer.model_maxd[m]
        per = min(job.per_node or maxd, job.count) if job.gang else 1
        if per > maxd:
            continue
        need_nodes = -(-job.count // per)
        if job.milli == WHOLE:
            already = int(alloc.dom_ge[placer.model_domains[m], per].sum())
            need_nodes = max(1, need_nodes - already)
        want = per if job.milli == WHOLE else 0
        options: list[tuple[tuple[int, int, int], int, list[RunningJob]]] = []
        for n in p.state.cluster.group_nodes[m].tolist():
            ids = running.node_jobs[n]
            if not ids:
                continue
            rj, gone = running.jobs, p.gone
            vs = [r for j in ids if j not in gone and is_victim(r := rj[j])]
            if not vs:
                continue
            vs.sort(key=lambda r: (r.job.priority, r.placement.n_devices, -r.start))
            free = int(alloc.node_whole[n])
            chosen: list[RunningJob] = []
            for r in vs:
                if chosen and free >= want:
                    break
                chosen.append(r)
                if r.placement.milli == WHOLE:
                    free += len(r.placement.devices[r.placement.nodes.index(n)])
            if free < want:
                continue
            cost = (max(r.job.priority for r in chosen), sum(r.placement.n_devices for r in chosen), len(chosen))
            options.append((cost, n, chosen))
        if not options:
            continue
        options.sort(key=lambda t: (t[0], t[1]))
        tries = [options[:need_nodes]] if job.milli == WHOLE else [[o] for o in options[:3]]
        for group in tries:
            victims: dict[int | str, RunningJob] = {}
            for _, _, chosen in group:
                for r in chosen:
                    victims[r.job.id] = r
            for r in victims.values():
                alloc.give(r.placement)
            res = placer.place(alloc, job, [m])
            if res is None:
                for r in victims.values():
                    alloc.take(r.placement)
                continue
            p.failed.clear()  # capacity grew: shapes that failed may fit now
            p.preempt_failed.clear()
            p.hopeless.clear()  # (the running set's LAS queues are as they were: the state is unchanged in a pass)
            for vid, r in victims.items():
                p.gone.add(vid)
                p.out.preemptions.append(Preempt(vid, job.id, reason))
                p.add_usage(r.job.queue, r.model, -r.placement.milli * r.placement.n_devices)
            return res
    return None
