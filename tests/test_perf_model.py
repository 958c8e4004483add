"""Invariants and first-principles sanity of the training and serving estimators."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suanli.catalog.llms import llm
from suanli.perf.assumptions import Cluster
from suanli.perf.calibration import CN_DEFAULT, NVIDIA, calibration_for, family_of
from suanli.perf.hardware import chip
from suanli.perf.serve import ServeJob, estimate_serve
from suanli.perf.shape import shape, shape_of
from suanli.perf.train import TrainJob, best_layout, estimate_train, min_chips_by_memory


def test_flops_per_token_is_about_six_times_active_params() -> None:
    s = shape("llama-3.1-70b")
    # 2 x (active params - embedding): the classic 2N forward FLOPs per token
    assert s.linear_flops_body() + s.head_flops() == pytest.approx(2 * (70.554e9 - 128256 * 8192), rel=1e-3)
    ds = shape("deepseek-v3")
    assert ds.linear_flops_body() + ds.head_flops() == pytest.approx(2 * 36.63e9, rel=0.01)
    assert ds.kv_bytes_per_token(2.0) == 70272


def test_family_mapping_and_constants_are_sane() -> None:
    assert family_of("NVIDIA") == "nvidia" and calibration_for("Huawei") is CN_DEFAULT
    for cal in (NVIDIA, CN_DEFAULT):
        for f in ("gemm_eff", "hbm_eff", "link_eff", "net_eff", "train_eff", "serve_eff", "serve_eff_fp4"):
            assert 0 < getattr(cal, f) <= 1, f
        assert cal.sources
    # the Chinese default is never more optimistic than the measured NVIDIA kernels
    assert CN_DEFAULT.gemm_eff <= NVIDIA.gemm_eff and CN_DEFAULT.hbm_eff <= NVIDIA.hbm_eff


def test_unknown_peak_gives_a_row_with_nulls_and_a_reason() -> None:
    for acc in ("K100", "BI-V150"):
        t = estimate_train(TrainJob(model="llama-3.1-8b", tokens=1e12), acc)
        assert t.tokens_per_s is None and t.days is None and t.usd is None and "bf16_tflops" in (t.reason or "")
        s = estimate_serve(ServeJob(model="llama-3.1-8b"), acc)
        assert s.tokens_per_s is None and s.usd_per_million_tokens is None and s.reason


def test_unknown_price_keeps_time_and_chip_hours() -> None:
    t = estimate_train(TrainJob(model="llama-3.1-8b", tokens=1e12, chips=64), "H800")
    assert t.usd is None and t.chip_hours and t.days and t.energy_kwh
    s = estimate_serve(ServeJob(model="llama-3.1-8b"), "H800")
    assert s.usd_per_million_tokens is None and s.tokens_per_s


def test_known_price_gives_cost() -> None:
    t = estimate_train(TrainJob(model="llama-3.1-8b", tokens=1e12, chips=64), "H100")
    assert t.usd and t.usd > 0 and t.usd_per_chip_hour and 0.5 < t.usd_per_chip_hour < 5
    s = estimate_serve(ServeJob(model="llama-3.1-8b"), "H100")
    assert s.usd_per_million_tokens and s.usd_per_million_tokens > 0


def test_precision_fallback_is_noted() -> None:
    t = estimate_train(TrainJob(model="llama-3.1-8b", tokens=1e12, chips=64, precision="fp8"), "910B")
    assert t.precision == "bf16" and any("fp8" in n for n in t.notes)


def test_too_few_chips_is_explained() -> None:
    t = estimate_train(TrainJob(model="deepseek-v3", tokens=1e12, chips=8), "H100")
    assert t.tokens_per_s is None and "at least" in (t.reason or "")
    s = estimate_serve(ServeJob(model="deepseek-v3", chips=1), "S4000")
    assert s.tokens_per_s is None and s.reason


def test_serving_picks_a_replica_that_holds_weights_and_kv() -> None:
    s = estimate_serve(ServeJob(model="qwen2.5-72b", input_tokens=2000, output_tokens=500), "H200")
    # 73 GB of FP8 weights fit one 141 GB H200; the planner may still prefer 2 chips for their larger KV pool
    assert s.chips_per_replica in (1, 2) and s.precision == "fp8" and s.batch and s.batch >= 1
    big = estimate_serve(ServeJob(model="llama-3.1-405b", precision="bf16"), "H100")
    assert big.chips_per_replica and big.chips_per_replica >= 16  # 811 GB of BF16 weights


def test_slo_limits_the_batch_and_latency() -> None:
    free = estimate_serve(ServeJob(model="llama-3.1-70b"), "H100")
    tight = estimate_serve(ServeJob(model="llama-3.1-70b", tpot_slo_s=0.03), "H100")
    assert tight.tpot_s is not None and free.tpot_s is not None
    assert tight.reason is None and tight.tpot_s <= 0.03  # p99 under Poisson arrivals
    assert tight.latency == "p99 under Poisson arrivals" and free.latency and "mean" in free.latency
    assert (tight.batch or 0) <= (free.batch or 0)


def test_qps_sizes_the_replicas() -> None:
    one = estimate_serve(ServeJob(model="llama-3.1-8b", qps=1), "H100")
    many = estimate_serve(ServeJob(model="llama-3.1-8b", qps=200), "H100")
    assert (many.replicas or 0) > (one.replicas or 0) >= 1
    assert many.requests_per_s and many.requests_per_s >= 200


@settings(max_examples=12, deadline=None)
@given(acc=st.sampled_from(["H100", "910B", "BR100"]), exp=st.integers(min_value=0, max_value=4))
def test_more_chips_never_increase_days(acc: str, exp: int) -> None:
    s, c = shape("llama-3.1-70b"), chip(acc)
    cal, cluster = calibration_for(c.vendor), Cluster()
    job = TrainJob(model="llama-3.1-70b", tokens=1e12, global_batch_tokens=16 * 2**20)
    n = (min_chips_by_memory(s, c, cal, cluster, job) or 1) * 2**exp
    a, b = best_layout(s, c, cal, cluster, job, n), best_layout(s, c, cal, cluster, job, 2 * n)
    if a is not None and b is not None:
        assert b.tokens_per_s >= a.tokens_per_s * (1 - 1e-9)


@settings(max_examples=12, deadline=None)
@given(layers=st.integers(min_value=2, max_value=60), extra=st.integers(min_value=1, max_value=60),
       acc=st.sampled_from(["H100", "910B", "S4000"]))
def test_min_chips_by_memory_is_monotone_in_model_size(layers: int, extra: int, acc: str) -> None:
    base = llm("llama-3.1-8b")
    small = base.model_copy(update={"architecture": base.architecture.model_copy(update={"layers": layers})})
    large = base.model_copy(update={"architecture": base.architecture.model_copy(update={"layers": layers + extra})})
    c = chip(acc)
    cal, cluster = calibration_for(c.vendor), Cluster()
    job = TrainJob(model="llama-3.1-8b", tokens=1e12)
    n_small = min_chips_by_memory(shape_of(small), c, cal, cluster, job)
    n_large = min_chips_by_memory(shape_of(large), c, cal, cluster, job)
    assert n_small is not None and n_large is not None and n_small <= n_large


@settings(max_examples=10, deadline=None)
@given(chips=st.sampled_from([1, 2, 4, 8, 16, 32]), acc=st.sampled_from(["H200", "H100", "910B"]))
def test_more_chips_never_reduce_serving_capacity(chips: int, acc: str) -> None:
    a = estimate_serve(ServeJob(model="llama-3.1-8b", chips=chips), acc).tokens_per_s or 0.0
    b = estimate_serve(ServeJob(model="llama-3.1-8b", chips=2 * chips), acc).tokens_per_s or 0.0
    assert b >= a


def test_longer_prompts_mean_smaller_batches() -> None:
    short = estimate_serve(ServeJob(model="llama-3.1-70b", input_tokens=500, output_tokens=200), "H200")
    long = estimate_serve(ServeJob(model="llama-3.1-70b", input_tokens=8000, output_tokens=200,
                                   replica_chips=short.chips_per_replica), "H200")
    assert (long.max_batch or 0) < (short.max_batch or 0)


def test_bigger_batch_costs_time_per_step_but_raises_throughput() -> None:
    from suanli.perf.serve import step_time

    s, c = shape("llama-3.1-70b"), chip("H200")
    t1 = step_time(s, c, NVIDIA, Cluster(), precision="fp8", kv_bpv=1.0, n=1, batch=8, isl=1000, osl=500)
    t2 = step_time(s, c, NVIDIA, Cluster(), precision="fp8", kv_bpv=1.0, n=1, batch=256, isl=1000, osl=500)
    assert t2.step_s > t1.step_s and 256 / t2.step_s > 8 / t1.step_s
