"""Gavel's LP allocation and round-based mechanism (suanli.sched.gavel): hand-checkable LPs, the fairness
properties, the rounds in the scheduler, and the twin (determinism, no over-allocation, LP runs)."""

from __future__ import annotations

import numpy as np
import pytest

from suanli.fleet.model import NodeSpec, build_cluster, generate_nodes
from suanli.sched import Scheduler
from suanli.sched.gavel import equal_share, finish_time_allocation, max_min_allocation
from suanli.workload import Job

ONE = np.ones(2)
FAST_SLOW = np.array([1.0, 1.0])  # one device of each type


def node(name: str, model: str, devices: int = 1) -> NodeSpec:
    return NodeSpec(name, model, devices, 64_000, 256 * 1024, name, "r0")


def thr(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    return (T * X).sum(axis=1)


# -- the LPs, checked by hand ----------------------------------------------------------------------------------------
def test_each_job_gets_the_type_it_is_comparatively_best_at() -> None:
    # A runs 2x faster on the fast type, B 2x faster on the slow one; one device each. X_equal = 1/2 of each type
    # for each (throughput 1.5); the optimum puts A on fast and B on slow: throughput 2 each = 4/3 of equal share.
    T = np.array([[2.0, 1.0], [1.0, 2.0]])
    np.testing.assert_allclose(equal_share(T, ONE, FAST_SLOW), [[0.5, 0.5], [0.5, 0.5]])
    X, t = max_min_allocation(T, ONE, FAST_SLOW)
    np.testing.assert_allclose(X, [[1, 0], [0, 1]], atol=1e-7)
    assert t == pytest.approx(4 / 3)
    # finish-time fairness, both fresh with 100 s of work: rho = (100/2) / (100/1.5) = 0.75 each
    X, rho = finish_time_allocation(T, ONE, FAST_SLOW, elapsed=np.zeros(2), remaining=np.full(2, 100.0))
    np.testing.assert_allclose(X, [[1, 0], [0, 1]], atol=1e-6)
    assert rho == pytest.approx(0.75, rel=1e-4)


def test_at_the_fair_optimum_the_total_throughput_is_maximised() -> None:
    # B runs at 1 anywhere: its ratio is 1 whatever X is, so the max-min value is 1 for any A-share >= 1/2 of fast.
    # The second stage picks the largest total: A all on fast (ratio 4/3), B all on slow.
    T = np.array([[4.0, 2.0], [1.0, 1.0]])
    X, t = max_min_allocation(T, ONE, FAST_SLOW)
    assert t == pytest.approx(1.0)
    np.testing.assert_allclose(X, [[1, 0], [0, 1]], atol=1e-7)


def test_scale_factor_counts_devices_and_a_type_a_job_cannot_use_stays_empty() -> None:
    # 4 fast + 4 slow devices; A needs 4 devices and cannot run on slow (T = 0); B, C need 2 each and run at 1
    # everywhere. Equal share: A 4/(3x4) = 1/3 of the time on fast (throughput 2/3); B, C 2/3 of each type, scaled to
    # 1/2 + 1/2 (throughput 1). B and C can never beat ratio 1 (speed 1, one type at a time), so the max-min value is
    # 1; the largest total then has A on fast all the time (ratio 3) and B, C on slow all the time (2 + 2 devices).
    T = np.array([[2.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    s = np.array([4.0, 2.0, 2.0])
    cap = np.array([4.0, 4.0])
    X, t = max_min_allocation(T, s, cap)
    assert X[0, 1] == 0.0
    assert ((s[:, None] * X).sum(axis=0) <= cap + 1e-7).all()
    np.testing.assert_allclose(X[0], [1.0, 0.0], atol=1e-7)  # A alone on fast all the time
    np.testing.assert_allclose(X[1:, 1], [1.0, 1.0], atol=1e-7)  # B and C both fit on slow, all the time
    eq = thr(T, equal_share(T, s, cap))
    np.testing.assert_allclose(eq, [2 / 3, 1, 1])
    assert t == pytest.approx(1.0) and thr(T, X) / eq == pytest.approx([3, 1, 1])


@pytest.mark.parametrize("seed", range(6))
def test_allocations_are_feasible_and_fair_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(2, 40)), int(rng.integers(1, 4))
    T = rng.uniform(0.05, 1.0, (m, n)) * (rng.random((m, n)) > 0.2)
    T[T.sum(axis=1) == 0, 0] = 0.5  # every job runs somewhere
    s = rng.choice([1.0, 2.0, 4.0, 8.0], m)
    cap = rng.integers(8, 40, n).astype(float)
    eq = thr(T, equal_share(T, s, cap))
    el, rem = rng.uniform(0, 1e4, m), rng.uniform(10, 1e5, m)
    iso = el + rem / eq
    worst = []
    for X in (max_min_allocation(T, s, cap)[0], finish_time_allocation(T, s, cap, el, rem)[0]):
        assert (X >= -1e-9).all() and (X.sum(axis=1) <= 1 + 1e-7).all()  # a job is on one type at a time
        assert ((s[:, None] * X).sum(axis=0) <= cap + 1e-6).all()  # no type over-allocated
        assert (X[T == 0] == 0).all()
        worst.append(max((el + rem / thr(T, X)) / iso))
    Xm, _ = max_min_allocation(T, s, cap)
    # sharing incentive: under max-min no job gets less than with its equal share
    assert (thr(T, Xm) / eq >= 1 - 1e-6).all()
    # finish-time fairness: nobody worse than with an equal share (rho <= 1), and the worst rho no larger than
    # max-min's (it is what that objective minimises)
    assert worst[1] <= 1 + 1e-6 and worst[1] <= worst[0] * (1 + 2e-3)


@pytest.mark.parametrize("seed", range(4))
def test_alike_jobs_share_one_lp_row_without_changing_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kinds = rng.uniform(0.05, 1.0, (4, 3))
    pick = rng.integers(4, size=30)
    s_kind = rng.choice([1.0, 2.0, 4.0], 4)
    T, s, cap = kinds[pick], s_kind[pick], np.array([10.0, 12.0, 16.0])
    X, t = max_min_allocation(T, s, cap)  # one row per job
    _, first, inv, cnt = np.unique(np.column_stack([T, s]), axis=0, return_index=True, return_inverse=True,
                                      return_counts=True)
    Xc, tc = max_min_allocation(T[first], s[first], cap, count=cnt)  # one row per kind of job
    Xa = Xc[inv.reshape(-1)]
    eq = thr(T, equal_share(T, s, cap))
    np.testing.assert_allclose(eq[first], thr(T[first], equal_share(T[first], s[first], cap, cnt)))
    assert tc == pytest.approx(t, rel=1e-6)
    assert (thr(T, Xa) / eq).sum() == pytest.approx((thr(T, X) / eq).sum(), rel=1e-6)
    assert ((s[:, None] * Xa).sum(axis=0) <= cap + 1e-6).all() and (Xa.sum(axis=1) <= 1 + 1e-7).all()


# -- the mechanism in the scheduler ----------------------------------------------------------------------------------
def two_types() -> tuple:
    return build_cluster("c", [node("v", "V100-16GB"), node("k", "K80")])


def test_a_round_places_jobs_as_the_lp_says() -> None:
    c = two_types()
    s = Scheduler(c, "gavel")
    st = s.new_state()
    st.submit(Job(id="a", count=1, speeds={"V100-16GB": 1.0, "K80": 0.25}))  # gains 4x from the V100
    st.submit(Job(id="b", count=1, speeds={"V100-16GB": 1.0, "K80": 1.0}))  # gains nothing
    # b's throughput is 1 wherever it runs, so max-min is 1 for any X that gives a half the V100 or more; the
    # largest total has a on the V100 all the time, b on the K80 all the time
    d = s.decide(st, 0.0)  # t = 0 is a round end
    assert {x.job_id: c.models[x.model] for x in d.starts} == {"a": "V100-16GB", "b": "K80"}
    assert s.pol.lp_runs == 1
    st.apply(d, 0.0)
    st.alloc.check_consistency()
    assert not s.decide(st, 360.0)  # next round: the same X, nothing moves
    assert s.pol.lp_runs == 1  # same job set: the LP did not run again


def test_rounds_time_share_one_device_and_keep_the_work() -> None:
    c = build_cluster("c", [node("v", "V100-16GB")])
    s = Scheduler(c, "gavel", policy_options={"gavel": {"round_s": 100.0}})
    st = s.new_state()
    st.submit(Job(id=1, count=1, expected_runtime=1000, speeds={"V100-16GB": 1.0}))
    st.submit(Job(id=2, count=1, expected_runtime=1000, speeds={"V100-16GB": 1.0}))
    d = s.decide(st, 0.0)
    assert [x.job_id for x in d.starts] == [1]  # X = 1/2 each; ties go by submission
    st.apply(d, 0.0)
    assert not s.decide(st, 50.0)  # between round ends nobody is preempted
    d = s.decide(st, 100.0)  # job 1 had its share (fraction 1 > X); job 2 has had none
    assert [(p.job_id, p.reason) for p in d.preemptions] == [(1, "round")] and [x.job_id for x in d.starts] == [2]
    st.apply(d, 100.0)
    assert st.pending.jobs[1].model_s == {0: 100.0}  # the state kept its run time per model
    d = s.decide(st, 200.0)
    assert [p.job_id for p in d.preemptions] == [2] and [x.job_id for x in d.starts] == [1]


def test_between_rounds_free_devices_go_to_waiting_jobs_without_preemption() -> None:
    c = two_types()
    s = Scheduler(c, "gavel")
    st = s.new_state()
    st.submit(Job(id="a", count=1, speeds={"V100-16GB": 1.0, "K80": 0.5}))
    st.apply(s.decide(st, 0.0), 0.0)
    st.submit(Job(id="b", count=1, speeds={"V100-16GB": 1.0, "K80": 0.9}, submit_time=10))
    d = s.decide(st, 10.0)  # mid-round: b takes the free K80, a keeps the V100
    assert not d.preemptions and [(x.job_id, c.models[x.model]) for x in d.starts] == [("b", "K80")]


def test_jobs_beyond_the_finish_time_lp_cap_still_get_spare_devices() -> None:
    c = build_cluster("c", [node("v", "V100-16GB", 2)])
    s = Scheduler(c, "gavel", policy_options={"gavel": {"objective": "finish-time", "max_lp_jobs": 1}})
    st = s.new_state()
    for i in range(2):
        st.submit(Job(id=i, count=1, expected_runtime=100, submit_time=float(i), speeds={"V100-16GB": 1.0}))
    d = s.decide(st, 3600.0)
    assert sorted(x.job_id for x in d.starts) == [0, 1] and s.pol.lp_jobs == 1


def test_options_are_checked() -> None:
    c = two_types()
    with pytest.raises(ValueError, match="objective"):
        Scheduler(c, "gavel", policy_options={"gavel": {"objective": "fastest"}})
    with pytest.raises(ValueError, match="round_s"):
        Scheduler(c, "gavel", policy_options={"gavel": {"round_s": 0}})
    with pytest.raises(ValueError, match="takes no option 'rounds'"):
        Scheduler(c, "gavel", policy_options={"gavel": {"rounds": 3}})
    Scheduler(c, "fifo", policy_options={"gavel": {"objective": "finish-time"}})  # another policy's: ignored


# -- the twin --------------------------------------------------------------------------------------------------------
def hetero_cluster(per_type: int = 8):
    nodes = []
    for m in ("V100-16GB", "P100", "K80"):
        nodes += generate_nodes(per_type, m, 4)
    return build_cluster("mixed", nodes)


@pytest.mark.parametrize("objective", ["max-min", "finish-time"])
def test_twin_runs_are_deterministic_complete_and_never_over_allocate(objective: str) -> None:
    from suanli.sim.engine import SimConfig, Simulation
    from suanli.sim.hetero import gavel_workload

    c = hetero_cluster()
    w = gavel_workload(60, 8.0, seed=3).fix_estimates()
    opts = {"objective": objective, "round_s": 1800.0}  # longer rounds than Gavel's 6 min: a faster test
    cfg = SimConfig(policy="gavel", sched_kwargs={"policy_options": {"gavel": opts}})
    a, b = Simulation(c, w, cfg), Simulation(c, w, cfg)
    ra, rb = a.run(), b.run()
    np.testing.assert_array_equal(ra.finish, rb.finish)
    np.testing.assert_array_equal(ra.preemptions, rb.preemptions)
    assert np.isfinite(ra.finish).all()  # every job completed
    assert (ra.timeline_busy <= c.n_devices + 1e-9).all()
    # jobs ran at their type's speed: no job finished before its work at its fastest speed
    fastest = np.array([max(w.type_speeds[t].values()) for t in w.job_type])
    assert (ra.finish - w.submit >= w.duration / fastest - 1e-6).all()
    # the LP ran only when the job set changed at a round end: at most once per arrival or completion
    assert 0 < a.sched.pol.lp_runs <= 2 * len(w) and a.sched.pol.lp_runs < ra.decide_calls


# -- the CLI ---------------------------------------------------------------------------------------------------------
def test_sim_cli_runs_gavel_with_either_objective() -> None:
    import json

    from typer.testing import CliRunner

    from suanli.cli.main import app

    for obj in ("max-min", "finish-time"):
        res = CliRunner().invoke(app, ["sim", "--accelerator", "V100,K80", "--chips", "32", "--per-node", "4",
                                       "--jobs", "80", "--compare", "gavel,fifo", "--gavel-objective", obj,
                                       "--gavel-round", "600", "--json"])
        assert res.exit_code == 0, (res.output, res.exception)
        out = json.loads(res.output)
        assert [r["policy"] for r in out] == ["gavel", "fifo"]
        assert out[0]["gavel_objective"] == obj and out[0]["gavel_round_s"] == 600 and "gavel_objective" not in out[1]
        assert out[0]["completed"] == out[1]["completed"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--gavel-objective", "fastest"], "--gavel-objective must be one of max-min, finish-time"),
    (["--gavel-round", "0"], "--gavel-round must be a positive number"),
])
def test_sim_cli_bad_gavel_options_are_one_line_exit_2(args: list[str], needle: str) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "suanli.cli.main", "sim", "--jobs", "10", "--policy", "gavel", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


# -- random scenarios: rounds and fills never over-allocate, decide stays pure --------------------------------------
def test_random_rounds_keep_the_state_consistent() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    models = ("V100-16GB", "P100", "K80")

    @st.composite
    def scenario(draw: st.DrawFn):
        nodes = [NodeSpec(f"n{i}", draw(st.sampled_from(models)), draw(st.integers(1, 4)), 64_000, 256 * 1024,
                          f"d{i}", "r0") for i in range(draw(st.integers(1, 5)))]
        jobs = []
        for i in range(draw(st.integers(1, 14))):
            frac = draw(st.booleans()) and draw(st.booleans())
            ms = draw(st.one_of(st.none(), st.lists(st.sampled_from(models), min_size=1, max_size=2, unique=True)))
            jobs.append(Job(id=i, count=1 if frac else draw(st.integers(0, 6)),
                            milli=draw(st.integers(100, 900)) if frac else 1000,
                            models=tuple(ms) if ms else None, submit_time=float(i),
                            expected_runtime=draw(st.floats(10, 5000)),
                            preemptible=draw(st.integers(0, 4)) > 0,
                            speeds={m: draw(st.floats(0.05, 1.0)) for m in models}))
        steps = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 2)), min_size=1, max_size=8))
        return build_cluster("r", nodes), jobs, steps, draw(st.sampled_from(["max-min", "finish-time"]))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenario())
    def check(sc) -> None:
        c, jobs, steps, obj = sc
        s = Scheduler(c, "gavel", policy_options={"gavel": {"objective": obj, "round_s": 100.0}})
        state = s.new_state()
        batches = [jobs[i::len(steps)] for i in range(len(steps))]
        now = 0.0
        for (mid, stop_k), batch in zip(steps, batches, strict=True):
            now = (int(now // 100) + 1) * 100.0 - (50.0 if mid else 0.0)  # a round end or the middle of a round
            for j in batch:
                state.submit(j)
            before = state.alloc.snapshot()
            d = s.decide(state, now)
            assert state.alloc.snapshot() == before  # decide is pure
            again = s.decide(state, now)  # the same jobs on the same models (the placer may pick other equal nodes)
            assert [(x.job_id, x.model) for x in again.starts] == [(x.job_id, x.model) for x in d.starts]
            if mid:
                assert not d.preemptions  # nobody is preempted between round ends
            for p in d.preemptions:
                assert state.running.jobs[p.job_id].job.preemptible and p.reason == "round"
            state.apply(d, now)
            state.alloc.check_consistency()
            for jid in list(state.running.jobs)[:stop_k]:
                state.stop(jid, now)

    check()
