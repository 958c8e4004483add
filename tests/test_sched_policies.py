"""Behaviour of the scheduler core on small clusters where the right answer can be worked out by hand."""

from __future__ import annotations

import pytest

from suanli.errors import UnknownName
from suanli.fleet.model import NodeSpec, build_cluster, generate_cluster
from suanli.sched import QueueConfig, Scheduler
from suanli.workload import Job


def node(name: str, model: str = "H100", devices: int = 8, domain: str | None = None, rack: str = "r0",
         cpu: int = 128, mem_gib: int = 1024) -> NodeSpec:
    return NodeSpec(name, model, devices, cpu * 1000, mem_gib * 1024, domain or name, rack)


def run(sched: Scheduler, jobs: list[Job], now: float = 0.0):
    st = sched.new_state()
    for j in jobs:
        st.submit(j)
    d = sched.decide(st, now)
    st.apply(d, now)
    st.alloc.check_consistency()
    return st, d


def started(d) -> set:
    return {s.job_id for s in d.starts}


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(UnknownName, match="unknown policy 'nope'"):
        Scheduler(generate_cluster(8, "H100"), "nope")


def test_fifo_head_of_line_blocks_later_jobs() -> None:
    c = build_cluster("c", [node("n0"), node("n1")])
    s = Scheduler(c, "fifo")
    jobs = [Job(id="a", count=8, submit_time=0), Job(id="big", count=16, submit_time=1),
            Job(id="small", count=1, submit_time=2)]
    _, d = run(s, jobs)
    assert started(d) == {"a"}  # big does not fit (8 free) and blocks small


def test_backfill_lets_short_jobs_pass_but_protects_the_head() -> None:
    c = build_cluster("c", [node("n0"), node("n1")])
    s = Scheduler(c, "backfill")
    st = s.new_state()
    st.submit(Job(id="run", count=8, submit_time=0, expected_runtime=100))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="head", count=16, submit_time=1, expected_runtime=50))
    st.submit(Job(id="short", count=4, submit_time=2, expected_runtime=50))  # ends at 60 < shadow 100
    st.submit(Job(id="long", count=4, submit_time=3, expected_runtime=500))  # would delay the head
    d = s.decide(st, 10)
    assert started(d) == {"short"}
    assert d.reservation == ("head", 100)


def test_backfill_uses_capacity_the_head_does_not_need() -> None:
    c = build_cluster("c", [node("n0", "H100"), node("n1", "910B")])
    s = Scheduler(c, "backfill")
    jobs = [Job(id="h", count=9, models=("H100",), expected_runtime=10),
            Job(id="other", count=8, models=("910B",), expected_runtime=10_000)]
    _, d = run(s, jobs)
    assert started(d) == {"other"}  # long, but on a model the head cannot use


def test_sjf_runs_shortest_first() -> None:
    c = build_cluster("c", [node("n0", devices=2)])
    s = Scheduler(c, "sjf")
    jobs = [Job(id="long", count=2, expected_runtime=1000, submit_time=0),
            Job(id="short", count=2, expected_runtime=10, submit_time=5)]
    _, d = run(s, jobs)
    assert started(d) == {"short"}


def test_las_preempts_the_job_with_more_attained_service() -> None:
    c = build_cluster("c", [node("n0", devices=4)])
    s = Scheduler(c, "las", las_thresholds=(100.0,))
    st = s.new_state()
    st.submit(Job(id="old", count=4, submit_time=0))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="new", count=4, submit_time=50))
    d = s.decide(st, 50)  # old has 4 x 50 = 200 device-s > 100: lower LAS queue than new (0)
    assert [p.job_id for p in d.preemptions] == ["old"] and started(d) == {"new"}
    st.apply(d, 50)
    assert "old" in st.pending and st.pending.jobs["old"].attained == pytest.approx(200)


def test_las_does_not_preempt_within_the_same_queue() -> None:
    c = build_cluster("c", [node("n0", devices=4)])
    s = Scheduler(c, "las", las_thresholds=(1000.0,))
    st = s.new_state()
    st.submit(Job(id="old", count=4, submit_time=0))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="new", count=4, submit_time=50))
    d = s.decide(st, 50)
    assert not d.preemptions and not d.starts


