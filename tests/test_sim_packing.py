"""The fragmentation-aware packer (sched/packing.py) through the unmodified scheduler."""

from __future__ import annotations

from suanli.fleet import build_cluster
from suanli.fleet.model import NodeSpec
from suanli.sched import Scheduler
from suanli.sched.packing import BestFitNodePacker, FragmentationPacker, RandomFitPacker
from suanli.workload.spec import Job


def cluster(n: int = 2, gpus: int = 4, cpu: int = 32_000):
    return build_cluster("t", [NodeSpec(f"n{i}", "T4", gpus, cpu, 131072, f"n{i}", "r0") for i in range(n)])


def place(sched: Scheduler, state, job: Job):
    state.submit(job)
    d = sched.decide(state, 0.0)
    started = state.apply(d, 0.0)
    return started[0].placement if started else None


def test_fgd_is_the_scheduler_packer_by_name() -> None:
    s = Scheduler(cluster(), "fifo", packer="fgd")
    assert isinstance(s.placer.config.packer, FragmentationPacker)


def test_fgd_fills_a_partly_used_gpu_before_breaking_a_whole_one() -> None:
    s = Scheduler(cluster(), "fifo", packer=FragmentationPacker().fit(
        [Job(id=i, count=1, milli=500) for i in range(10)] + [Job(id=100 + i, count=1) for i in range(10)]))
    st = s.new_state()
    a = place(s, st, Job(id=1, count=1, milli=500))
    b = place(s, st, Job(id=2, count=1, milli=500))
    assert a is not None and b is not None
    assert a.devices == b.devices  # two halves share one GPU: no half-free GPU is left behind
    # a whole-GPU task then goes to a node with whole GPUs free, the CPU-only task where it strands nothing
    c = place(s, st, Job(id=3, count=1))
    assert c is not None and c.devices[0][0] != a.devices[0][0]
    st.alloc.check_consistency()


def test_fgd_keeps_a_whole_node_for_an_8_gpu_task() -> None:
    s = Scheduler(cluster(2, 8), "fifo", packer=FragmentationPacker().fit(
        [Job(id=i, count=8, per_node=8) for i in range(5)] + [Job(id=10 + i, count=1) for i in range(5)]))
    st = s.new_state()
    for i in range(4):
        assert place(s, st, Job(id=i, count=1)) is not None
    nodes = {st.running.jobs[i].placement.nodes[0] for i in range(4)}
    assert len(nodes) == 1  # small tasks packed on one node
    assert place(s, st, Job(id=9, count=8, per_node=8)) is not None


def test_node_choosing_packers_place_cpu_only_and_whole_tasks() -> None:
    for pk in (RandomFitPacker(1), BestFitNodePacker(), FragmentationPacker()):
        s = Scheduler(cluster(), "fifo", packer=pk)
        st = s.new_state()
        assert place(s, st, Job(id=1, count=0, cpu_milli=4000)) is not None
        assert place(s, st, Job(id=2, count=2, per_node=2, cpu_milli=2000)) is not None
        assert place(s, st, Job(id=3, count=1, milli=300)) is not None
        assert place(s, st, Job(id=4, count=1, milli=900, cpu_milli=64_000)) is None  # no node has that CPU
        st.alloc.check_consistency()


def test_pooled_packer_scores_the_nodes_of_every_model_at_once() -> None:
    # a 4-GPU T4 node listed first and a 1-GPU A10 node: per model, a 1-GPU task lands on the first model's node;
    # pooled (the replay, as kube-scheduler scores every feasible node), best-fit takes the node it fills
    c = build_cluster("t", [NodeSpec("n0", "T4", 4, 32_000, 131072, "n0", "r0"),
                            NodeSpec("n1", "A10", 1, 32_000, 131072, "n1", "r0")])
    for pooled, want in ((False, 0), (True, 1)):
        pk = BestFitNodePacker(0)
        pk.pool_models = pooled
        s = Scheduler(c, "fifo", packer=pk)
        st = s.new_state()
        p = place(s, st, Job(id=1, count=1, cpu_milli=1000))
        assert p is not None and p.nodes[0] == want
        q = place(s, st, Job(id=2, count=1, milli=400, cpu_milli=1000))
        assert q is not None
        st.alloc.check_consistency()


def test_best_fit_node_packer_scores_like_the_artifact() -> None:
    # score = int(100 (1 - 0.5 free CPU left / 128 CPU - 0.5 free GPU left / 8 GPU)): the fuller node wins
    s = Scheduler(cluster(2, 8, 64_000), "fifo", packer=BestFitNodePacker(0))
    st = s.new_state()
    a = place(s, st, Job(id=1, count=2, per_node=2, cpu_milli=8000))
    b = place(s, st, Job(id=2, count=1, cpu_milli=8000))
    assert a is not None and b is not None and a.nodes == b.nodes
    d = place(s, st, Job(id=3, count=1, milli=300))
    e = place(s, st, Job(id=4, count=1, milli=500))
    assert d is not None and e is not None and d.devices == e.devices  # the tightest GPU that fits


def test_fgd_learns_on_submission_and_decide_stays_pure() -> None:
    pk = FragmentationPacker()
    s = Scheduler(cluster(), "fifo", packer=pk)
    st = s.new_state()
    st.submit(Job(id=1, count=1, milli=300))
    assert sum(pk.counts.values()) == 1  # learnt when submitted
    before = (dict(pk.counts), st.alloc.snapshot())
    d1 = s.decide(st, 0.0)
    d2 = s.decide(st, 0.0)
    assert (dict(pk.counts), st.alloc.snapshot()) == before  # deciding learns nothing and changes nothing
    assert [x.placement for x in d1.starts] == [x.placement for x in d2.starts]
