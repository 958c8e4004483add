"""The fitted calibration factors are reproducible from their (disjoint) calibration anchors."""

from __future__ import annotations

import pytest

from suanli.perf.calibration import NVIDIA, with_factors
from suanli.perf.fit import (
    TRTLLM_TABLE,
    _geo,
    fit_serve,
    fit_train,
    moe_fit,
    rms_error,
    serve_rows,
    spread,
    train_rows,
)
from suanli.perf.shape import shape
from suanli.perf.validation import CHECKS


def test_serving_factors_reproduce() -> None:
    fit = fit_serve()
    assert NVIDIA.serve_eff == pytest.approx(fit["serve_eff"], rel=0.01)
    assert NVIDIA.serve_eff_fp4 == pytest.approx(fit["serve_eff_fp4"], rel=0.01)
    assert NVIDIA.expert_m_half == pytest.approx(fit["expert_m_half"], rel=0.02)
    assert NVIDIA.moe_eff == pytest.approx(fit["moe_eff"], rel=0.01)
    # the fixed step costs fitted with them: ~0 per step, a few microseconds per sequence and step
    assert NVIDIA.seq_overhead_s == pytest.approx(fit["seq_overhead_s"], rel=0.1)
    assert NVIDIA.step_overhead_s == pytest.approx(fit["step_overhead_s"], abs=1e-4)
    assert 1e-6 < NVIDIA.seq_overhead_s < 1e-5


def test_moe_factors_rest_on_several_models() -> None:
    # the MoE pair is fitted on four models of very different expert shapes, on three chip generations
    moe_models = {m for (m, *_rest) in TRTLLM_TABLE if shape(m).is_moe}
    assert moe_models >= {"Qwen3-235B-A22B", "Qwen3-30B-A3B", "Llama-4-Maverick-17B-128E", "Llama-4-Scout-17B-16E"}
    rows = serve_rows(NVIDIA, moe=True)
    assert len(rows) >= 90 and {r.label.split()[1] for r in rows} == {"H100", "H200", "B200"}
    # no model sits far off the family fit on average (geometric mean within 35%)
    for model in moe_models:
        mine = [r.ratio for r in rows if r.label.split()[0] == model]
        assert 1 / 1.35 < _geo(mine) < 1.35, model
    # the fitted expert_m_half is a real minimum of the error, not an end of the search interval
    base = with_factors(NVIDIA, moe_eff=1.0)
    best = moe_fit(base, NVIDIA.expert_m_half)[1]
    assert best < moe_fit(base, NVIDIA.expert_m_half / 2)[1] and best < moe_fit(base, NVIDIA.expert_m_half * 2)[1]


def test_printed_bands_are_the_calibration_errors() -> None:
    assert NVIDIA.uncertainty == pytest.approx(rms_error(serve_rows(NVIDIA, moe=False)), abs=0.02)
    assert NVIDIA.uncertainty_moe == pytest.approx(rms_error(serve_rows(NVIDIA, moe=True)), abs=0.02)


def test_training_factor_reproduces() -> None:
    assert NVIDIA.train_eff == pytest.approx(fit_train()["train_eff"], rel=0.01)


def test_calibration_rows_sit_close_to_the_family_fit() -> None:
    dense = serve_rows(NVIDIA, moe=False)
    assert len(dense) >= 50
    # one factor per family explains most dense rows within 25%
    within = sum(1 for r in dense if abs(r.ratio - 1) < 0.25) / len(dense)
    assert within > 0.8
    assert spread(train_rows(NVIDIA)) < 0.06


def test_calibration_and_validation_sets_are_disjoint() -> None:
    calib_models = {m for m, *_ in TRTLLM_TABLE} | {"Llama-2-70B-FlagPerf-H800"}
    for c in CHECKS:
        if c.kind == "serve":
            assert c.model not in calib_models
    assert all(c.accelerator != "H800" or c.model != "Llama-2-70B" for c in CHECKS)
