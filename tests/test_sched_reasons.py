"""Why a job waits: the reason the scheduling pass records for each pending job it did not start, on small
clusters where it can be worked out by hand; and the sentences built from them."""

from __future__ import annotations

from suanli.fleet.model import NodeSpec, build_cluster
from suanli.sched import QueueConfig, Scheduler
from suanli.sched.reasons import Reason, counts, describe
from suanli.workload import Job


def node(name: str, model: str = "H100", devices: int = 8, domain: str | None = None) -> NodeSpec:
    return NodeSpec(name, model, devices, 128_000, 1 << 20, domain or name, "r0")


def two(model: str = "H100", devices: int = 8) -> Scheduler:
    return Scheduler(build_cluster("c", [node("n0", model, devices), node("n1", model, devices)]), "fifo")


def test_fifo_capacity_then_everyone_behind_the_head() -> None:
    s = two()
    st = s.new_state()
    for j in (Job(id="a", count=8, submit_time=0), Job(id="big", count=16, submit_time=1),
              Job(id="small", count=1, submit_time=2), Job(id="x", count=1, submit_time=3)):
        st.submit(j)
    d = s.decide(st, 0)
    assert [x.job_id for x in d.starts] == ["a"]
    assert d.waiting == {"big": (Reason.CAPACITY, 8)}  # 16 needed, 8 free after a
    assert d.rest == (Reason.BEHIND, "big")
    st.apply(d, 0)
    assert counts(d.waiting, len(st.pending), d.rest) == {Reason.CAPACITY: 1, Reason.BEHIND: 2}
    assert describe(d.waiting["big"], st.pending.jobs["big"], s.cluster) == \
        "waiting for capacity: needs 16 H100; 8 free"
    assert describe(d.rest) == "behind job big (fifo: the first job that cannot start blocks the ones after it)"


def test_enough_free_devices_but_not_on_one_node_is_topology() -> None:
    s = two()
    st = s.new_state()
    st.submit(Job(id="a", count=5, submit_time=0, per_node=5))
    st.submit(Job(id="b", count=5, submit_time=1, per_node=5))
    st.apply(s.decide(st, 0), 0)  # 3 free on each node
    st.submit(Job(id="g", count=4, per_node=4, submit_time=2))
    d = s.decide(st, 1)
    assert d.waiting == {"g": (Reason.TOPOLOGY, 6)}
    assert "needs 4 H100 (4 per node); 6 free, but not where it fits" in describe(
        d.waiting["g"], st.pending.jobs["g"], s.cluster)


def test_never_when_no_node_has_the_model_or_enough_devices() -> None:
    for job, fact in ((Job(id="m", count=1, models=("910B",)), None),
                      (Job(id="n", count=64), "the cluster has 16")):
        s = two()
        st = s.new_state()
        st.submit(job)
        d = s.decide(st, 0)
        assert d.waiting == {job.id: (Reason.NEVER, fact)}
        assert describe(d.waiting[job.id], job).startswith("can never run")


def test_fair_queue_at_its_quota_without_borrowing() -> None:
    c = build_cluster("c", [node("n0")])
    s = Scheduler(c, "fair", queues=[QueueConfig("a", quota={"H100": 2}, borrow=False)])
    st = s.new_state()
    st.submit(Job(id="a1", count=2, queue="a", submit_time=0))
    st.submit(Job(id="a2", count=1, queue="a", submit_time=1))
    d = s.decide(st, 0)
    assert [x.job_id for x in d.starts] == ["a1"]
    assert d.waiting == {"a2": (Reason.QUOTA, (0, 2.0, 2))}
    assert describe(d.waiting["a2"], None, c) == "queue at its H100 quota (2/2 devices) and may not borrow"


