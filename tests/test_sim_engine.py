"""The simulator's engine on small hand-computable cases, failures, policies under contention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suanli.fleet import generate_cluster
from suanli.sim import FailureConfig, SimConfig, Simulation, from_jobs, summarize, synthetic
from suanli.sim.engine import SUCCEEDED
from suanli.sim.run import run_policies


def c16():
    return generate_cluster(16, "H100", 8)  # 2 nodes x 8


def run(w, policy="fifo", **kw):
    return Simulation(c16(), w, SimConfig(policy=policy, **kw)).run()


def test_fifo_hand_computed_jcts() -> None:
    w = from_jobs("t", [
        {"submit": 0.0, "duration": 100.0, "count": 16},
        {"submit": 10.0, "duration": 50.0, "count": 8},
        {"submit": 20.0, "duration": 50.0, "count": 8},
    ])
    r = run(w)
    assert (r.state == SUCCEEDED).all()
    assert r.finish.tolist() == [100.0, 150.0, 150.0]
    assert r.first_start.tolist() == [0.0, 100.0, 100.0]
    s = summarize(r)
    assert s["avg_jct_s"] == pytest.approx((100 + 140 + 130) / 3)
    assert s["avg_queue_s"] == pytest.approx((0 + 90 + 80) / 3)
    assert s["makespan_s"] == 150.0
    # 16 devices busy 0-100, 16 busy 100-150: fully used
    assert s["utilization"] == pytest.approx(1.0)
    assert s["p50_jct_s"] == 130.0


def test_fifo_head_blocks_but_backfill_fills_the_hole() -> None:
    # A holds 8 GPUs for 100 s; B wants 16 (blocked until 100); C (8 GPUs, 50 s) fits now and ends before B's
    # reservation: backfill starts it at 2, fifo makes it wait behind B.
    rows = [
        {"submit": 0.0, "duration": 100.0, "count": 8},
        {"submit": 1.0, "duration": 100.0, "count": 16},
        {"submit": 2.0, "duration": 50.0, "count": 8},
    ]
    w = from_jobs("t", rows).fix_estimates()
    f = run(w, "fifo")
    b = run(w, "backfill")
    assert f.finish.tolist() == [100.0, 200.0, 250.0]
    assert b.finish.tolist() == [100.0, 200.0, 52.0]
    assert summarize(b)["avg_jct_s"] < summarize(f)["avg_jct_s"]


def test_failure_loses_exactly_the_work_since_the_last_checkpoint() -> None:
    # one 8-GPU job of 1000 s work, checkpoints every 300 s; its node fails at 700: it loses 100 s (700 mod 300),
    # restarts at once on the other node with 400 s left and ends at 1100.
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 8}])
    fc = FailureConfig(enabled=False, checkpoint_s=300.0, script=((700.0, "node", 0, 3600.0),))
    r = run(w, failures=fc)
    assert r.finish[0] == pytest.approx(1100.0)
    assert r.failures[0] == 1
    s = summarize(r)
    assert s["lost_chip_hours"] == pytest.approx(100 * 8 / 3600)
    assert s["goodput"] == pytest.approx(1 - 800 / (8 * 1100))


def test_device_failure_kills_the_whole_gang_and_requeues_it() -> None:
    # a 16-GPU gang over both nodes; one device fails at 500 (no checkpoints: all 500 s lost); the job waits for the
    # repair (1000 s) because 15 devices are not enough, then runs its 1000 s again: ends at 1500 + 1000.
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 16}])
    fc = FailureConfig(checkpoint_s=math.inf, script=((500.0, "device", 3, 1000.0),))
    r = run(w, failures=fc)
    assert r.finish[0] == pytest.approx(2500.0)
    s = summarize(r)
    assert s["lost_chip_hours"] == pytest.approx(500 * 16 / 3600)
    assert s["jobs_killed"] == 1


def test_device_failure_spares_jobs_on_other_devices() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 100.0, "count": 1, "gang": False},
                        {"submit": 0.0, "duration": 100.0, "count": 1, "gang": False}])
    fc = FailureConfig(checkpoint_s=math.inf, script=((50.0, "device", 15, 10.0),))
    r = run(w, failures=fc)
    assert r.failures.tolist() == [0, 0]
    assert r.finish.tolist() == [100.0, 100.0]


def test_random_failures_at_llama3_rate_reduce_goodput() -> None:
    c = generate_cluster(512, "H100", 8)
    w = synthetic(400, 512, load=0.7, seed=3).fix_estimates()
    fc = FailureConfig(enabled=True, rate_per_device_hour=100 * FailureConfig().rate_per_device_hour, seed=1)
    r = Simulation(c, w, SimConfig(policy="fifo", failures=fc)).run()
    s = summarize(r)
    assert s["failures"] > 0 and s["lost_chip_hours"] > 0
    assert 0 < s["goodput"] < 1
    assert s["completed"] == len(w)


def test_llama3_default_rate() -> None:
    # 419 unexpected interruptions in 54 days on 16,384 GPUs
    assert FailureConfig().rate_per_device_hour * 16384 * 54 * 24 == pytest.approx(419)


def test_identical_stream_across_policies_and_workload_untouched() -> None:
    c = generate_cluster(128, "H100", 8)
    w = synthetic(600, 128, load=1.0, seed=5).fix_estimates()
    dur = w.duration.copy()
    runs = run_policies(c, w, ["fifo", "backfill", "las", "fair", "sjf"])
    assert np.array_equal(w.duration, dur)
    for s, r in runs:
        assert s["jobs"] == len(w) and s["load"] == runs[0][0]["load"]
        assert s["completed"] == len(w)
        done = r.state == SUCCEEDED
        assert (r.finish[done] - r.first_start[done] >= w.duration[done] - 1e-6).all()


def test_las_and_backfill_beat_fifo_under_contention() -> None:
    c = generate_cluster(256, "H100", 8)
    w = synthetic(1500, 256, load=1.1, seed=2).fix_estimates()
    runs = {s["policy"]: s for s, _ in run_policies(c, w, ["fifo", "backfill", "las"])}
    assert runs["fifo"]["load"] > 1.0
    assert runs["las"]["avg_jct_s"] < 0.5 * runs["fifo"]["avg_jct_s"]
    assert runs["backfill"]["avg_jct_s"] < 0.5 * runs["fifo"]["avg_jct_s"]
    assert runs["las"]["vs_fifo"]["avg_jct_s"] < 0.5


def test_job_bigger_than_the_cluster_is_rejected_not_blocking() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 10.0, "count": 64},
                        {"submit": 1.0, "duration": 10.0, "count": 8}])
    r = run(w)
    s = summarize(r)
    assert s["rejected"] == 1 and s["completed"] == 1
    assert r.finish[1] == 11.0


def test_fractional_jobs_share_a_device() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 10.0, "count": 1, "milli": 500} for _ in range(32)])
    r = run(w)
    assert np.all(r.finish == 10.0)  # 32 half-GPU tasks on 16 GPUs all fit at once


def test_las_preempts_long_running_jobs_for_new_ones() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 100000.0, "count": 16},
                        {"submit": 5000.0, "duration": 100.0, "count": 8}])
    r = run(w, "las")
    assert r.finish[1] == pytest.approx(5100.0)  # the newcomer preempts the job that has attained more service
    assert r.preemptions[0] >= 1
    assert r.finish[0] == pytest.approx(100100.0)  # preempted work is kept (checkpoint on preemption)


def test_job_that_no_single_node_can_host_is_rejected() -> None:
    # 8 GPUs fit the cluster in total, but no node has 200 cores: placed by the real placer on an empty cluster,
    # the shape never fits, so it is rejected instead of blocking the FIFO head forever
    w = from_jobs("t", [{"submit": 0.0, "duration": 10.0, "count": 8, "per_node": 8, "cpu_milli": 200_000},
                        {"submit": 1.0, "duration": 10.0, "count": 8, "per_node": 8, "cpu_milli": 64_000}])
    r = run(w)
    s = summarize(r)
    assert s["rejected"] == 1 and s["completed"] == 1 and s["unfinished"] == 0


def test_checkpoint_interval_per_job_kind() -> None:
    # same failure (node 0 at 700 s) under two kinds: "train" checkpoints every 300 s (loses 100 s),
    # "dev" never checkpoints (loses all 700 s)
    for kind, end, lost in (("train", 1100.0, 100.0), ("dev", 1700.0, 700.0)):
        w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 8, "kind": kind}])
        fc = FailureConfig(checkpoint_s=300.0, checkpoint_by_kind={"dev": math.inf},
                           script=((700.0, "node", 0, 3600.0),))
        r = run(w, failures=fc)
        assert r.finish[0] == pytest.approx(end)
        assert summarize(r)["lost_chip_hours"] == pytest.approx(lost * 8 / 3600)


class _Pods:
    """The two columns :func:`suanli.sim.replay.inflate` reads."""

    def __init__(self, count, milli) -> None:
        self.count, self.milli = count, milli

    def __len__(self) -> int:
        return len(self.count)


def test_replay_inflation_keeps_the_artifact_order() -> None:
    import numpy as np

    from suanli.sim.replay import inflate

    n = 50
    count = np.array([i % 3 for i in range(n)], dtype=np.int32)  # 0, 1, 2 GPUs
    milli = np.where(count == 1, 500, 1000).astype(np.int32)
    cap = 40 * 1000
    idx = inflate(_Pods(count, milli), cap, 1.3, seed=3)  # type: ignore[arg-type]
    assert sorted(idx[:n].tolist()) == list(range(n))  # every pod of the list once, shuffled, first
    assert idx[:n].tolist() != list(range(n))
    assert len(idx) > n
    total = int((count[idx] * milli[idx]).sum())
    assert 1.3 * cap - 2000 < total <= 1.3 * cap + 1000  # stops at the first copy that would pass the target


def test_replay_tunes_down_a_list_that_asks_for_more_than_the_target() -> None:
    import numpy as np

    from suanli.sim.replay import inflate

    n = 60
    count = np.ones(n, dtype=np.int32)
    milli = np.full(n, 1000, dtype=np.int32)
    idx = inflate(_Pods(count, milli), 40 * 1000, 1.3, seed=1)  # type: ignore[arg-type]  # 60 GPUs > 52 target
    assert len(idx) == 52 and len(set(idx.tolist())) == 52  # random pods removed, none copied
    assert idx.tolist() != sorted(idx.tolist())  # still the shuffled order


def test_per_job_speeds_decide_how_fast_a_job_runs_on_each_model() -> None:
    from suanli.fleet.model import NodeSpec, build_cluster
    from suanli.sim.engine import SimConfig, Simulation

    c = build_cluster("c", [NodeSpec("v", "V100-16GB", 1, 1000, 1024, "v", "r"),
                            NodeSpec("k", "K80", 1, 1000, 1024, "k", "r"),
                            NodeSpec("k2", "K80", 1, 1000, 1024, "k2", "r")])
    w = from_jobs("t", [{"submit": 0.0, "duration": 100.0, "count": 1, "models": ["K80"],
                         "speeds": {"K80": 0.25, "V100-16GB": 1.0}, "job_type": "cnn"},
                        {"submit": 0.0, "duration": 100.0, "count": 1, "models": ["K80"]}])
    r = Simulation(c, w, SimConfig("fifo")).run()
    assert r.finish.tolist() == [400.0, 100.0]  # the typed job runs at a quarter speed there; the other at 1.0
    assert w.job(0).speeds == {"K80": 0.25, "V100-16GB": 1.0} and w.job(1).speeds is None


def test_gavel_generated_stream_follows_the_published_method() -> None:
    import numpy as np

    from suanli.sim.hetero import gavel_workload, type_speeds

    w = gavel_workload(4000, 60.0, seed=1)
    assert len(w.job_types) == 6 and np.bincount(w.job_type).min() > 500  # uniform over the measured models
    share1 = float((w.count == 1).mean())
    assert 0.66 < share1 < 0.74 and set(np.unique(w.count).tolist()) == {1, 2, 4, 8}
    assert w.duration.min() >= 60 * 10**1.5 and w.duration.max() <= 60 * 10**4
    gaps = np.diff(w.submit)
    assert abs(gaps.mean() - 60.0) < 5.0  # Poisson at 60 jobs/h: one a minute on average
    sp = type_speeds()
    assert sp["ResNet-18"]["V100-16GB"] == 1.0 and sp["ResNet-18"]["K80"] < 0.15 < sp["Recommendation"]["K80"]
