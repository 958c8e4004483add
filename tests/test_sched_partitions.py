"""Partitions: a job (or its queue) names the partitions whose nodes it may use; blocking holds per partition."""

from __future__ import annotations

import numpy as np
import pytest

from suanli.fleet import load_cluster
from suanli.fleet.model import NodeSpec, build_cluster
from suanli.sched import QueueConfig, Scheduler
from suanli.sim.engine import SimConfig, Simulation
from suanli.sim.workload import from_jobs
from suanli.workload import Job


def node(name: str, parts: tuple[str, ...], model: str = "H100", devices: int = 8) -> NodeSpec:
    return NodeSpec(name, model, devices, 128_000, 1 << 20, name, "r0", partitions=parts)


def two_partitions():
    return build_cluster("c", [node("a0", ("A",)), node("b0", ("B",))])


def test_jobs_stay_on_their_partitions_nodes() -> None:
    c = build_cluster("c", [node("a0", ("A",)), node("ab0", ("A", "B")), node("b0", ("B",))])
    assert c.partitions == ("A", "B") and c.n_groups == 3
    s = Scheduler(c, "fifo")
    st = s.new_state()
    for i in range(3):
        st.submit(Job(id=f"b{i}", count=8, partitions=("B",), submit_time=i))
    d = s.decide(st, 0)
    nodes = {c.nodes[s_.placement.nodes[0]].name for s_ in d.starts}
    assert nodes == {"ab0", "b0"}  # two of three fit, never on a0
    st.apply(d, 0)
    st.alloc.check_consistency()


def test_fifo_blocked_partition_does_not_stall_another() -> None:
    """The minimal repro: partition A is full and its next job blocks; a 1-GPU job of partition B, whose pool is
    idle, used to wait behind it (fifo's pass stopped at the first job that did not fit)."""
    s = Scheduler(two_partitions(), "fifo")
    st = s.new_state()
    st.submit(Job(id="fill-a", count=8, partitions=("A",), submit_time=0))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="blocked-a", count=8, partitions=("A",), submit_time=1))
    st.submit(Job(id="small-a", count=1, partitions=("A",), submit_time=2))  # behind blocked-a: must wait
    st.submit(Job(id="small-b", count=1, partitions=("B",), submit_time=3))
    d = s.decide(st, 5)
    assert {x.job_id for x in d.starts} == {"small-b"}
    # a job that may use any node is behind the blocked head too (it could take A's nodes)
    st.apply(d, 5)
    st.submit(Job(id="any", count=1, submit_time=4))
    assert not s.decide(st, 6).starts


def test_queue_names_the_partitions_of_its_jobs() -> None:
    s = Scheduler(two_partitions(), "fifo", queues=[QueueConfig("qa", partitions=("A",)),
                                                   QueueConfig("qb", partitions=("B",))])
    st = s.new_state()
    st.submit(Job(id="a1", count=8, queue="qa", submit_time=0))
    st.submit(Job(id="a2", count=8, queue="qa", submit_time=1))  # A is taken by a1: blocked
    st.submit(Job(id="b1", count=8, queue="qb", submit_time=2))
    st.submit(Job(id="own", count=8, queue="qa", partitions=("B",), submit_time=3))  # the job's own choice wins
    d = s.decide(st, 0)
    c = s.cluster
    where = {x.job_id: c.nodes[x.placement.nodes[0]].name for x in d.starts}
    assert where == {"a1": "a0", "b1": "b0"}


def test_backfill_reservation_is_per_partition() -> None:
    s = Scheduler(two_partitions(), "backfill")
    st = s.new_state()
    st.submit(Job(id="run-a", count=8, partitions=("A",), expected_runtime=100))
    st.apply(s.decide(st, 0), 0)
    st.submit(Job(id="head-a", count=8, partitions=("A",), expected_runtime=50, submit_time=1))
    st.submit(Job(id="long-a", count=1, partitions=("A",), expected_runtime=500, submit_time=2))
    st.submit(Job(id="long-b", count=4, partitions=("B",), expected_runtime=500, submit_time=3))
    st.submit(Job(id="head-b", count=8, partitions=("B",), expected_runtime=50, submit_time=4))
    st.submit(Job(id="short-b", count=2, partitions=("B",), expected_runtime=10, submit_time=5))
    d = s.decide(st, 10)
    # B's first job starts although A's head is blocked; B's own head (blocked by long-b) reserves B's free
    # devices from long-b's end, and a short B job still fits before that
    assert {x.job_id for x in d.starts} == {"long-b", "short-b"}
    assert d.reservation == ("head-a", 100)