def test_backfill_job_that_would_delay_the_head_is_reserved() -> None:
    s = Scheduler(build_cluster("c", [node("n0"), node("n1")]), "backfill")
    st = s.new_state()
    st.submit(Job(id="run", count=8, submit_time=0, expected_runtime=100))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="head", count=16, submit_time=1, expected_runtime=50))
    st.submit(Job(id="short", count=4, submit_time=2, expected_runtime=50))
    st.submit(Job(id="long", count=4, submit_time=3, expected_runtime=500))
    st.submit(Job(id="huge", count=12, submit_time=4, expected_runtime=500))
    d = s.decide(st, 10)
    assert [x.job_id for x in d.starts] == ["short"]
    assert d.waiting["head"] == (Reason.CAPACITY, 8)
    assert d.waiting["long"] == (Reason.RESERVED, ("head", 100))
    assert d.waiting["huge"][0] is Reason.CAPACITY  # would not fit even without the reservation
    assert describe(d.waiting["long"], None, None, now=40) == \
        "would delay job head, which has the reservation (backfill) (expected to start in 60 s)"


def test_jobs_beyond_the_window_are_not_examined() -> None:
    s = Scheduler(build_cluster("c", [node("n0", devices=1)]), "backfill", window=2)
    st = s.new_state()
    for i in range(6):
        st.submit(Job(id=i, count=2 if i < 3 else 1, submit_time=i))  # 2 devices on a 1-device cluster: never
    d = s.decide(st, 0)
    assert list(d.waiting.values()) == [(Reason.NEVER, "the cluster has 1")] * 2 and d.rest is None
    assert counts(d.waiting, len(st.pending), d.rest)[Reason.WINDOW] == 4


def test_a_started_job_has_no_reason_and_every_skipped_one_has_one() -> None:
    s = two()
    st = s.new_state()
    for i in range(30):
        st.submit(Job(id=i, count=1 + i % 9, submit_time=i))
    d = s.decide(st, 0)
    started = {x.job_id for x in d.starts}
    assert started and not started & set(d.waiting)
    assert d.rest == (Reason.BEHIND, min(set(range(30)) - started))  # fifo: the first that did not fit
    assert set(d.waiting) == {min(set(range(30)) - started)}


def test_the_twin_counts_waiting_time_by_reason(tmp_path) -> None:
    from suanli.fleet import generate_cluster
    from suanli.sim import SimConfig, Simulation, from_jobs, summarize
    from suanli.sim.report import write_report

    # A holds all 16 devices for 100 s; B (8) waits for capacity from 10 to 100; C waits behind B from 20 to 100
    w = from_jobs("t", [{"submit": 0.0, "duration": 100.0, "count": 16},
                        {"submit": 10.0, "duration": 50.0, "count": 8},
                        {"submit": 20.0, "duration": 50.0, "count": 8}])
    r = Simulation(generate_cluster(16, "H100", 8), w, SimConfig(policy="fifo")).run()
    assert r.wait_by_reason == {"capacity": 90.0, "behind": 80.0}
    s = summarize(r)
    assert s["wait_by_reason_h"] == {"capacity": 90.0 / 3600, "behind": 80.0 / 3600}
    assert sum(r.wait_by_reason.values()) == s["avg_queue_s"] * 3  # all of the waiting time, by reason
    write_report(tmp_path, [s], [r], {"workload": "t"})
    md = (tmp_path / "report.md").read_text()
    assert "| capacity | 0.03 (53%) |" in md and "| behind | 0.02 (47%) |" in md


def test_partitions_a_job_waits_behind_its_own_partitions_head_only() -> None:
    def pnode(name: str, parts: tuple[str, ...]) -> NodeSpec:
        return NodeSpec(name, "H100", 8, 128_000, 1 << 20, name, "r0", partitions=parts)

    c = build_cluster("c", [pnode("a0", ("A",)), pnode("b0", ("B",))])
    s = Scheduler(c, "fifo")
    st = s.new_state()
    st.submit(Job(id="fill-a", count=8, partitions=("A",), submit_time=0))
    st.apply(s.decide(st, 0), 0)
    for j in (Job(id="blocked-a", count=8, partitions=("A",), submit_time=1),
              Job(id="next-a", count=1, partitions=("A",), submit_time=2),
              Job(id="big-b", count=16, partitions=("B",), submit_time=3)):
        st.submit(j)
    d = s.decide(st, 1)
    assert d.waiting["blocked-a"] == (Reason.CAPACITY, 0)
    assert d.waiting["next-a"] == (Reason.BEHIND, "blocked-a")
    assert d.waiting["big-b"] == (Reason.NEVER, "the cluster has 8")  # partition B has 8 devices
