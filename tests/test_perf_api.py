"""The stable library API other layers call: job_throughput, relative_speed, plan_train, plan_serve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from suanli.errors import UnknownName
from suanli.perf import job_throughput, plan_serve, plan_train, relative_speed


def test_job_throughput_train_and_serve() -> None:
    t = job_throughput("llama-3.1-70b", "H100", 64, "train")
    assert t is not None and t > 0
    assert job_throughput("llama-3.1-70b", "h100", 128, "train") > t  # type: ignore[operator]
    s = job_throughput("qwen2.5-72b", "910B", 8, "serve", input_tokens=2000, output_tokens=500)
    assert s is not None and s > 0
    assert job_throughput("deepseek-v3", "S4000", 1, "serve") is None  # does not fit
    assert job_throughput("llama-3.1-8b", "K100", 8, "train") is None  # unknown peak


def test_job_throughput_rejects_bad_input() -> None:
    with pytest.raises(UnknownName):
        job_throughput("gpt-9", "H100", 8)
    with pytest.raises(UnknownName):
        job_throughput("llama-3.1-8b", "TPUv9", 8)
    with pytest.raises(ValueError):
        job_throughput("llama-3.1-8b", "H100", 0)


def test_relative_speed_peak_ratio_without_llm() -> None:
    r = relative_speed(["H100", "910B", "S4000", "K100"])
    assert r["H100"] == 1.0 and r["K100"] is None
    assert r["910B"] == pytest.approx(376 / 989) and r["S4000"] == pytest.approx(100 / 989)


def test_relative_speed_for_a_model() -> None:
    r = relative_speed(["H200", "H100", "910B", "BI-V150"], llm="llama-3.1-70b")
    known = {k: v for k, v in r.items() if v is not None}
    assert max(known.values()) == 1.0 and r["BI-V150"] is None
    assert r["H200"] >= r["H100"] > r["910B"] > 0  # type: ignore[operator]
    t = relative_speed(["H100", "BR100"], llm="llama-3.1-8b", kind="train")
    assert all(v is not None and 0 < v <= 1 for v in t.values())


def test_plan_functions_return_one_row_per_accelerator() -> None:
    rows = plan_train("llama-3.1-8b", ["H100", "K100"], 1e12, chips=64)
    assert [r.accelerator for r in rows] == ["H100", "K100"] and rows[0].days and rows[1].reason
    srows = plan_serve("llama-3.1-8b", ["H20", "S4000"], qps=5)
    assert all(r.tokens_per_s for r in srows)


def test_perf_imports_nothing_from_the_upper_layers() -> None:
    code = ("import sys, json, suanli.perf, suanli.perf.validation, suanli.perf.fit; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('suanli.'))))")
    mods = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)
    bad = [m for m in mods if m.split(".")[1] in ("sched", "sim", "control", "api", "cli", "fleet", "workload")]
    assert not bad, bad
