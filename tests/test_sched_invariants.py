"""Property-based invariants of the scheduler core (hypothesis).

For random clusters, job mixes, policies and event sequences: no device, CPU or memory is ever over-allocated;
a gang is placed whole or not at all; guaranteed (non-borrowed) usage never exceeds a queue's quota; preemption
only takes whole, preemptible jobs that the policy allows; decide() is pure; same inputs, same decisions.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.fleet.model import NodeSpec, build_cluster
from suanli.sched import POLICIES, QueueConfig, Scheduler
from suanli.workload import Job

MODELS = ("H100", "910B", "BR100")
QUEUES = ("a", "b", "c")


@st.composite
def clusters(draw: st.DrawFn):
    n = draw(st.integers(1, 6))
    nodes = []
    for i in range(n):
        model = draw(st.sampled_from(MODELS))
        nodes.append(NodeSpec(
            name=f"n{i}", accelerator=model, devices=draw(st.integers(1, 8)),
            cpu_milli=draw(st.integers(1, 64)) * 1000, memory_mib=draw(st.integers(1, 256)) * 1024,
            domain=f"{model}-d{draw(st.integers(0, 2))}", rack=f"r{draw(st.integers(0, 1))}",
        ))
    if draw(st.booleans()):
        nodes.append(NodeSpec("cpu0", "", 0, 32000, 64 * 1024, "cpu", "r0"))
    return build_cluster("h", nodes)


@st.composite
def jobs(draw: st.DrawFn, i: int):
    frac = draw(st.booleans()) and draw(st.booleans())
    count = 1 if frac else draw(st.integers(0, 20))
    models = draw(st.one_of(st.none(), st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)))
    return Job(
        id=i, count=count, milli=draw(st.integers(1, 999)) if frac else 1000,
        models=tuple(models) if models else None,
        per_node=draw(st.one_of(st.none(), st.integers(1, 8))) if count > 1 else None,
        cpu_milli=draw(st.integers(0, 16)) * 1000, mem_mib=draw(st.integers(0, 64)) * 1024,
        gang=draw(st.booleans()) if count > 1 else True,
        priority=draw(st.integers(-2, 2)), queue=draw(st.sampled_from(QUEUES)),
        submit_time=float(i), expected_runtime=draw(st.one_of(st.none(), st.floats(1, 1000))),
        preemptible=draw(st.booleans()) or True,
    )


@st.composite
def scenarios(draw: st.DrawFn):
    c = draw(clusters())
    policy = draw(st.sampled_from(POLICIES))
    quotas = [QueueConfig(q, weight=draw(st.floats(0.5, 4)),
                          quota={draw(st.sampled_from((*MODELS, "*"))): draw(st.integers(0, 16))},
                          borrow=draw(st.booleans())) for q in QUEUES]
    n = draw(st.integers(1, 25))
    js = [draw(jobs(i)) for i in range(n)]
    steps = draw(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 500)), min_size=1, max_size=6))
    return c, policy, quotas, js, steps


def simulate(c, policy, quotas, js, steps, check: bool):
    s = Scheduler(c, policy, queues=quotas, las_thresholds=(50.0, 500.0))
    state = s.new_state()
    batches = [js[i::len(steps)] for i in range(len(steps))]
    trace = []
    now = 0.0
    for (stop_k, dt), batch in zip(steps, batches, strict=True):
        now += dt
        for j in batch:
            state.submit(j)
        before = state.alloc.snapshot()
        pend = sorted(map(str, state.pending.jobs))
        run = sorted(map(str, state.running.jobs))
        d = s.decide(state, now)
        if check:
            assert state.alloc.snapshot() == before, "decide changed the allocation"
            assert sorted(map(str, state.pending.jobs)) == pend and sorted(map(str, state.running.jobs)) == run
            check_decisions(s, state, d)
        trace.append(([(x.job_id, x.placement, x.model, x.borrowed) for x in d.starts],
                      [(p.job_id, p.for_job, p.reason) for p in d.preemptions]))
        state.apply(d, now)
        if check:
            state.alloc.check_consistency()
            check_quotas(s, state)
        for jid in list(state.running.jobs)[:stop_k]:
            state.stop(jid, now)
    return trace


def check_decisions(s: Scheduler, state, d) -> None:
    c = s.cluster
    victims = {p.job_id for p in d.preemptions}
    for p in d.preemptions:
        r = state.running.jobs[p.job_id]  # only running jobs are preempted, each as a whole job
        assert r.job.preemptible
        if p.reason in ("round", "migrate"):  # gavel's round / a move to a faster model: the job itself
            assert p.for_job == p.job_id
            continue
        by = state.pending.jobs[p.for_job]
        if p.reason == "priority":
            assert r.job.priority < by.priority
        elif p.reason == "reclaim":
            assert r.borrowed and r.job.queue != by.queue
        else:
            assert p.reason == "las" and r.job.priority <= by.priority
    assert len(victims) == len(d.preemptions)
    seen: set[int] = set()
    for x in d.starts:
        j = state.pending.jobs[x.job_id] if x.job_id in state.pending.jobs else state.running.jobs[x.job_id].job
        assert x.job_id in state.pending.jobs or x.job_id in victims, "a running job restarts only if preempted"
        pl = x.placement
        assert pl.n_devices == j.count, "a gang is placed whole"
        if j.count:
            assert j.milli <= pl.milli <= 1000
            model = c.models[x.model]
            assert j.models is None or model in j.models
            for n, ds in zip(pl.nodes, pl.devices, strict=True):
                assert all(int(c.dev_node[dv]) == n for dv in ds)
                assert all(int(c.dev_model[dv]) == x.model for dv in ds)
            if pl.milli == 1000:
                assert not (set(pl.device_ids) & seen), "a whole device given twice in one pass"
                seen |= set(pl.device_ids)
        assert sum(pl.cpu_milli) >= j.cpu_milli and sum(pl.mem_mib) >= j.mem_mib


def check_quotas(s: Scheduler, state) -> None:
    if s.policy != "fair":
        return
    names = s.cluster.models
    for q, use in state.running.usage.items():
        qc = s.queue_config(q)
        borrowed = state.running.borrowed_usage.get(q)
        for m, name in enumerate(names):
            guaranteed = int(use[m]) - (int(borrowed[m]) if borrowed is not None else 0)
            quota = qc.quota_for(name)
            assert guaranteed <= (quota or 0) * 1000, f"queue {q} exceeds its quota on {name}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_hold(scn) -> None:
    simulate(*scn, check=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_same_inputs_same_decisions(scn) -> None:
    import copy

    a = simulate(*copy.deepcopy(scn), check=False)
    b = simulate(*copy.deepcopy(scn), check=False)
    assert a == b
