"""The fitted calibration factors are reproducible from their (disjoint) calibration anchors."""

from __future__ import annotations

import pytest

from suanli.perf.calibration import NVIDIA
from suanli.perf.fit import fit_serve, fit_train, serve_rows, spread, train_rows
from suanli.perf.validation import CHECKS


def test_serving_factors_reproduce() -> None:
    fit = fit_serve()
    assert NVIDIA.serve_eff == pytest.approx(fit["serve_eff"], rel=0.01)
    assert NVIDIA.serve_eff_fp4 == pytest.approx(fit["serve_eff_fp4"], rel=0.01)
    assert NVIDIA.expert_m_half == pytest.approx(fit["expert_m_half"], rel=0.02)


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
    from suanli.perf.fit import TRTLLM_TABLE

    calib_models = {m for m, *_ in TRTLLM_TABLE} | {"Llama-2-70B-FlagPerf-H800"}
    for c in CHECKS:
        if c.kind == "serve":
            assert c.model not in calib_models
    assert all(c.accelerator != "H800" or c.model != "Llama-2-70B" for c in CHECKS)
