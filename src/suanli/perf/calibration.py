"""Calibration constants of the performance model: one set per vendor family, each with where it comes from.

The model itself is first principles (FLOPs, bytes, bandwidth, capacity, interconnect); these constants say how
much of a rated peak real software reaches. There is **one set per vendor family, never one per benchmark**:

* kernel efficiencies (``gemm_eff``, ``hbm_eff``, ``link_eff``) are *measured microbenchmarks* (BAAI FlagPerf, via
  ``shared/research/anchors.md``), not fitted;
* the end-to-end factors (``train_eff``, ``serve_eff``, ``serve_eff_fp4``, ``expert_m_half``, ``moe_eff``) and the
  fixed step costs (``step_overhead_s``, ``seq_overhead_s``) cover what a roofline does not (kernel launch and
  scheduling gaps, host work per sequence, non-GEMM kernels, imperfect overlap, stragglers, MoE routing and
  expert-parallel waits). Each is fitted
  *once* on a calibration set that is disjoint from the validation set (:mod:`suanli.perf.fit` recomputes them; a
  test checks these numbers):
  - ``train_eff``: BAAI FlagPerf's Llama 2 70B Megatron case on 32 H800 (two parallel layouts, measured tokens/s);
  - ``serve_eff`` / ``serve_eff_fp4`` / ``step_overhead_s`` / ``seq_overhead_s``: TensorRT-LLM's published
    throughput table, dense rows (Llama 3.1 8B,
    Llama 3.3 70B, Llama 3.1 405B on H100, H200 and B200 at ten input/output lengths;
    NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md, commit 00f3768);
  - ``expert_m_half`` / ``moe_eff``: the MoE rows of the same table, four models of very different expert shapes
    (Qwen3-235B-A22B 128 experts top-8, Qwen3-30B-A3B 128 top-8, Llama 4 Maverick 128 top-1 on every other layer,
    Llama 4 Scout 16 top-1), fitted jointly.
  The validation (``suanli.perf.validation``: MLPerf Inference, DeepSeek-V3 GPU-hours, Llama 3 405B MFU) never
  feeds back into these numbers.

Chinese vendors have no published end-to-end measurement in our anchors: they get a *conservative default*
(``cn-default``) with FlagPerf's lower-end kernel efficiencies and NVIDIA's software factors, and a wide
uncertainty band. A vendor with its own measurements gets its own family here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Calibration:
    family: str
    gemm_eff: float  # fraction of rated dense peak a large GEMM reaches
    hbm_eff: float  # fraction of rated memory bandwidth a streaming kernel reaches
    link_eff: float  # fraction of rated scale-up link bandwidth an all-reduce reaches (bus bandwidth)
    net_eff: float  # fraction of rated scale-out (NIC) bandwidth a collective reaches
    train_eff: float  # end-to-end training factor on top of the roofline terms (fitted, see module doc)
    tp_overlap: float  # share of tensor-parallel communication hidden behind compute in training (fitted)
    serve_eff: float  # end-to-end serving factor on top of the roofline terms (fitted, see module doc)
    serve_eff_fp4: float  # the same for FP4 GEMMs (4-bit tensor units reach a smaller share of their peak)
    expert_m_half: float  # tokens per expert per step at which a grouped expert GEMM reaches half its peak
    moe_eff: float  # end-to-end factor of a MoE model's serving step on top of serve_eff (routing, EP waits)
    step_overhead_s: float  # fixed wall time of every serving engine step (launches, scheduling, host sync)
    seq_overhead_s: float  # wall time per running sequence and step on its rank (sampling, detokenising, bookkeeping)
    kv_pool_frac: float  # share of memory left after weights that the serving engine gives the KV cache
    mem_reserve_gb: float  # per-chip memory the runtime keeps (context, workspace, fragmentation)
    confidence: str  # "calibrated" (end-to-end measurements behind it) or "low" (defaults only)
    uncertainty: float  # relative band printed next to an estimate of a dense model (e.g. 0.15 = +-15%)
    uncertainty_moe: float  # the same for mixture-of-experts models (the least-constrained part of the model)
    sources: tuple[tuple[str, str], ...] = ()
    dense_saturation: bool = True  # dense GEMMs saturate with their token rows like grouped expert GEMMs do


NVIDIA = Calibration(
    family="nvidia",
    # FlagPerf A100-40GB: BF16 GEMM 259.2 of 312 TFLOPS = 83.1% (anchors.md); used for every NVIDIA precision
    gemm_eff=0.83,
    # FlagPerf A100: HBM 1,328 of 1,555 GB/s = 85.4% (anchors.md)
    hbm_eff=0.85,
    # FlagPerf A100: NVLink all-reduce 467.9 of 600 GB/s = 78% (anchors.md)
    link_eff=0.78,
    # no scale-out microbenchmark in the anchors: the NVLink all-reduce efficiency is reused for the NICs
    net_eff=0.78,
    # fitted by suanli.perf.fit.fit_train() on FlagPerf Llama 2 70B / 32 x H800 (see module doc)
    train_eff=0.603,
    # Megatron-style TP collectives are not overlapped: a fit of (train_eff, tp_overlap) on the two FlagPerf
    # layouts lands on tp_overlap = 0
    tp_overlap=0.0,
    # fitted by suanli.perf.fit.dense_fit() on the TensorRT-LLM table, dense rows (Llama 3.x 8B/70B/405B), jointly
    # with the two fixed step costs below: FP8 GEMMs ...
    serve_eff=0.819,
    # ... and FP4 GEMMs (B200)
    serve_eff_fp4=0.572,
    # fitted jointly by suanli.perf.fit.fit_serve() on the MoE rows of the same table (Qwen3-235B-A22B,
    # Qwen3-30B-A3B, Llama 4 Maverick, Llama 4 Scout: 90 rows, H100/H200/B200, TP1 and expert parallel):
    # grouped-GEMM half-efficiency point and the MoE step factor (least squares in log of the throughput)
    # (expert_m_half also sets the saturation of dense GEMMs over their token rows)
    expert_m_half=330.0,
    moe_eff=0.633,
    # the dense fit's fixed costs: per step ~0 (TensorRT-LLM runs decode steps as CUDA graphs), per sequence on its
    # rank and step 3.3 us (sampling, detokenising, scheduling: 6.8 ms per step at 2,048 sequences)
    step_overhead_s=0.0,
    seq_overhead_s=3.3e-6,
    # TensorRT-LLM's default kv_cache_free_gpu_mem_fraction (0.9 of the memory free after weights)
    kv_pool_frac=0.90,
    # CUDA context + activation workspace + allocator slack, order of magnitude of what serving engines keep
    mem_reserve_gb=3.0,
    confidence="calibrated",
    # RMS error of the calibration rows, dense (11.9%) and MoE (23.7%): suanli.perf.fit.rms_error, see docs/planner.md
    uncertainty=0.12,
    uncertainty_moe=0.24,
    sources=(
        ("gemm_eff/hbm_eff/link_eff", "BAAI FlagPerf A100 microbenchmarks, shared/research/anchors.md"),
        ("train_eff", "FlagOpen/FlagPerf training/nvidia/llama2_70B-megatron: 791.37 / 641.93 tokens/s/GPU, 32 H800"),
        ("serve_eff/serve_eff_fp4/expert_m_half/moe_eff/step_overhead_s/seq_overhead_s",
         "NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @ 00f3768 (170 rows, H100/H200/B200)"),
    ),
)

CN_DEFAULT = Calibration(
    family="cn-default",
    # FlagPerf: BF16 GEMM reaches 80-84% of rated peak across vendors (MetaX C550 82.8%); low end taken
    gemm_eff=0.80,
    # FlagPerf: HBM 75-85% of rated; low end taken
    hbm_eff=0.75,
    # FlagPerf: all-reduce ~78% of rated link bandwidth (A100 measurement; no vendor-specific figure)
    link_eff=0.78,
    net_eff=0.78,
    # no published end-to-end measurement for these stacks in the anchors: NVIDIA's fitted factors are reused
    train_eff=NVIDIA.train_eff,
    tp_overlap=NVIDIA.tp_overlap,
    serve_eff=NVIDIA.serve_eff,
    serve_eff_fp4=NVIDIA.serve_eff_fp4,
    expert_m_half=NVIDIA.expert_m_half,
    moe_eff=NVIDIA.moe_eff,
    step_overhead_s=NVIDIA.step_overhead_s,
    seq_overhead_s=NVIDIA.seq_overhead_s,
    kv_pool_frac=0.90,
    mem_reserve_gb=3.0,
    confidence="low",
    uncertainty=0.40,
    uncertainty_moe=0.50,
    sources=(
        ("gemm_eff/hbm_eff/link_eff", "BAAI FlagPerf lower-end measured efficiencies, shared/research/anchors.md"),
        ("train_eff/serve_eff/...",
         "inherited from the NVIDIA fit: no end-to-end anchor for these vendors (UNVALIDATED)"),
    ),
)

FAMILIES: dict[str, Calibration] = {c.family: c for c in (NVIDIA, CN_DEFAULT)}

# vendor (as the accelerator catalog spells it) -> family; vendors not listed use cn-default
VENDOR_FAMILY: dict[str, str] = {"NVIDIA": "nvidia"}


def family_of(vendor: str) -> str:
    return VENDOR_FAMILY.get(vendor, "cn-default")


def calibration_for(vendor: str) -> Calibration:
    """The calibration set that applies to chips of ``vendor``: fitted on the user's own measurements when
    ``suanli plan calibrate`` recorded some (:mod:`suanli.perf.measured`), else the family default."""
    from suanli.perf.measured import measured_calibration

    return measured_calibration(vendor) or FAMILIES[family_of(vendor)]


def with_factors(cal: Calibration, **factors: float) -> Calibration:
    """A copy with other end-to-end factors (used by the fitting code)."""
    return replace(cal, **factors)
