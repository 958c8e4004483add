"""Serving estimates: chips per replica, batch, prefill/decode throughput, TTFT/TPOT, replicas, cost.

Model (one replica of ``n = tp x pp`` chips, continuous batching, steady state):

* memory: weights (params x bytes/param) + a KV pool = ``kv_pool_frac`` x (memory - weights - reserve); a sequence
  in flight holds on average ``input + output/2`` tokens of KV, so ``batch_max = pool / (kv_bytes x (in + out/2))``
  (capped by the engine's ``max_batch``);
* one engine step emits one token for each of the ``B`` running sequences and, to keep the batch full, admits
  ``B x in/out`` prompt tokens (chunked prefill), so ``T = B (1 + in/out)`` tokens go through the weights;
* step time = [ linear layers  max(FLOPs / (n peak gemm_eff), weight bytes / (n BW hbm_eff))
  + prompt attention FLOPs / (n peak gemm_eff)
  + decode attention max(FLOPs, KV bytes / (n BW hbm_eff))
  + tensor-parallel all-reduce bytes / (link BW link_eff) + pipeline hand-off ] / serve_eff;
  a MoE model adds its routed experts ``max(FLOPs / (n peak gemm_eff g), touched expert bytes / (n BW hbm_eff))``
  with the grouped-GEMM efficiency ``g = m / (m + expert_m_half)`` at ``m`` tokens per expert per step, the
  expert-parallel all-to-all, and divides the whole step by ``moe_eff`` as well (routing, token permutation,
  per-expert launches, and, under expert parallelism, ranks waiting for each other at every all-to-all);
* TPOT = step time; output tokens/s per replica = B / step; TTFT = prefill of one prompt alone + one step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from suanli.perf.assumptions import Cluster, Money
from suanli.perf.calibration import Calibration
from suanli.perf.hardware import BYTES_PER_PARAM, Chip, setup
from suanli.perf.shape import Shape
from suanli.perf.units import InvalidQuantity

REPLICA_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class ServeJob:
    model: str
    input_tokens: float = 2000.0
    output_tokens: float = 500.0
    qps: float | None = None  # target requests per second for the whole deployment
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    precision: str = "auto"  # auto | bf16 | fp8 | fp4 (weights and GEMMs)
    chips: int | None = None  # fixed deployment size; otherwise sized for qps (or one replica)
    max_batch: int = 2048  # engine limit on sequences in flight per replica
    max_num_tokens: int = 8192  # engine limit on tokens per step (TensorRT-LLM's default max_num_tokens)
    replica_chips: int | None = None  # force chips per replica (tp x pp, or ep for a MoE model)
    expert_parallel: bool | None = None  # MoE replicas: force (True) or forbid (False) expert parallelism

    def __post_init__(self) -> None:
        if self.input_tokens <= 0 or self.output_tokens < 1:
            raise InvalidQuantity("input tokens must be > 0 and output tokens >= 1")
        if self.qps is not None and self.qps <= 0:
            raise InvalidQuantity(f"--qps must be positive, got {self.qps}")
        if self.chips is not None and self.chips <= 0:
            raise InvalidQuantity(f"--chips must be a positive whole number, got {self.chips}")
        if self.precision not in ("auto", "bf16", "fp8", "fp4"):
            raise InvalidQuantity(f"precision must be auto, bf16, fp8 or fp4, got {self.precision!r}")
        if self.max_batch < 1:
            raise InvalidQuantity("max batch must be >= 1")


@dataclass(frozen=True)
class StepBreakdown:
    linear_s: float
    attention_s: float
    comm_s: float
    step_s: float
    busy: float  # fraction of the step the tensor units are busy at gemm efficiency


@dataclass
class ReplicaEstimate:
    chips: int
    tp: int
    pp: int
    ep: int  # > 1: data-parallel attention + expert parallelism over the replica
    precision: str
    kv_bytes_per_value: float
    max_batch: int
    batch: int
    step: StepBreakdown
    ttft_s: float
    tokens_per_s: float  # output tokens/s of the replica at `batch`
    prefill_tokens_per_s: float  # prompt tokens/s of the replica doing only prefill
    decode_tokens_per_s: float  # output tokens/s of the replica doing only decode at max batch
    meets_slo: bool


@dataclass
class ServeEstimate:
    """One row of a serving plan (``None`` = unknown; ``reason`` says why)."""

    accelerator: str
    vendor: str
    family: str
    model: str
    precision: str | None = None
    chips: int | None = None
    chips_per_replica: int | None = None
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    replicas: int | None = None
    max_batch: int | None = None
    batch: int | None = None
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    tokens_per_s: float | None = None
    tokens_per_s_per_chip: float | None = None
    requests_per_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    usd_per_chip_hour: float | None = None
    usd_per_million_tokens: float | None = None
    power_kw: float | None = None
    confidence: str = "low"
    uncertainty: float | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def serve_factor(cal: Calibration, precision: str, moe: bool = False) -> float:
    """End-to-end serving factor of the family for GEMMs in ``precision`` (times ``moe_eff`` for a MoE model)."""
    eff = cal.serve_eff_fp4 if precision == "fp4" else cal.serve_eff
    return eff * cal.moe_eff if moe else eff


def _resolve_precision(requested: str, c: Chip) -> tuple[str, str | None]:
    if requested == "auto":
        return ("fp8", None) if c.supports("fp8") else ("bf16", None)
    if c.supports(requested):
        return requested, None
    fallback = "fp8" if requested == "fp4" and c.supports("fp8") else "bf16"
    return fallback, f"{c.key} has no known {requested} peak: planned in {fallback}"


def _split(n: int, cluster: Cluster, c: Chip) -> tuple[int, int]:
    tp = min(n, cluster.scaleup_size) if c.link_kind != "none" else 1
    return tp, n // tp


def _weights_per_chip(s: Shape, precision: str, n: int, ep: bool) -> float:
    """Weight bytes on each chip: sharded n ways (tensor/pipeline parallel), or, for expert parallelism,
    the dense part replicated and the routed experts spread over the n chips."""
    bpp = BYTES_PER_PARAM[precision]
    if ep:
        return s.dense_weight_params() * bpp + s.params_routed * bpp / n
    return s.params_total * bpp / n


def step_time(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, *, precision: str, kv_bpv: float, n: int,
              batch: float, isl: float, osl: float, admit_prompts: bool = True, ep: bool = False) -> StepBreakdown:
    """Time of one engine step of a replica of ``n`` chips running ``batch`` sequences (see module doc);
    ``admit_prompts=False`` gives a pure decode step; ``ep=True`` runs a MoE model with data-parallel attention
    and expert parallelism over the replica (dense weights replicated, all-to-all instead of all-reduce)."""
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    peak = c.peak_tflops(precision)
    bw = c.memory_bw_gbps
    assert peak is not None and bw is not None and c.bf16_tflops is not None
    peak_attn = (c.fp8_tflops if precision in ("fp8", "fp4") and c.fp8_tflops else c.bf16_tflops) * 1e12
    flops_rate = n * peak * 1e12 * cal.gemm_eff
    mem_rate = n * bw * 1e9 * cal.hbm_eff
    prompt_share = isl / osl if admit_prompts else 0.0
    tokens = batch * (1.0 + prompt_share)  # decode tokens + prompt tokens admitted per step
    bpp = BYTES_PER_PARAM[precision]
    # each group of kernels is bound by its own roofline: the dense weights (attention projections, dense FFN,
    # shared experts, LM head) and the routed experts (weights read only for experts some token picked)
    routed_share = s.params_routed_active / s.linear_params_body if s.is_moe else 0.0
    body_flops = s.linear_flops_body() * tokens
    dense_flops = body_flops * (1.0 - routed_share) + s.head_flops() * batch * (1.0 + 1.0 / osl)
    dense_bytes = s.dense_weight_params() * bpp * (n if ep else 1)  # replicated under expert parallelism
    linear = max(dense_flops / flops_rate, dense_bytes / mem_rate)
    lin_flops = dense_flops
    if s.is_moe:
        per_group = tokens / n if ep else tokens  # tokens whose expert choices hit one chip's weights
        touched = 1.0 - (1.0 - s.experts_per_token / s.experts) ** max(per_group * (n if ep else 1), 1.0)
        expert_flops = body_flops * routed_share
        # a grouped expert GEMM with few tokens per expert runs far below peak (tile and wave quantisation,
        # per-expert launch and routing overheads): efficiency m / (m + m_half), m = tokens per expert per step
        m_expert = tokens * s.experts_per_token / s.experts
        grouped = m_expert / (m_expert + cal.expert_m_half)
        linear += max(expert_flops / (flops_rate * grouped), s.params_routed * touched * bpp / mem_rate)
        lin_flops += expert_flops
    ctx = isl + osl / 2.0
    prompt_attn_flops = s.attn_flops_per_key() * (isl / 2.0) * batch * prompt_share
    decode_attn_flops = s.attn_flops_per_key() * ctx * batch
    kv_bytes = batch * ctx * s.kv_bytes_per_token(kv_bpv)
    attn_rate = n * peak_attn * cal.gemm_eff
    attention = prompt_attn_flops / attn_rate + max(decode_attn_flops / attn_rate, kv_bytes / mem_rate)
    comm = 0.0
    if ep and n > 1:
        assert c.link_gbps_per_dir is not None
        # dispatch + combine of each token's hidden state to its experts on other chips, 16-bit
        per_chip = tokens / n * s.experts_per_token * (n - 1) / n * s.hidden * 2.0 * 2.0 * s.moe_layers
        comm += per_chip / (c.link_gbps_per_dir * 1e9 * cal.link_eff)
    if tp > 1:
        assert c.link_gbps_per_dir is not None
        per_chip = tokens * (s.layers / pp) * 2 * (2.0 * (tp - 1) / tp) * s.hidden * 2.0
        comm += per_chip / (c.link_gbps_per_dir * 1e9 * cal.link_eff)
    if pp > 1:
        comm += tokens * s.hidden * 2.0 / (cluster.scaleout_gbps * 1e9 * cal.net_eff)
    raw = linear + attention + comm
    eff = serve_factor(cal, precision, s.is_moe)
    step = raw / eff
    busy = (lin_flops / flops_rate + (prompt_attn_flops + decode_attn_flops) / attn_rate) / step
    return StepBreakdown(linear_s=linear / eff, attention_s=attention / eff, comm_s=comm / eff, step_s=step,
                         busy=min(1.0, busy))


def prefill_time(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, *, precision: str, n: int,
                 tokens: float, ep: bool = False) -> float:
    """Time to prefill one prompt of ``tokens`` tokens alone on the replica (under expert parallelism the
    prompt's attention and dense layers run on one chip)."""
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    peak = c.peak_tflops(precision)
    assert peak is not None and c.memory_bw_gbps is not None and c.bf16_tflops is not None
    peak_attn = (c.fp8_tflops if precision in ("fp8", "fp4") and c.fp8_tflops else c.bf16_tflops) * 1e12
    flops = s.linear_flops_body() * tokens + s.head_flops()
    lanes = 1 if ep else n
    wbytes = _weights_per_chip(s, precision, n, ep)
    t = max(flops / (lanes * peak * 1e12 * cal.gemm_eff), wbytes / (c.memory_bw_gbps * 1e9 * cal.hbm_eff))
    t += s.attn_flops_per_key() * tokens * tokens / 2.0 / (lanes * peak_attn * cal.gemm_eff)
    if tp > 1:
        assert c.link_gbps_per_dir is not None
        t += tokens * (s.layers / pp) * 2 * (2.0 * (tp - 1) / tp) * s.hidden * 2.0 / (
            c.link_gbps_per_dir * 1e9 * cal.link_eff)
    if pp > 1:
        t += pp * tokens * s.hidden * 2.0 / (cluster.scaleout_gbps * 1e9 * cal.net_eff)
    return t / serve_factor(cal, precision, s.is_moe)


def max_batch(s: Shape, c: Chip, cal: Calibration, *, precision: str, kv_bpv: float, n: int, isl: float,
              osl: float, cap: int, ep: bool = False) -> int:
    """Sequences in flight the KV pool of a replica of ``n`` chips holds (0 when the weights do not fit)."""
    assert c.memory_gb is not None
    free_per_chip = (c.memory_gb - cal.mem_reserve_gb) * 1e9 - _weights_per_chip(s, precision, n, ep)
    if free_per_chip <= 0:
        return 0
    per_seq = s.kv_bytes_per_token(kv_bpv) * (isl + osl / 2.0)
    return int(min(cap, math.floor(n * free_per_chip * cal.kv_pool_frac / per_seq)))


def replica_estimate(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: ServeJob, n: int,
                     precision: str, ep: bool = False) -> ReplicaEstimate | None:
    """Best operating point of a replica of ``n`` chips under the job's SLOs (None when the model does not fit)."""
    isl, osl = job.input_tokens, job.output_tokens
    kv_bpv = 1.0 if precision in ("fp8", "fp4") and c.supports("fp8") else 2.0
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    if ep and (not s.is_moe or n > cluster.scaleup_size or n > s.experts or c.link_kind == "none" or n == 1):
        return None
    if not ep and (tp * pp != n or pp > s.layers):
        return None
    cap = min(job.max_batch, int(job.max_num_tokens / (1.0 + isl / osl)))
    bmax = max_batch(s, c, cal, precision=precision, kv_bpv=kv_bpv, n=n, isl=isl, osl=osl,
                     cap=max(cap, 1) * (n if ep else 1), ep=ep)
    if bmax < 1:
        return None
    t_pre = prefill_time(s, c, cal, cluster, precision=precision, n=n, tokens=isl, ep=ep)

    def st(b: float) -> StepBreakdown:
        return step_time(s, c, cal, cluster, precision=precision, kv_bpv=kv_bpv, n=n, batch=b, isl=isl, osl=osl,
                         ep=ep)

    def ok(b: int) -> bool:
        t = st(b).step_s
        if job.tpot_slo_s is not None and t > job.tpot_slo_s:
            return False
        return not (job.ttft_slo_s is not None and t_pre + t > job.ttft_slo_s)

    meets = ok(1)
    if ok(bmax):
        b = bmax
    elif not meets:
        b = 1
    else:  # largest batch meeting the SLOs (step time grows with the batch)
        lo, hi = 1, bmax
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        b = lo
    step = st(b)
    # decode-only throughput at max batch: the same step without the admitted prompt tokens
    dec_only = step_time(s, c, cal, cluster, precision=precision, kv_bpv=kv_bpv, n=n, batch=bmax, isl=isl,
                         osl=osl, admit_prompts=False, ep=ep)
    return ReplicaEstimate(
        chips=n, tp=tp, pp=pp, ep=n if ep else 1, precision=precision, kv_bytes_per_value=kv_bpv, max_batch=bmax,
        batch=b, step=step,
        ttft_s=t_pre + step.step_s, tokens_per_s=b / step.step_s, prefill_tokens_per_s=isl / t_pre,
        decode_tokens_per_s=bmax / dec_only.step_s, meets_slo=meets,
    )


def estimate_serve(job: ServeJob, accelerator: str, *, cluster: Cluster | None = None, money: Money | None = None,
                   calibration: Calibration | None = None) -> ServeEstimate:
    """Plan serving ``job`` on ``accelerator`` (catalog key or alias)."""
    cluster = cluster or Cluster()
    money = money or Money()
    c, s, cal, fields, reason = setup(job.model, accelerator, calibration)
    row = ServeEstimate(**fields)
    if reason:
        row.reason = reason
        return row
    precision, note = _resolve_precision(job.precision, c)
    if note:
        row.notes.append(note)
    row.precision = precision
    sizes = [job.replica_chips] if job.replica_chips else list(REPLICA_SIZES)
    if job.chips is not None:
        sizes = [n for n in sizes if n <= job.chips]
    best: ReplicaEstimate | None = None
    fallback: ReplicaEstimate | None = None
    candidates = [(n, ep) for n in sizes for ep in ((False, True) if s.is_moe and n > 1 else (False,))]
    if job.expert_parallel is not None:
        candidates = [(n, ep) for n, ep in candidates if ep == job.expert_parallel or n == 1]
    for n, ep in candidates:
        r = replica_estimate(s, c, cal, cluster, job, n, precision, ep)
        if r is None:
            continue
        if not r.meets_slo:
            if fallback is None or r.step.step_s < fallback.step.step_s:
                fallback = r
            continue
        if best is None or r.tokens_per_s / r.chips > best.tokens_per_s / best.chips * 1.0001:
            best = r
    if best is None:
        if fallback is None:
            limit = f" within {job.chips} chips" if job.chips else ""
            row.reason = f"weights + KV cache do not fit{limit} (replicas up to {max(REPLICA_SIZES)} chips)"
            return row
        best = fallback
        row.notes.append(f"SLO not reachable: best TPOT {best.step.step_s * 1e3:.0f} ms, TTFT {best.ttft_s:.2f} s "
                         "at batch 1")
    per_replica_rps = best.tokens_per_s / job.output_tokens
    if job.chips is not None:
        replicas = job.chips // best.chips
    elif job.qps is not None:
        replicas = max(1, math.ceil(job.qps / per_replica_rps - 1e-9))
    else:
        replicas = 1
    chips_total = replicas * best.chips
    row.chips, row.chips_per_replica, row.replicas = chips_total, best.chips, replicas
    row.tp, row.pp, row.ep = best.tp, best.pp, best.ep
    row.max_batch, row.batch = best.max_batch, best.batch
    row.prefill_tokens_per_s = best.prefill_tokens_per_s * replicas
    row.decode_tokens_per_s = best.decode_tokens_per_s * replicas
    row.tokens_per_s = best.tokens_per_s * replicas
    row.tokens_per_s_per_chip = best.tokens_per_s / best.chips
    row.requests_per_s = per_replica_rps * replicas
    row.ttft_s, row.tpot_s = best.ttft_s, best.step.step_s
    if job.qps is not None and row.requests_per_s < job.qps * (1 - 1e-9):
        row.notes.append(f"{chips_total} chips serve {row.requests_per_s:.2f} req/s, below the {job.qps:g} req/s "
                         "target")
    if c.tdp_w is not None:
        row.power_kw = chips_total * c.tdp_w * money.power_frac(best.step.busy) * money.pue / 1000.0
    if c.price_usd is not None and c.tdp_w is not None:
        per_chip_h = money.capex_usd_per_chip_hour(c.price_usd) + (
            c.tdp_w * money.power_frac(best.step.busy) * money.pue / 1000.0 * money.usd_per_kwh)
        row.usd_per_chip_hour = per_chip_h
        row.usd_per_million_tokens = chips_total * per_chip_h / (row.tokens_per_s * 3600.0) * 1e6
    else:
        row.notes.append("cost unknown: " + ", ".join(c.missing("price_usd", "tdp_w")) + " unknown in the catalog")
    return row
