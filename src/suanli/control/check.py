"""Store consistency check: compares the job, attempt and event tables (used after soak runs with controller
SIGKILLs; ``bench/store_check.py`` is its command line).

Per job it checks that:

- the state-change events, replayed from ``pending`` through the workload state machine, are legal and end in the
  job's state (no lost or invented transition);
- ``jobs.attempts`` equals its attempt rows, numbered 1..n, and one ``running`` event was written per attempt;
- attempts never overlap in time (an attempt starts after the previous one ended: nothing ran twice at once) and
  at most one is open - the last, exactly when the job is running;
- a terminal job has no open attempt; a succeeded job's last attempt succeeded;
- usage (accounting): every ended attempt with chips has one record per node with chips, its chip-seconds those the
  attempt implies and its outcome the attempt's; an open attempt has none (nothing counted twice or missed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import sqlalchemy as sa

from suanli.control.db import job_attempts, job_events, jobs, usage
from suanli.control.usage import chips_per_node
from suanli.workload.states import InvalidTransition, JobState, check_transition

_STATES = {s.value for s in JobState}
_TERMINAL = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}


@dataclass
class CheckResult:
    jobs: int = 0
    attempts: int = 0
    events: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, msg: str, keep: int = 50) -> None:
        self.problem_count += 1
        if len(self.problems) < keep:
            self.problems.append(msg)


def check_store(engine: sa.Engine, *, chunk: int = 5000) -> CheckResult:
    """Check every job (in chunks of ids, so memory stays bounded at any size)."""
    res = CheckResult()
    with engine.connect() as c:
        max_id = int(c.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0)
        lo = 0
        while lo < max_id:
            hi = lo + chunk
            rows = c.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts)
                             .where(jobs.c.id > lo, jobs.c.id <= hi)).all()
            att: dict[int, list[Any]] = defaultdict(list)
            for a in c.execute(sa.select(job_attempts.c.job_id, job_attempts.c.n, job_attempts.c.started_at,
                                         job_attempts.c.ended_at, job_attempts.c.outcome, job_attempts.c.id,
                                         job_attempts.c.placement)
                               .where(job_attempts.c.job_id > lo, job_attempts.c.job_id <= hi)
                               .order_by(job_attempts.c.job_id, job_attempts.c.n)).all():
                att[a.job_id].append(a)
            ev: dict[int, list[str]] = defaultdict(list)
            for e in c.execute(sa.select(job_events.c.job_id, job_events.c.kind)
                               .where(job_events.c.job_id > lo, job_events.c.job_id <= hi)
                               .order_by(job_events.c.job_id, job_events.c.id)).all():
                ev[e.job_id].append(e.kind)
            for r in rows:
                _check_job(res, r, att.get(r.id, []), ev.get(r.id, []))
            use: dict[int, list[Any]] = defaultdict(list)
            for u in c.execute(sa.select(usage.c.attempt_id, usage.c.node, usage.c.chip_s, usage.c.outcome)
                               .where(usage.c.job_id > lo, usage.c.job_id <= hi)).all():
                use[u.attempt_id].append(u)
            for a_list in att.values():
                for a in a_list:
                    _check_usage(res, a, use.pop(a.id, []))
            for aid in use:
                res.add(f"usage records of attempt {aid}, which is not in the store")
            lo = hi
    return res


def _check_job(res: CheckResult, r: Any, att: list[Any], kinds: list[str]) -> None:
    jid, state = int(r.id), str(r.state)
    res.jobs += 1
    res.attempts += len(att)
    res.events += len(kinds)
    res.by_state[state] = res.by_state.get(state, 0) + 1
    cur = JobState.PENDING
    runs = 0
    for k in kinds:
        if k not in _STATES or k == JobState.PENDING.value:
            continue
        try:
            cur = check_transition(cur, k)
        except InvalidTransition as e:
            res.add(f"job {jid}: illegal event sequence: {e}")
            return
        runs += k == JobState.RUNNING.value
    if cur.value != state:
        res.add(f"job {jid}: events end in {cur.value} but the job is {state}")
    if int(r.attempts) != len(att):
        res.add(f"job {jid}: attempts column {r.attempts} but {len(att)} attempt rows")
    if [a.n for a in att] != list(range(1, len(att) + 1)):
        res.add(f"job {jid}: attempt numbers {[a.n for a in att]}")
    if runs != len(att):
        res.add(f"job {jid}: {runs} running events for {len(att)} attempts")
    open_ = [a for a in att if a.ended_at is None]
    if len(open_) > 1 or (open_ and open_[0] is not att[-1]):
        res.add(f"job {jid}: attempts {[a.n for a in open_]} open at once")
    if (state == JobState.RUNNING.value) != bool(open_):
        res.add(f"job {jid}: state {state} with {len(open_)} open attempts")
    for a, b in pairwise(att):
        if a.ended_at is None or b.started_at < a.ended_at - 1e-6:
            res.add(f"job {jid}: attempt {b.n} started before attempt {a.n} ended (ran twice)")
    if state == JobState.SUCCEEDED.value and (not att or att[-1].outcome != "succeeded"):
        res.add(f"job {jid}: succeeded but its last attempt's outcome is {att[-1].outcome if att else None}")
    if state in _TERMINAL and open_:
        res.add(f"job {jid}: {state} with an open attempt")


def _check_usage(res: CheckResult, a: Any, recs: list[Any]) -> None:
    where = f"job {a.job_id} attempt {a.n}"
    if a.ended_at is None:
        if recs:
            res.add(f"{where}: open, but {len(recs)} usage records")
        return
    per = chips_per_node(a.placement)
    if sorted(r.node for r in recs) != sorted(n for n, _, _ in per):
        res.add(f"{where}: usage records on {sorted(r.node for r in recs)}, chips on {sorted(n for n, _, _ in per)}")
        return
    want = sum(ch for _, _, ch in per) * (a.ended_at - a.started_at)
    got = sum(r.chip_s for r in recs)
    if abs(got - want) > 1e-6 * max(1.0, want):
        res.add(f"{where}: usage {got:.3f} chip-seconds, the attempt implies {want:.3f}")
    if any(str(r.outcome) != str(a.outcome) for r in recs):
        res.add(f"{where}: usage outcome {recs[0].outcome}, attempt outcome {a.outcome}")

