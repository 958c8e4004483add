"""Planner, second round (issue 15): latency-bound serving, reasoning models on expert parallelism, small models'
fixed costs, FP4 / LoRA training and rack-scale systems, input checks, trillion-parameter and multimodal models."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from typer.testing import CliRunner

from suanli.catalog.llms import computed_params, llm
from suanli.cli.main import app
from suanli.perf.assumptions import Cluster
from suanli.perf.calibration import NVIDIA
from suanli.perf.hardware import chip
from suanli.perf.serve import (
    MAX_SEQS_PER_RANK,
    ServeJob,
    engine_cap,
    estimate_serve,
    latency_at,
    replica_sizes,
    step_time,
)
from suanli.perf.shape import shape
from suanli.perf.train import TrainJob, estimate_train, ring_latency
from suanli.perf.units import InvalidQuantity

LLAMA2 = {"model": "Llama-2-70B", "input_tokens": 222.3, "output_tokens": 294.45, "precision": "fp8", "chips": 8}


# ------------------------------------------------------------------------------------ 1. latency-bound serving


def test_throughput_falls_monotonically_as_the_tpot_slo_tightens() -> None:
    per_chip = []
    for slo in (None, 0.2, 0.1, 0.06, 0.04, 0.025):
        e = estimate_serve(ServeJob(**LLAMA2, tpot_slo_s=slo, ttft_slo_s=2.0 if slo else None), "H200")
        assert e.reason is None and e.tokens_per_s_per_chip
        if slo is not None:
            assert e.tpot_s is not None and e.tpot_s <= slo and e.latency == "p99 under Poisson arrivals"
        per_chip.append(e.tokens_per_s_per_chip)
    assert all(a >= b for a, b in itertools.pairwise(per_chip)), per_chip
    assert per_chip[-1] < 0.8 * per_chip[0]  # an interactive bound costs real throughput


def test_ttft_slo_alone_binds_and_is_met_at_p99() -> None:
    free = estimate_serve(ServeJob(model="llama-3.1-70b", input_tokens=4000, output_tokens=300), "H100")
    tight = estimate_serve(ServeJob(model="llama-3.1-70b", input_tokens=4000, output_tokens=300,
                                    ttft_slo_s=0.5), "H100")
    assert tight.reason is None and tight.ttft_s is not None and tight.ttft_s <= 0.5
    assert (tight.tokens_per_s_per_chip or 0) < (free.tokens_per_s_per_chip or 0)


def test_p99_load_model() -> None:
    def step(b: float) -> float:
        return 0.02 + 1e-4 * b

    light = latency_at(10, bmax=1000, ranks=1, isl=500, osl=500, max_num_tokens=8192, t_pre=0.05, step=step)
    heavy = latency_at(600, bmax=1000, ranks=1, isl=500, osl=500, max_num_tokens=8192, t_pre=0.05, step=step)
    assert light.feasible and heavy.feasible
    assert light.n99 > 10 and heavy.n99 > 600  # p99 concurrency above the mean
    assert heavy.tpot99_s > light.tpot99_s and heavy.ttft99_s > light.ttft99_s
    assert light.ttft99_s >= 0.05 + step(light.n99)  # at least the prompt's own prefill + one step
    # the p99 load must fit the engine's slots, and the prompt budget must keep up with arrivals
    assert not latency_at(990, bmax=1000, ranks=1, isl=500, osl=500, max_num_tokens=8192, t_pre=0.05,
                          step=step).feasible
    assert not latency_at(500, bmax=1000, ranks=1, isl=20000, osl=500, max_num_tokens=8192, t_pre=0.05,
                          step=step).feasible


def test_server_scenario_is_slower_than_offline_on_the_same_chips() -> None:
    offline = estimate_serve(ServeJob(**LLAMA2), "H200")
    server = estimate_serve(ServeJob(**LLAMA2, ttft_slo_s=2.0, tpot_slo_s=0.2), "H200")
    assert (server.tokens_per_s or 0) < (offline.tokens_per_s or 0)
    assert (server.batch or 0) < (offline.batch or 0)


# ------------------------------------------------------------------- 2. reasoning models, expert parallelism


def test_engine_caps_concurrency_per_rank_and_max_batch_is_per_replica() -> None:
    job = ServeJob(model="DeepSeek-R1", input_tokens=800, output_tokens=3900, precision="fp4", replica_chips=8,
                   expert_parallel=True)
    assert engine_cap(job, 8) == 8 * MAX_SEQS_PER_RANK
    e = estimate_serve(job, "B200")
    assert e.ep == 8 and e.batch is not None and e.batch <= 8 * MAX_SEQS_PER_RANK  # was ~9,000 (KV only)
    capped = estimate_serve(ServeJob(**{**job.__dict__, "max_batch": 512}), "B200")
    assert capped.batch is not None and capped.batch <= 512  # per replica, not per GPU
    assert (capped.tokens_per_s or 0) < (e.tokens_per_s or 0)


def test_mla_decode_attention_works_on_the_absorbed_latent() -> None:
    r1, llama = shape("DeepSeek-R1"), shape("Llama-3.1-70B")
    assert r1.decode_attn_flops_per_key() == pytest.approx(2 * 128 * (576 + 512) * 61)
    assert r1.decode_attn_flops_per_key() > 3 * r1.attn_flops_per_key()
    assert llama.decode_attn_flops_per_key() == llama.attn_flops_per_key()


def test_replicas_can_span_a_whole_72_chip_nvlink_domain() -> None:
    assert 72 in replica_sizes(Cluster().for_chip(72)) and max(replica_sizes(Cluster())) == 64
    e = estimate_serve(ServeJob(model="DeepSeek-R1", input_tokens=800, output_tokens=3900, precision="fp4",
                                replica_chips=72, expert_parallel=True), "GB200-NVL72")
    assert e.reason is None and e.chips_per_replica == 72 and e.ep == 72 and e.systems == 1
    # on an 8-GPU server the same replica would leave the NVLink domain: no expert-parallel replica of 72
    h = estimate_serve(ServeJob(model="DeepSeek-R1", input_tokens=800, output_tokens=3900, replica_chips=72,
                                expert_parallel=True), "B200")
    assert h.reason is not None


# ------------------------------------------------------------------------------ 3. small models: fixed costs


def test_per_sequence_host_cost_weighs_more_on_small_models() -> None:
    h100 = chip("H100")

    def share(model: str, n: int) -> float:
        st = step_time(shape(model), h100, NVIDIA, Cluster().for_chip(None), precision="fp8", kv_bpv=1.0, n=n,
                       batch=1024, isl=128, osl=128)
        return st.fixed_s / st.step_s

    assert NVIDIA.seq_overhead_s > 0
    assert share("Llama-3.1-8B", 1) > 2 * share("Llama-3.1-405B", 8)


def test_small_model_training_loses_per_chip_speed_as_data_parallelism_grows() -> None:
    assert ring_latency(1024, Cluster().for_chip(None)) > ring_latency(64, Cluster().for_chip(None)) > 0
    speeds = []
    for n in (64, 512, 2048):
        t = estimate_train(TrainJob(model="Llama-3.1-8B", tokens=1e12, chips=n, global_batch_tokens=4 * 2**20),
                           "H100")
        assert t.tokens_per_s_per_chip is not None
        speeds.append(t.tokens_per_s_per_chip)
    assert speeds[0] > speeds[1] > speeds[2]


# --------------------------------------------------------------- 4. FP4 training, LoRA, rack-scale systems


def test_fp4_training_on_blackwell_and_refused_without_fp4_units() -> None:
    job = TrainJob(model="Llama-3.1-70B", tokens=1e12, chips=64)
    fp8 = estimate_train(TrainJob(**{**job.__dict__, "precision": "fp8"}), "B200")
    fp4 = estimate_train(TrainJob(**{**job.__dict__, "precision": "fp4"}), "B200")
    assert fp4.reason is None and fp4.precision == "fp4"
    assert (fp4.tokens_per_s or 0) > (fp8.tokens_per_s or 0)
    refused = estimate_train(TrainJob(**{**job.__dict__, "precision": "fp4"}), "H100")
    assert refused.tokens_per_s is None and refused.reason and "FP4" in refused.reason and "H100" in refused.reason


def test_lora_fine_tuning_needs_less_memory_and_compute() -> None:
    full = estimate_train(TrainJob(model="Llama-3.1-70B", tokens=1e9, method="full", seq=4096), "H100")
    lora = estimate_train(TrainJob(model="Llama-3.1-70B", tokens=1e9, method="lora", seq=4096), "H100")
    assert lora.min_chips_memory is not None and full.min_chips_memory is not None
    assert lora.min_chips_memory < full.min_chips_memory
    same = {"tokens": 1e9, "chips": 64, "seq": 4096}
    f64 = estimate_train(TrainJob(model="Llama-3.1-70B", method="full", **same), "H100")
    l64 = estimate_train(TrainJob(model="Llama-3.1-70B", method="lora", **same), "H100")
    assert (l64.tokens_per_s or 0) > (f64.tokens_per_s or 0)
    with pytest.raises(InvalidQuantity, match="--method"):
        TrainJob(model="Llama-3.1-70B", tokens=1e9, method="qlora-ish")


@pytest.mark.parametrize("acc,domain", [("GB200-NVL72", 72), ("CloudMatrix384", 384)])
def test_rack_scale_systems_are_one_scale_up_domain(acc: str, domain: int) -> None:
    c = chip(acc)
    assert c.scaleup_domain == domain and c.system
    e = estimate_serve(ServeJob(model="DeepSeek-R1", input_tokens=2000, output_tokens=500, chips=domain), acc)
    assert e.reason is None and e.chips_per_replica is not None and e.chips_per_replica <= domain
    assert e.systems == 1 and any(f"{domain} chips" in n for n in e.notes)
    t = estimate_train(TrainJob(model="DeepSeek-V3", tokens=1e12, chips=1024, precision="bf16"), acc)
    assert t.reason is None and t.chips == 1024
    # a user-set scale-up size still wins over the system's own
    assert Cluster(scaleup_size=8).for_chip(domain).domain == 8


# ------------------------------------------------------------------------------------------- 5. input checks


def test_prompt_beyond_the_context_window_is_refused() -> None:
    with pytest.raises(InvalidQuantity, match="context window of Qwen3-8B"):
        estimate_serve(ServeJob(model="Qwen3-8B", input_tokens=40_000, output_tokens=2_000), "H100")
    estimate_serve(ServeJob(model="Qwen3-8B", input_tokens=30_000, output_tokens=2_000), "H100")  # fits


def test_unreachable_slo_gives_no_plan_but_the_best_latency() -> None:
    e = estimate_serve(ServeJob(model="Llama-3.1-405B", ttft_slo_s=0.05, tpot_slo_s=0.001), "H100")
    assert e.chips is None and e.tokens_per_s is None and e.batch is None
    assert e.reason and "not reachable on H100" in e.reason and "best TTFT is" in e.reason


@pytest.mark.parametrize("args,needle", [
    (["serve", "--model", "llama2-70b", "-a", "H100", "--input-tokens", "-5"], "--input-tokens must be a positive"),
    (["serve", "--model", "qwen3-8b", "-a", "H100", "--input-tokens", "40000", "--output-tokens", "2000"],
     "context window"),
    (["serve", "--model", "llama2-70b", "-a", "H100", "--image-tokens", "256"], "no vision encoder"),
    (["serve", "--model", "llama2-70b", "-a", "H100", "--max-batch", "0"], "--max-batch"),
    (["train", "--model", "llama2-70b", "-a", "H100", "--tokens", "1T", "--precision", "fp2"], "--precision"),
])
def test_cli_rejects_bad_input_in_one_line(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(app, ["plan", *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_cli_unreachable_slo_prints_dashes_and_the_reason() -> None:
    res = CliRunner().invoke(app, ["plan", "serve", "--model", "llama-3.1-405b", "-a", "H100", "--ttft-slo", "50ms",
                                   "--tpot-slo", "1ms"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "not reachable on H100: best TTFT is" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("│ H100"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert all(c in ("-", "H100", "fp8") for c in cells), cells  # no 0 anywhere


def test_cli_fp4_train_and_lora_json() -> None:
    res = CliRunner().invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "-a", "B200,H100", "--tokens", "100B",
                                   "--precision", "fp4", "--method", "lora", "--chips", "8", "--json"])
    assert res.exit_code == 0, res.output
    b200, h100 = json.loads(res.output)
    assert b200["precision"] == "fp4" and b200["tokens_per_s"] > 0 and b200["reason"] is None
    assert h100["tokens_per_s"] is None and "FP4" in h100["reason"]


# ------------------------------------------------------------------ trillion-parameter and multimodal models


def test_trillion_parameter_and_newest_models_are_planned() -> None:
    k2 = llm("kimi-k2")
    assert k2.total_params_b == pytest.approx(1026, rel=0.01) and k2.active_params_b == pytest.approx(32.9, rel=0.01)
    e = estimate_serve(ServeJob(model="Kimi-K2", precision="fp4"), "GB200-NVL72")
    assert e.reason is None and e.chips_per_replica is not None and e.chips_per_replica >= 8  # ~580 GB in FP4
    for name in ("deepseek-v3.1", "qwen3-coder-480b-a35b", "qwen3-235b-a22b-2507"):
        assert estimate_serve(ServeJob(model=name), "H200").reason is None


def test_multimodal_image_tokens_cost_vision_flops_and_prefill() -> None:
    m = llm("qwen2.5-vl-7b")
    p = computed_params(m.architecture)
    assert m.vision_params_b is not None and p.vision / 1e9 == pytest.approx(m.vision_params_b, rel=0.02)
    s = shape("qwen2.5-vl-7b")
    assert s.vision_flops_per_image_token > 2 * 4 * 0.6e9  # 4 patches through a ~0.6B ViT per image token
    text = estimate_serve(ServeJob(model="qwen2.5-vl-7b", input_tokens=200, output_tokens=200), "H100")
    img = estimate_serve(ServeJob(model="qwen2.5-vl-7b", input_tokens=200, output_tokens=200, image_tokens=1280),
                         "H100")
    assert (img.ttft_s or 0) > (text.ttft_s or 0) and (img.tokens_per_s or 0) < (text.tokens_per_s or 0)
    with pytest.raises(InvalidQuantity, match="context window"):
        estimate_serve(ServeJob(model="qwen2.5-vl-7b", input_tokens=1000, output_tokens=1000,
                                image_tokens=127_000), "H100")
    vl = estimate_serve(ServeJob(model="qwen3-vl-235b-a22b", image_tokens=1024), "H200")
    assert vl.reason is None and not math.isnan(vl.tokens_per_s or 0)