def test_priority_preemption_picks_lowest_priority_and_never_non_preemptible() -> None:
    c = build_cluster("c", [node("n0", devices=4), node("n1", devices=4)])
    s = Scheduler(c, "fifo")
    st = s.new_state()
    st.submit(Job(id="keep", count=4, priority=0, preemptible=False, submit_time=0))
    st.submit(Job(id="low", count=2, priority=-5, submit_time=1))
    st.submit(Job(id="mid", count=2, priority=1, submit_time=2))
    st.apply(s.decide(st, 0), 0)
    assert len(st.running) == 3
    st.submit(Job(id="urgent", count=2, priority=10, submit_time=3))
    d = s.decide(st, 1)
    assert [p.job_id for p in d.preemptions] == ["low"]
    assert [p.reason for p in d.preemptions] == ["priority"]
    assert started(d) == {"urgent"}


def test_preemption_never_splits_a_gang_and_frees_it_whole() -> None:
    c = build_cluster("c", [node("n0", devices=4, domain="d"), node("n1", devices=4, domain="d")])
    s = Scheduler(c, "fifo")
    st = s.new_state()
    st.submit(Job(id="gang", count=8, priority=0))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="hi", count=2, priority=5))
    d = s.decide(st, 1)
    assert [p.job_id for p in d.preemptions] == ["gang"]
    st.apply(d, 1)
    st.alloc.check_consistency()
    # the whole gang was released: 8 - 2 devices are free again
    assert st.alloc.free_devices() == 6


def test_gang_spans_fewest_nodes_inside_one_domain() -> None:
    nodes = [node(f"a{i}", domain="dA", rack="r0") for i in range(3)] + \
            [node(f"b{i}", domain="dB", rack="r1") for i in range(2)]
    c = build_cluster("c", nodes)
    s = Scheduler(c, "fifo")
    _, d = run(s, [Job(id="g", count=16)])
    (st,) = d.starts
    assert len(st.placement.nodes) == 2
    doms = {c.nodes[n].domain for n in st.placement.nodes}
    assert doms == {"dB"}  # the tightest domain that holds the job


def test_gang_prefers_one_rack_when_no_domain_holds_it() -> None:
    nodes = [node(f"x{i}", rack="r0") for i in range(2)] + [node(f"y{i}", rack="r1") for i in range(3)]
    c = build_cluster("c", nodes)
    _, d = run(Scheduler(c, "fifo"), [Job(id="g", count=24)])
    (st,) = d.starts
    assert {c.nodes[n].rack for n in st.placement.nodes} == {"r1"}


def test_gang_with_remainder_uses_fewest_nodes() -> None:
    c = build_cluster("c", [node(f"n{i}") for i in range(4)])
    _, d = run(Scheduler(c, "fifo"), [Job(id="g", count=12)])
    (st,) = d.starts
    assert sorted(len(x) for x in st.placement.devices) == [4, 8]


def test_gang_is_all_or_nothing() -> None:
    c = build_cluster("c", [node("n0"), node("n1")])
    _, d = run(Scheduler(c, "fifo"), [Job(id="g", count=17)])
    assert not d.starts


def test_heterogeneous_job_gets_the_fastest_model_when_asked() -> None:
    c = build_cluster("c", [node("n0", "910B"), node("n1", "H100")])
    j = Job(id="j", count=4, models=("910B", "H100"))
    _, d = run(Scheduler(c, "fifo", model_order="fastest"), [j])
    assert c.models[d.starts[0].model] == "H100"
    _, d = run(Scheduler(c, "fifo", model_order="listed"), [Job(id="k", count=4, models=("910B", "H100"))])
    assert c.models[d.starts[0].model] == "910B"


def test_job_only_runs_on_acceptable_models() -> None:
    c = build_cluster("c", [node("n0", "H100")])
    _, d = run(Scheduler(c, "sjf"), [Job(id="j", count=1, models=("BR100",))])
    assert not d.starts


def test_fractional_requests_pack_onto_one_device() -> None:
    c = build_cluster("c", [node("n0", devices=2)])
    jobs = [Job(id=i, count=1, milli=250) for i in range(4)]
    _, d = run(Scheduler(c, "fifo"), jobs)
    devs = {s.placement.devices[0][0] for s in d.starts}
    assert len(d.starts) == 4 and len(devs) == 1


def test_fraction_on_multi_die_package_takes_whole_dies() -> None:
    c = build_cluster("c", [node("n0", "BR100", devices=1)])  # BR100: 2 dies
    st, d = run(Scheduler(c, "fifo"), [Job(id=i, count=1, milli=300) for i in range(3)])
    assert [s.placement.milli for s in d.starts] == [500, 500]  # the third does not fit: no straddling
    assert len(st.pending) == 1


def test_cpu_and_memory_are_respected() -> None:
    c = build_cluster("c", [node("small", cpu=4, mem_gib=16), node("big", cpu=64, mem_gib=512)])
    _, d = run(Scheduler(c, "fifo"), [Job(id="j", count=1, cpu_milli=8000, mem_mib=64 * 1024)])
    assert c.nodes[d.starts[0].placement.nodes[0]].name == "big"