def test_a_blocked_partition_never_delays_another_partitions_jobs_in_the_twin() -> None:
    """Partition A is heavily overloaded, B lightly: under fifo B's jobs run exactly as if B were alone."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        pa = "A" if i % 3 else "B"
        rows.append({"submit": float(i * 20), "duration": float(rng.integers(100, 3000) * (8 if pa == "A" else 1)),
                     "count": int(rng.choice([1, 2, 4, 8])), "partition": pa})
    both = from_jobs("t", rows)
    only_b = from_jobs("t", [r for r in rows if r["partition"] == "B"])
    cl = build_cluster("c", [node(f"a{i}", ("A",)) for i in range(2)] + [node(f"b{i}", ("B",)) for i in range(2)])
    cl_b = build_cluster("c", [node(f"b{i}", ("B",)) for i in range(2)])
    r = Simulation(cl, both, SimConfig("fifo")).run()
    rb = Simulation(cl_b, only_b, SimConfig("fifo")).run()
    is_b = both.partition == both.partitions.index("B")
    qa = (r.first_start - both.submit)[~is_b]
    assert qa.max() > 10_000  # A really is blocked for long
    np.testing.assert_allclose(r.first_start[is_b], rb.first_start)
    np.testing.assert_allclose(r.finish[is_b], rb.finish)


def test_cluster_file_binds_pools_to_partitions(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: lab\npools:\n"
                 "  - {name: h, count: 2, accelerator: H100, per_node: 8, partitions: [train, serve]}\n"
                 "  - {name: v, count: 1, accelerator: V100, per_node: 8, partitions: [train]}\n"
                 "  - {name: c, count: 1, cpu: 64}\n")
    c = load_cluster(p)
    assert c.partitions == ("train", "serve")
    assert c.summary()["partitions"] == {"train": 24, "serve": 16}
    s = Scheduler(c, "sjf")  # no blocking: each job on its own
    st = s.new_state()
    st.submit(Job(id="v", count=8, models=("V100-16GB",), partitions=("serve",)))  # no V100 in serve: never
    st.submit(Job(id="cpu", count=0, cpu_milli=1000, partitions=("serve",)))  # CPU-only, on serve's nodes only
    d = s.decide(st, 0)
    assert [x.job_id for x in d.starts] == ["cpu"] and c.nodes[d.starts[0].placement.nodes[0]].name.startswith("h")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  - {name: h, count: 1, accelerator: H100, partitions: ['no spaces']}\n")
    with pytest.raises(Exception, match="partition name"):
        load_cluster(bad)


def test_a_long_blocked_partition_does_not_use_up_the_pass_window() -> None:
    s = Scheduler(two_partitions(), "fifo", window=3)
    st = s.new_state()
    st.submit(Job(id="fill-a", count=8, partitions=("A",), submit_time=0))
    st.apply(s.decide(st, 0), 0)
    for i in range(10):  # far more blocked A jobs than the window, all in one queue with B's job
        st.submit(Job(id=f"a{i}", count=1, partitions=("A",), submit_time=1 + i))
    st.submit(Job(id="b", count=1, partitions=("B",), submit_time=20))
    assert [x.job_id for x in s.decide(st, 30).starts] == ["b"]
    # the same with each partition in its own queue (the twin's layout): A's queue is dropped after its head
    s2 = Scheduler(two_partitions(), "fifo", window=3)
    st2 = s2.new_state()
    st2.submit(Job(id="fill-a", count=8, partitions=("A",), queue="A", submit_time=0))
    st2.apply(s2.decide(st2, 0), 0)
    for i in range(10):
        st2.submit(Job(id=f"a{i}", count=1, partitions=("A",), queue="A", submit_time=1 + i))
    st2.submit(Job(id="b", count=1, partitions=("B",), queue="B", submit_time=20))
    d = s2.decide(st2, 30)
    assert [x.job_id for x in d.starts] == ["b"] and d.tested == 2  # A's head and B's job, nothing else
