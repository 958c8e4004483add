"""The twin's figures on hand-made traces: the makespan window, rejected jobs, pending time after preemption,
LAS starvation and light-tailed work (issue 16)."""

from __future__ import annotations

import pytest

from suanli.fleet import generate_cluster
from suanli.sim import FailureConfig, SimConfig, Simulation, from_jobs, summarize
from suanli.sim.engine import SUCCEEDED
from suanli.sim.report import notes


def run(w, policy="fifo", chips=16, **kw):
    return Simulation(generate_cluster(chips, "H100", 8), w, SimConfig(policy=policy, **kw)).run()


def test_failures_after_the_last_job_do_not_stretch_the_makespan() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 8},
                        {"submit": 0.0, "duration": 1000.0, "count": 8}])
    # a tiny rate: the first random failure comes long after both jobs end; a scripted one hits the idle cluster
    fc = FailureConfig(enabled=True, rate_per_device_hour=1e-4, seed=1, script=((5000.0, "node", 0, 3600.0),))
    r = run(w, failures=fc)
    s = summarize(r)
    assert r.finish.tolist() == [1000.0, 1000.0]
    assert s["makespan_s"] == 1000.0
    assert s["utilization"] == pytest.approx(1.0)
    assert s["failures"] == 0 and s["jobs_killed"] == 0  # failures on an idle, finished cluster are not counted


def test_a_failure_during_the_run_still_counts_and_the_window_ends_at_the_last_job() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 8}])
    fc = FailureConfig(checkpoint_s=300.0, script=((700.0, "node", 0, 50_000.0),))  # repaired long after the end
    r = run(w, failures=fc)
    s = summarize(r)
    # killed at 700 (keeps 600 s of work), restarts at once on the other node, ends at 700 + 400
    assert r.finish.tolist() == [1100.0]
    assert s["failures"] == 1 and s["jobs_killed"] == 1
    assert s["makespan_s"] == 1100.0  # not the repair at 50,700 s
    assert s["avg_pending_s"] == 0.0  # it restarted the moment it was requeued


def test_rejected_jobs_count_apart_and_leave_the_window_and_load_alone() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 5000.0, "count": 64},  # can never fit 16 chips
                        {"submit": 1000.0, "duration": 1000.0, "count": 8},
                        {"submit": 1000.0, "duration": 1000.0, "count": 8}])
    r = run(w)
    s = summarize(r)
    assert s["rejected"] == 1 and s["completed"] == 2
    assert s["makespan_s"] == 1000.0  # from the first accepted arrival, not the rejected one at 0
    assert s["utilization"] == pytest.approx(1.0)
    assert s["load"] == pytest.approx(1.0)  # 16,000 device-s on 16 chips over the 1,000 s median (one instant)
    assert s["load_with_rejected"] > s["load"]
    assert any("rejected" in n for n in notes(s))


def test_pending_time_counts_waits_after_preemption() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 4},
                        {"submit": 200.0, "duration": 50.0, "count": 4}])
    r = run(w, "las", chips=4, sched_kwargs={"las_thresholds": (100.0,)})
    s = summarize(r)
    # b (queue 0) preempts a (queue 1) at 200 and runs to 250; a waits 50 s and resumes
    assert r.finish.tolist() == [1050.0, 250.0]
    assert s["avg_queue_s"] == 0.0  # neither waited before its first start
    assert s["avg_pending_s"] == pytest.approx(25.0)  # a waited 50 s after its preemption
    assert s["preemptions_per_job"] == pytest.approx(0.5)
    assert s["max_preemptions_per_job"] == 1 and s["preempted_jobs"] == 1


def starvation_trace():
    # a long 8-GPU job at 0, then 8-GPU jobs of 100 s every 100 s: each stays in LAS queue 0 (800 < 1,000
    # device-s) and, once the long job has attained 1,000 device-s, preempts it and keeps it waiting
    rows = [{"submit": 0.0, "duration": 2000.0, "count": 8}]
    rows += [{"submit": 10.0 + 100.0 * i, "duration": 100.0, "count": 8} for i in range(100)]
    return from_jobs("t", rows)


def test_las_promotion_stops_a_large_job_starving() -> None:
    w = starvation_trace()
    kw = {"las_thresholds": (1000.0,)}
    off = run(w, "las", chips=8, sched_kwargs={**kw, "las_promote": 0.0})
    on = run(w, "las", chips=8, sched_kwargs={**kw, "las_promote": 2.0})
    assert (off.state == SUCCEEDED).all() and (on.state == SUCCEEDED).all()
    # without the guard the long job waits for the whole stream (done at ~10,000 s), then runs its last 1,875 s
    assert off.finish[0] >= 10_000.0 + 1875.0
    assert on.finish[0] < off.finish[0] - 3000.0
    s_off, s_on = summarize(off), summarize(on)
    # 101 jobs: the worst 1% is the one worst job, the starved one without the guard (p99 JCT does not single it out)
    assert s_off["worst_1pct_slowdown"] == pytest.approx(off.finish[0] / 2000.0)
    assert s_off["worst_1pct_slowdown"] > s_off["p99_bounded_slowdown"]
    assert s_on["max_preemptions_per_job"] >= 2  # promoted, ran, demoted and preempted again


def test_light_tailed_work_las_is_worse_than_fifo_and_the_report_says_why() -> None:
    # 64 one-GPU jobs of about 5 h, all at once, on 8 GPUs: LAS interleaves them (1 h slices), FIFO runs them through
    rows = [{"submit": 0.0, "duration": 18_000.0 + 60.0 * (i % 5), "count": 1} for i in range(64)]
    w = from_jobs("t", rows)
    f = summarize(run(w, "fifo", chips=8))
    la = summarize(run(w, "las", chips=8))
    assert la["avg_jct_s"] > 1.1 * f["avg_jct_s"]
    assert f["light_tailed"] and f["work_cv"] < 0.1
    assert any("light-tailed" in n for n in notes(f))


def test_cli_las_promote_flag_and_notes(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from typer.testing import CliRunner

    from suanli.cli.main import app

    r = subprocess.run([sys.executable, "-m", "suanli.cli.main", "sim", "--jobs", "10", "--las-promote", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--las-promote" in r.stderr and "Traceback" not in r.stderr
    csv = tmp_path / "t.csv"
    csv.write_text("job_id,submission_time,duration,num_gpu\na,0,100,64\nb,10,100,8\nc,20,100,8\n")
    res = CliRunner().invoke(app, ["sim", "--trace", str(csv), "--chips", "16", "--policy", "las",
                                   "--las-promote", "4", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["rejected"] == 1 and out["completed"] == 2 and out["makespan_s"] == 110.0  # 10 to 120
    res = CliRunner().invoke(app, ["sim", "--trace", str(csv), "--chips", "16"])
    assert res.exit_code == 0 and "rejected on arrival" in res.output
