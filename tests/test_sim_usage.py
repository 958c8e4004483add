"""The twin's accounting report (issue 14): usage rows from simulated attempts, with `suanli report`'s columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.accounting.report import COLUMNS
from suanli.fleet import generate_cluster
from suanli.sim import FailureConfig, SimConfig, Simulation, from_jobs, synthetic
from suanli.sim.usage import report_rows, usage_cells


def test_attempts_split_useful_and_lost_work_by_hand() -> None:
    # 8 GPUs for 1,000 s of work on node 0; the node fails at 700 (checkpoint every 300 s): 100 s x 8 chips lost,
    # the job restarts on node 1 at 700 and ends at 1,100
    w = from_jobs("t", [{"submit": 0.0, "duration": 1000.0, "count": 8}])
    fc = FailureConfig(checkpoint_s=300.0, script=((700.0, "node", 0, 50_000.0),))
    r = Simulation(generate_cluster(16, "H100", 8), w, SimConfig(failures=fc, usage=True)).run()
    assert [(a[1], a[2], a[3]) for a in r.attempts] == [(0.0, 700.0, 2), (700.0, 1100.0, 0)]
    cells = {c["outcome"]: c for c in usage_cells(r, ("tenant",))}
    assert cells["node-lost"]["chip_s"] == 8 * 700 and cells["node-lost"]["lost_chip_s"] == 8 * 100
    assert cells["succeeded"]["chip_s"] == 8 * 400 and cells["succeeded"]["lost_chip_s"] == 0
    (row,) = report_rows(r, ("tenant",))
    assert row["chip_hours"] == pytest.approx(8800 / 3600)
    assert row["useful_chip_hours"] == pytest.approx(8000 / 3600)  # exactly the job's work: 1,000 s x 8
    assert row["lost_by_cause"] == {"node-lost": pytest.approx(800 / 3600)}
    # modelled energy: H100 TDP 700 W x (0.3 idle + 0.7 x 0.6 busy) x PUE 1.3 over 8,800 chip-s
    assert row["energy_kwh"] == pytest.approx(700 * 0.72 * 1.3 * 8800 / 3.6e6)
    assert row["energy_measured_share"] == 0.0
    assert row["usd"] is not None and row["usd_per_useful_chip_hour"] == pytest.approx(row["usd"] / (8000 / 3600))
    assert set(COLUMNS) <= set(row)


def test_usage_adds_up_to_the_engines_allocated_and_lost_time() -> None:
    c = generate_cluster(64, "H100", 8)
    w = synthetic(400, 64, load=1.3, seed=2, node_size=8)
    fc = FailureConfig(enabled=True, rate_per_device_hour=0.002, seed=3)
    r = Simulation(c, w, SimConfig(policy="las", failures=fc, usage=True,
                                   sched_kwargs={"las_thresholds": (600.0, 6000.0)})).run()
    assert int(r.preemptions.sum()) > 0 and int(r.failures.sum()) > 0
    cells = usage_cells(r, ("model",))
    assert sum(x["chip_s"] for x in cells) == pytest.approx(r.busy_ds, rel=1e-9)
    assert sum(x["lost_chip_s"] for x in cells) == pytest.approx(r.lost_ds, rel=1e-9)
    (row,) = report_rows(r, ("model",))
    assert row["utilisation"] == pytest.approx(r.busy_ds / (64 * (r.t_end - r.t_start)))
    by_job = usage_cells(r, ("job",))
    assert {x["outcome"] for x in by_job} == {"succeeded", "preempted", "node-lost"}


def test_usage_needs_the_attempts() -> None:
    w = from_jobs("t", [{"submit": 0.0, "duration": 10.0, "count": 1}])
    r = Simulation(generate_cluster(8, "H100", 8), w, SimConfig()).run()
    with pytest.raises(ValueError, match="usage=True"):
        usage_cells(r, ("tenant",))


def test_sim_out_writes_the_accounting_report_per_policy(tmp_path: Path) -> None:
    from suanli.cli.main import app

    res = CliRunner().invoke(app, ["sim", "--chips", "32", "--jobs", "150", "--compare", "fifo,las",
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    for p in ("fifo", "las"):
        d = tmp_path / f"usage-{p}"
        data = json.loads((d / "usage.json").read_text())
        assert data["context"]["source"] == "twin" and data["by"] == ["tenant"]
        assert data["rows"] and all(set(COLUMNS) <= set(r) for r in data["rows"])
        assert data["by_model"][0]["model"] == "H100"
        for f in ("usage.csv", "usage.md", "usage_by_tenant.png", "cost_by_model.png"):
            assert (d / f).stat().st_size > 0, f
