"""LAS's starvation guard (Tiresias promotion) and the fair policy's per-pass caches, on hand-made states."""

from __future__ import annotations

import pytest

from suanli.fleet.model import NodeSpec, build_cluster
from suanli.sched import QueueConfig, Scheduler
from suanli.workload import Job


def node(name: str, devices: int = 8) -> NodeSpec:
    return NodeSpec(name, "H100", devices, 128_000, 1024 * 1024, name, "r0")


def starved_state(promote: float):
    """``old`` (4 devices) ran 50 s (200 device-s: LAS queue 1), then ``new`` preempted it at t=50 and has run
    since; at t=149 ``new`` is in queue 1 too."""
    c = build_cluster("c", [node("n0", 4)])
    s = Scheduler(c, "las", las_thresholds=(100.0,), las_promote=promote)
    st = s.new_state()
    st.submit(Job(id="old", count=4, submit_time=0))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="new", count=4, submit_time=50))
    d = s.decide(st, 50)
    assert [p.job_id for p in d.preemptions] == ["old"]
    st.apply(d, 50)
    return s, st


def test_las_promotes_a_job_that_waited_knob_times_its_run() -> None:
    s, st = starved_state(2.0)
    old = st.pending.jobs["old"]
    assert old.queued_at == 50 and old.attained == pytest.approx(200)
    # ran 200 device-s / 4 devices = 50 s since its last promotion: promoted after waiting 2 x 50 s
    assert st.pending.next_due(0) == pytest.approx(150)
    d = s.decide(st, 149)
    assert not d.preemptions and not d.starts  # both in queue 1: no LAS preemption yet
    d = s.decide(st, 150)
    assert [p.job_id for p in d.preemptions] == ["new"] and [x.job_id for x in d.starts] == ["old"]
    assert d.starts[0].promoted
    st.apply(d, 150)
    r = st.running.jobs["old"]
    assert old.las_base == pytest.approx(200) and r.served(150) == 0  # back in the top queue, service recounted
    assert s.las_queue(r.served(160)) == 0
    # new ran 100 s: it is promoted in its turn after 200 s of waiting
    assert st.pending.next_due(150) == pytest.approx(350)


def test_las_without_promotion_keeps_the_job_waiting() -> None:
    s, st = starved_state(0.0)
    assert st.pending.next_due(0) == float("inf")
    d = s.decide(st, 10_000)
    assert not d.preemptions and not d.starts


def test_promoted_job_goes_ahead_of_later_top_queue_jobs() -> None:
    c = build_cluster("c", [node("n0", 4)])
    s = Scheduler(c, "las", las_thresholds=(100.0,), las_promote=1.0)
    st = s.new_state()
    old = Job(id="old", count=4, submit_time=0, attained=400.0)  # ran 100 s on 4 devices: queue 1
    old.queued_at = 100.0
    st.submit(old)
    st.submit(Job(id="young", count=4, submit_time=150))  # queue 0
    assert [x.job_id for x in s.decide(st, 199).starts] == ["young"]
    d = s.decide(st, 200)  # old has waited 100 s = 1 x its run: promoted, and it came first
    assert [x.job_id for x in d.starts] == ["old"] and d.starts[0].promoted


def test_las_promote_must_be_a_non_negative_number() -> None:
    c = build_cluster("c", [node("n0", 4)])
    with pytest.raises(ValueError, match="las_promote"):
        Scheduler(c, "las", las_promote=-1)


def full_fair_state(free_per_node: int, count: int = 4):
    """Two 8-device nodes, each with ``free_per_node`` devices free; 300 pending jobs of ``count`` devices on one
    node, in three queues."""
    c = build_cluster("c", [node("n0"), node("n1")])
    s = Scheduler(c, "fair")
    st = s.new_state()
    for n in range(2):
        st.submit(Job(id=f"run{n}", count=8 - free_per_node, per_node=8 - free_per_node, queue="q0", submit_time=0))
    st.apply(s.decide(st, 0), 0)
    assert len(st.running) == 2
    for i in range(300):
        st.submit(Job(id=f"p{i}", count=count, per_node=count, queue=f"q{i % 3}", submit_time=1 + i))
    return s, st


def test_fair_pass_on_a_full_cluster_looks_at_no_job() -> None:
    s, st = full_fair_state(0)
    d = s.decide(st, 1000)
    assert not d.starts and not d.preemptions
    assert d.tested == 0  # nothing free, no quota to reclaim, no lower priority to preempt: nothing can start


def test_fair_tries_each_shape_once_per_queue_in_a_pass() -> None:
    s, st = full_fair_state(1, count=2)  # 2 devices free, but one per node: no 2-device job fits on one node
    calls = []
    orig = s.model_candidates

    def counting(state, job):
        calls.append(job.id)
        return orig(state, job)

    s.model_candidates = counting  # type: ignore[method-assign]
    d = s.decide(st, 1000)
    assert not d.starts and d.tested == 300
    assert sorted(calls) == ["p0", "p1", "p2"]  # the first job of each queue, not all 300


def test_fair_with_quotas_still_reclaims() -> None:
    c = build_cluster("c", [node("n0")])
    s = Scheduler(c, "fair", queues=[QueueConfig("a", quota={"*": 4}), QueueConfig("b", quota={"*": 4})])
    st = s.new_state()
    st.submit(Job(id="b-big", count=8, queue="b", submit_time=0))
    st.apply(s.decide(st, 0), 0)
    assert st.running.jobs["b-big"].borrowed
    st.submit(Job(id="a1", count=4, queue="a", submit_time=1))
    d = s.decide(st, 1)
    assert [p.job_id for p in d.preemptions] == ["b-big"] and [x.job_id for x in d.starts] == ["a1"]