def test_cpu_only_job_prefers_cpu_nodes() -> None:
    c = build_cluster("c", [node("gpu"), NodeSpec("cpu", "", 0, 64000, 256 * 1024, "cpu", "r0")])
    _, d = run(Scheduler(c, "fifo"), [Job(id="j", count=0, cpu_milli=2000, mem_mib=1024)])
    assert c.nodes[d.starts[0].placement.nodes[0]].name == "cpu"


def test_down_node_is_not_used() -> None:
    c = build_cluster("c", [node("n0"), node("n1")])
    s = Scheduler(c, "fifo")
    st = s.new_state()
    st.alloc.set_node_up(0, False)
    st.submit(Job(id="j", count=8))
    d = s.decide(st, 0)
    assert d.starts[0].placement.nodes == (1,)


def test_best_fit_packs_single_node_jobs() -> None:
    c = build_cluster("c", [node("n0"), node("n1")])
    s = Scheduler(c, "fifo")
    st = s.new_state()
    st.submit(Job(id="a", count=6))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="b", count=2))
    d = s.decide(st, 0)
    assert d.starts[0].placement.nodes == st.running.jobs["a"].placement.nodes


def test_fair_share_follows_weights() -> None:
    c = build_cluster("c", [node(f"n{i}", devices=1) for i in range(4)])
    qs = [QueueConfig("a", weight=3.0), QueueConfig("b", weight=1.0)]
    jobs = [Job(id=f"a{i}", count=1, queue="a", submit_time=i) for i in range(4)] + \
           [Job(id=f"b{i}", count=1, queue="b", submit_time=i) for i in range(4)]
    _, d = run(Scheduler(c, "fair", queues=qs), jobs)
    got = [s.job_id[0] for s in d.starts]
    assert got.count("a") == 3 and got.count("b") == 1


def test_fair_reclaims_borrowed_quota_by_preemption() -> None:
    c = build_cluster("c", [node(f"n{i}", devices=2) for i in range(2)])
    qs = [QueueConfig("a", quota={"H100": 2}), QueueConfig("b", quota={"H100": 2})]
    s = Scheduler(c, "fair", queues=qs)
    st = s.new_state()
    st.submit(Job(id="b1", count=2, queue="b"))
    st.submit(Job(id="b2", count=2, queue="b"))  # beyond b's quota: borrows a's idle share
    d = s.decide(st, 0)
    st.apply(d, 0)
    assert {x.job_id: x.borrowed for x in d.starts} == {"b1": False, "b2": True}
    st.submit(Job(id="a1", count=2, queue="a"))
    d = s.decide(st, 1)
    assert [(p.job_id, p.reason) for p in d.preemptions] == [("b2", "reclaim")]
    assert started(d) == {"a1"}


def test_fair_without_borrowing_leaves_capacity_idle() -> None:
    c = build_cluster("c", [node("n0", devices=4)])
    qs = [QueueConfig("a", quota={"*": 2}, borrow=False)]
    _, d = run(Scheduler(c, "fair", queues=qs), [Job(id=i, count=2, queue="a") for i in range(2)])
    assert len(d.starts) == 1


def test_decide_leaves_state_unchanged() -> None:
    c = generate_cluster(64, ["H100", "BR100"], 8, nodes_per_domain=2)
    s = Scheduler(c, "backfill")
    st = s.new_state()
    for i in range(40):
        st.submit(Job(id=i, count=[1, 2, 4, 8, 16][i % 5], expected_runtime=100 + i, submit_time=i))
    before = st.alloc.snapshot()
    pend = list(st.pending.jobs)
    d = s.decide(st, 0)
    assert d.starts
    assert st.alloc.snapshot() == before and list(st.pending.jobs) == pend and not st.running.jobs


def test_backfill_moves_a_long_job_to_a_model_the_head_does_not_need() -> None:
    c = build_cluster("c", [node("h", "H100"), node("a", "910B")])
    s = Scheduler(c, "backfill")
    st = s.new_state()
    st.submit(Job(id="run", count=4, models=("H100",), expected_runtime=100))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="head", count=8, models=("H100",), expected_runtime=10, submit_time=1))
    st.submit(Job(id="long", count=2, models=("H100", "910B"), expected_runtime=10_000, submit_time=2))
    d = s.decide(st, 1)
    (start,) = d.starts
    assert start.job_id == "long" and c.models[start.model] == "910B"  # H100 would delay the head


