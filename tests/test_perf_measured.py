"""suanli plan calibrate: a vendor's serving factor fitted on measured endpoints, read back by the planner."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from suanli.errors import SuanliError
from suanli.perf import measured
from suanli.perf.api import plan_serve
from suanli.perf.calibration import CN_DEFAULT, NVIDIA, calibration_for


def _m(acc: str = "BR100", vendor: str = "Biren", model: str = "Qwen2.5-7B", batch: float = 32,
       tps: float = 1000.0, chips: int = 1) -> measured.Measurement:
    return measured.Measurement(accelerator=acc, vendor=vendor, model=model, chips_per_replica=chips, replicas=1,
                                input_tokens=1000, output_tokens=200, concurrency=batch, output_tokens_per_s=tps)


def test_fit_recovers_a_known_factor() -> None:
    # measurements that are exactly 0.7 x the default prediction at three batches and two models
    ms = []
    for model, batch in (("Qwen2.5-7B", 8), ("Qwen2.5-7B", 64), ("Llama-3.1-8B", 16)):
        m = _m(model=model, batch=batch)
        pred = measured.predicted(m, CN_DEFAULT)
        assert pred is not None
        ms.append(replace(m, output_tokens_per_s=0.7 * pred))
    fit = measured.fit_vendor("Biren", ms)
    assert fit is not None
    assert fit.ratio == pytest.approx(0.7, rel=1e-6)
    assert fit.fitted.serve_eff == pytest.approx(0.7 * CN_DEFAULT.serve_eff)
    assert fit.fitted.family == "biren-measured"
    assert fit.rms("before") == pytest.approx(1 / 0.7 - 1, rel=1e-6)
    assert fit.rms("after") == pytest.approx(0.0, abs=1e-6)
    # other vendors' measurements do not count
    assert measured.fit_vendor("Huawei", ms) is None


def test_fit_is_the_geometric_mean_of_the_ratios() -> None:
    a, b = _m(batch=8), _m(batch=64)
    pa, pb = measured.predicted(a, CN_DEFAULT), measured.predicted(b, CN_DEFAULT)
    assert pa and pb
    fit = measured.fit_vendor("Biren", [replace(a, output_tokens_per_s=0.5 * pa),
                                        replace(b, output_tokens_per_s=2.0 * pb)])
    assert fit is not None and fit.ratio == pytest.approx(1.0)
    assert fit.rms("after") == pytest.approx((1.25 / 2) ** 0.5, rel=1e-6)  # errors +100% and -50%
    assert fit.fitted.uncertainty == pytest.approx(fit.rms("after"))


def test_planner_reads_the_calibration_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cal.json"
    monkeypatch.setenv(measured.ENV, str(path))
    before = plan_serve("qwen2.5-7b", ["BR100", "910B", "H100"])
    assert calibration_for("Biren") is CN_DEFAULT
    m = _m()
    pred = measured.predicted(m, CN_DEFAULT)
    assert pred is not None
    measured.save([replace(m, output_tokens_per_s=0.5 * pred)])
    after = plan_serve("qwen2.5-7b", ["BR100", "910B", "H100"])
    assert calibration_for("Biren").family == "biren-measured"
    assert after[0].family == "biren-measured"
    assert after[0].tokens_per_s == pytest.approx(0.5 * before[0].tokens_per_s, rel=0.02)
    # Ascend (another Chinese vendor) and NVIDIA keep their families and numbers
    assert after[1].family == "cn-default" and after[1].tokens_per_s == pytest.approx(before[1].tokens_per_s)
    assert calibration_for("NVIDIA") is NVIDIA and after[2].tokens_per_s == pytest.approx(before[2].tokens_per_s)


def test_result_validation() -> None:
    res = {"model": "mock-llm", "mean_input_tokens": 100, "mean_output_tokens": 50, "mean_concurrency": 4,
           "output_tokens_per_s": 300.0}
    with pytest.raises(SuanliError, match="--model"):
        measured.measurement_from_result(res, accelerator="BR100")
    m = measured.measurement_from_result(res, accelerator="br100", model="qwen2.5-7b")
    assert (m.accelerator, m.vendor, m.model, m.batch) == ("BR100", "Biren", "Qwen2.5-7B", 4)
    with pytest.raises(SuanliError, match="output_tokens_per_s"):
        measured.measurement_from_result({**res, "output_tokens_per_s": 0}, accelerator="BR100", model="qwen2.5-7b")
    with pytest.raises(SuanliError):
        measured.measurement_from_result(res, accelerator="no-such-chip", model="qwen2.5-7b")


def test_unreadable_calibration_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "cal.json"
    p.write_text("{broken")
    monkeypatch.setenv(measured.ENV, str(p))
    with pytest.raises(SuanliError, match="unreadable"):
        measured.load()


def test_cli_calibrate_records_and_shows_before_after(tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"model": "qwen2.5-7b", "mean_input_tokens": 1000, "mean_output_tokens": 200,
                               "mean_concurrency": 32, "output_tokens_per_s": 700.0}))
    cmd = [sys.executable, "-m", "suanli.cli.main", "plan", "calibrate", "--from", str(res), "-a", "BR100",
           "--calibration-file", str(cal), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["recorded"] and out["measurements"] == 1 and out["family_after"] == "biren-measured"
    assert out["rows"][0]["error_after"] == pytest.approx(0.0, abs=1e-9)
    assert out["serve_eff_after"] == pytest.approx(out["serve_eff_before"] * out["ratio"])
    assert len(json.loads(cal.read_text())["measurements"]) == 1
    p = subprocess.run([*cmd[:-1], "--dry-run", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout)["measurements"] == 2
    assert len(json.loads(cal.read_text())["measurements"]) == 1  # dry run records nothing
    p = subprocess.run([sys.executable, "-m", "suanli.cli.main", "plan", "calibrate", "--from",
                        str(tmp_path / "missing.json"), "-a", "BR100"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--from" in p.stderr and "Traceback" not in p.stderr
