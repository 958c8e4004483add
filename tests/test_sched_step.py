"""The fused entry points give what the plain ones give: ``Scheduler.step`` = ``decide`` + ``SchedState.apply`` and
``Scheduler.submit_and_step`` = ``SchedState.submit`` + ``step`` (the same decisions, the same resulting state),
whether the lone-job shortcut applies (an arrival on an idle queue with room) or the full pass runs (the job does
not fit, something could be preempted for it, other jobs wait, the policy preempts by service)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.fleet.model import NodeSpec, build_cluster
from suanli.sched import POLICIES, Scheduler
from suanli.sched.core import _Pass
from suanli.workload import Job

MODELS = ("H100", "910B")


def _cluster(n_nodes: int, seed: int):
    rng = random.Random(seed)
    models = [rng.choice(MODELS) for _ in range(n_nodes)]
    nodes = [NodeSpec(name=f"n{i}", accelerator=m, devices=rng.choice((2, 4, 8)), cpu_milli=64000,
                      memory_mib=256 * 1024, domain=f"{m}-d{i // 2}", rack=f"r{i // 4}")
             for i, m in enumerate(models)]
    return build_cluster("t", nodes)


def _jobs(n: int, seed: int) -> list[tuple[float, Job]]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for i in range(n):
        gap = 80.0 if i < n // 2 else 5.0  # light load first (jobs start on arrival), then contention
        t += rng.choice((0.0, rng.expovariate(1 / gap), rng.expovariate(1 / gap)))  # some arrivals share an instant
        count = rng.choice((1, 1, 2, 4, 8, 12) if i < n // 2 else (1, 2, 4, 8))
        out.append((t, Job(id=i, count=count, models=rng.choice((None, ("H100",), ("910B", "H100"))),
                           priority=rng.choice((0, 0, 0, 1)), queue=rng.choice(("a", "b")), submit_time=t,
                           expected_runtime=rng.uniform(10, 200), preemptible=rng.random() < 0.8, seq=i)))
    return out


def _state_view(state) -> tuple[object, ...]:
    run = sorted((str(k), r.placement, r.model, r.start, r.borrowed) for k, r in state.running.jobs.items())
    return (state.alloc.snapshot(), sorted(map(str, state.pending.jobs)), run,
            sorted((str(j.id), j.attained, j.las_base) for j in state.pending.jobs.values()))


def _drive(policy: str, seed: int, fused: bool) -> list[object]:
    """Arrivals, completions (each job runs its expected runtime) and scheduler calls on a small cluster; returns
    what was decided and the state after every call."""
    c = _cluster(4, seed)
    s = Scheduler(c, policy, las_thresholds=(50.0, 500.0))
    state = s.new_state()
    trace: list[object] = []
    arrivals = _jobs(80, seed)
    ends: dict[int, float] = {}
    i = 0
    while i < len(arrivals) or ends:
        t_next = arrivals[i][0] if i < len(arrivals) else float("inf")
        t_end = min(ends.values(), default=float("inf"))
        now = min(t_next, t_end)
        for jid in [j for j, e in ends.items() if e == now]:
            del ends[jid]
            state.stop(jid, now)
        batch = []
        while i < len(arrivals) and arrivals[i][0] == now:
            batch.append(arrivals[i][1])
            i += 1
        if fused and len(batch) == 1:
            d, started = s.submit_and_step(state, batch[0], now)
        else:
            for j in batch:
                state.submit(j)
            if fused:
                d, started = s.step(state, now)
            else:
                d = s.decide(state, now)
                started = None
        if started is None:
            for p in d.preemptions:
                ends.pop(p.job_id, None)
            started = state.apply(d, now)
        for r in started:
            ends[r.job.id] = now + (r.job.expected_runtime or 1.0)
        state.alloc.check_consistency()
        trace.append(([(x.job_id, x.placement, x.model, x.borrowed, x.promoted) for x in d.starts],
                      [(p.job_id, p.for_job, p.reason) for p in d.preemptions], sorted(d.waiting.items()),
                      d.rest, _state_view(state)))
    return trace


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "gavel"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fused_calls_decide_as_decide_and_apply(policy: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _drive(policy, seed, fused=False)
    lone = 0
    start_lone = Scheduler._start_lone

    def counting(self: Scheduler, *a: object) -> object:
        nonlocal lone
        r = start_lone(self, *a)  # type: ignore[arg-type]
        lone += r is not None
        return r

    monkeypatch.setattr(Scheduler, "_start_lone", counting)
    fused = _drive(policy, seed, fused=True)
    assert len(plain) == len(fused) > 100
    assert fused == plain
    assert any(t[0] for t in plain) and any(t[1] for t in plain) and any(t[2] for t in plain)  # starts,
    # preemptions and waiting jobs; the shortcut taken by the policies it is for
    assert (lone > 5) == (policy in ("fifo", "backfill", "sjf"))


def test_submit_and_step_lone_job_that_cannot_start_waits() -> None:
    c = _cluster(1, 0)
    n = c.n_devices
    s = Scheduler(c, "fifo")
    state = s.new_state()
    d, started = s.submit_and_step(state, Job(id=1, count=n, submit_time=0.0, seq=1), 0.0)
    assert [r.job.id for r in started] == [1] and not state.pending.jobs  # the shortcut: started at once
    d, started = s.submit_and_step(state, Job(id=2, count=n, submit_time=1.0, seq=2), 1.0)  # no room now
    assert started == [] and not d.starts and set(state.pending.jobs) == {2} and d.waiting[2]
    d, started = s.submit_and_step(state, Job(id=3, count=1, submit_time=2.0, seq=3), 2.0)  # fifo: behind 2
    assert started == [] and set(state.pending.jobs) == {2, 3}
    state.stop(1, 3.0)
    d, started = s.step(state, 3.0)
    assert [r.job.id for r in started] == [2] and set(state.pending.jobs) == {3}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.floats(0, 2000))
def test_max_running_las_queue_is_the_maximum(seed: int, now: float) -> None:
    rng = random.Random(seed)
    c = _cluster(4, seed)
    s = Scheduler(c, "las", las_thresholds=(50.0, 500.0))
    state = s.new_state()
    for i in range(rng.randint(0, 12)):
        j = Job(id=i, count=rng.choice((1, 2, 4)), submit_time=0.0, preemptible=rng.random() < 0.7, seq=i)
        j.attained = rng.choice((0.0, rng.uniform(0, 1500)))
        state.submit(j)
    state.apply(s.decide(state, 0.0), 0.0)
    p = _Pass(s, state, now)
    want = max((s.las_queue(r.served(now)) for r in state.running.jobs.values() if r.job.preemptible), default=-1)
    assert p.max_running_las_queue() == want