def test_policy_objects_name_their_rules() -> None:
    from suanli.sched.policy import REGISTRY

    assert set(REGISTRY) >= {"fifo", "backfill", "sjf", "las", "fair", "gavel"}
    assert REGISTRY["fifo"].blocking == "block" and REGISTRY["backfill"].blocking == "reserve"
    assert REGISTRY["sjf"].blocking == "skip" and REGISTRY["las"].service_preemption
    assert REGISTRY["fair"].fair_share and REGISTRY["gavel"].heterogeneity_aware


def test_gavel_gives_the_fast_gpu_to_the_job_that_gains_most() -> None:
    c = build_cluster("c", [node("v", "V100-16GB", 1), node("k", "K80", 1)])
    cnn = {"V100-16GB": 1.0, "K80": 0.12}  # gains 8x from the V100
    rec = {"V100-16GB": 1.0, "K80": 0.56}  # gains under 2x
    jobs = [Job(id="rec", count=1, submit_time=0, speeds=rec), Job(id="cnn", count=1, submit_time=1, speeds=cnn)]
    _, d = run(Scheduler(c, "gavel-events"), jobs)
    where = {x.job_id: c.models[x.model] for x in d.starts}
    assert where == {"rec": "K80", "cnn": "V100-16GB"}
    _, d = run(Scheduler(c, "las"), [Job(id=j.id, count=1, submit_time=j.submit_time, speeds=j.speeds) for j in jobs])
    assert {x.job_id: c.models[x.model] for x in d.starts}["rec"] == "V100-16GB"  # agnostic: first come, listed model
    # service on the slow GPU counts for less: a K80 hour is 0.56 of the recommender's best
    st, d = run(Scheduler(c, "gavel-events"), [Job(id="r2", count=1, speeds=rec, models=("K80",))])
    assert st.running.jobs["r2"].attained(3600.0) == pytest.approx(0.56 * 3600)


def test_gavel_moves_a_running_job_to_a_freed_much_faster_gpu() -> None:
    c = build_cluster("c", [node("v", "V100-16GB", 1), node("k", "K80", 1)])
    cnn = {"V100-16GB": 1.0, "K80": 0.12}
    s = Scheduler(c, "gavel-events")
    st = s.new_state()
    st.submit(Job(id="hog", count=1, models=("V100-16GB",), speeds=cnn))
    st.submit(Job(id="cnn", count=1, speeds=cnn, submit_time=1))
    st.apply(s.decide(st, 0), 0)
    assert c.models[st.running.jobs["cnn"].model] == "K80"
    st.stop("hog", 10)  # the V100 is free again: the CNN moves there (8x faster), its work kept by the caller
    d = s.decide(st, 10)
    assert [(p.job_id, p.reason) for p in d.preemptions] == [("cnn", "migrate")]
    assert [(x.job_id, c.models[x.model]) for x in d.starts] == [("cnn", "V100-16GB")]
    st.apply(d, 10)
    st.alloc.check_consistency()
    assert not s.decide(st, 11)  # settled: nothing faster is free
    las = Scheduler(c, "las")
    st2 = las.new_state()
    st2.submit(Job(id="hog", count=1, models=("V100-16GB",), speeds=cnn))
    st2.submit(Job(id="cnn", count=1, speeds=cnn, submit_time=1))
    st2.apply(las.decide(st2, 0), 0)
    st2.stop("hog", 10)
    assert not las.decide(st2, 10)  # heterogeneity-agnostic policies never migrate


def test_job_speeds_from_the_spec_the_planner_or_the_catalog() -> None:
    from suanli.fleet.model import generate_cluster
    from suanli.workload.spec import JobSpec

    c = generate_cluster(48, ["H100", "A100-40GB", "V100"], 8)
    s = Scheduler(c, "gavel-events")
    llm = s.job_speeds(Job(id=1, count=8, llm="llama-3.1-8b", kind="train"))  # the planner's per-chip throughput
    assert llm["H100"] == 1.0 and 0 < llm["A100-40GB"] < 0.6
    peak = s.job_speeds(Job(id=2, count=1))  # no speeds, no LLM: catalog peaks (FP16 for the V100, no BF16)
    assert peak["H100"] == 1.0 and peak["V100-16GB"] == pytest.approx(125 / 989)
    spec = JobSpec.model_validate({"name": "j", "resources": {"accelerators": 1}, "speeds": {"v100": 1.0, "k80": 0.2}})
    assert s.job_speeds(spec.to_job(3)) == {"V100-16GB": 1.0, "K80": 0.2}  # the spec's own, names resolved
    with pytest.raises(ValueError, match="positive"):
        JobSpec.model_validate({"name": "j", "speeds": {"H100": -1}})
