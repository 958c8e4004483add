"""Serving estimates: chips per replica, batch, prefill/decode throughput, TTFT/TPOT, replicas, cost.

Model (one replica of ``n = tp x pp`` chips, continuous batching, steady state):

* memory: weights (params x bytes/param) + a KV pool = ``kv_pool_frac`` x (memory - weights - reserve); a sequence
  in flight holds on average ``input + output/2`` tokens of KV, so ``batch_max = pool / (kv_bytes x (in + out/2))``
  (capped by the engine: sequences and tokens per step per rank - a tensor-parallel group is one rank, an
  attention-data-parallel replica has one per chip - and ``max_batch`` per replica);
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
  MLA decode attention works on the absorbed latent (``Shape.decode_attn_flops_per_key``); a multimodal model
  runs its vision encoder on the image tokens of the admitted prompts; every step then pays the fixed costs
  ``step_overhead_s + seq_overhead_s x sequences per rank`` (launches, sampling, host work);
* Offline (no SLO): the replica runs its largest batch; TPOT = mean step, TTFT = prefill of one prompt alone +
  one step. With SLOs (MLPerf Server / Interactive): p99 bounds under Poisson arrivals (:func:`latency_at`),
  and the batch is the largest mean concurrency that meets them; output tokens/s per replica = B / step.
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
TP_MAX = 8  # tensor parallelism inside a replica (beyond it: pipeline stages)
Z99 = 2.326  # 99th percentile of the standard normal distribution
# Engine scheduler defaults, per rank (a tensor-parallel group, or one attention-data-parallel rank of an expert-
# parallel replica): vLLM's max_num_seqs / max_num_batched_tokens for GPUs with >= 70 GiB (vllm/engine/arg_utils.py
# get_batch_defaults: 1,024 sequences, 8,192 tokens per step); TensorRT-LLM's DeepSeek-R1 max-throughput recipes
# set 128-896 sequences per attention-DP rank (docs/source/blogs/Best_perf_practice_on_DeepSeek-R1_in_TensorRT-LLM.md)
MAX_SEQS_PER_RANK = 1024
MAX_TOKENS_PER_RANK = 8192


@dataclass(frozen=True)
class ServeJob:
    model: str
    input_tokens: float = 2000.0  # mean prompt length (text tokens)
    output_tokens: float = 500.0
    qps: float | None = None  # target requests per second for the whole deployment
    ttft_slo_s: float | None = None  # p99 time to first token under Poisson arrivals
    tpot_slo_s: float | None = None  # p99 time per output token under Poisson arrivals
    precision: str = "auto"  # auto | bf16 | fp8 | fp4 (weights and GEMMs)
    chips: int | None = None  # fixed deployment size; otherwise sized for qps (or one replica)
    max_batch: int | None = None  # engine limit on sequences in flight per *replica* (None: ranks x per-rank limit)
    max_batch_per_rank: int = MAX_SEQS_PER_RANK  # engine limit on sequences per rank (scheduler)
    max_num_tokens: int = MAX_TOKENS_PER_RANK  # engine limit on tokens per step and rank
    replica_chips: int | None = None  # force chips per replica (tp x pp, or ep for a MoE model)
    expert_parallel: bool | None = None  # MoE replicas: force (True) or forbid (False) expert parallelism
    image_tokens: float = 0.0  # image tokens per request (multimodal models), added to the prompt

    def __post_init__(self) -> None:
        if not self.input_tokens > 0:
            raise InvalidQuantity(f"--input-tokens must be a positive number, got {self.input_tokens:g}")
        if not self.output_tokens >= 1:
            raise InvalidQuantity(f"--output-tokens must be at least 1, got {self.output_tokens:g}")
        if self.image_tokens < 0:
            raise InvalidQuantity(f"--image-tokens must be >= 0, got {self.image_tokens:g}")
        if self.qps is not None and self.qps <= 0:
            raise InvalidQuantity(f"--qps must be positive, got {self.qps}")
        if self.chips is not None and self.chips <= 0:
            raise InvalidQuantity(f"--chips must be a positive whole number, got {self.chips}")
        if self.precision not in ("auto", "bf16", "fp8", "fp4"):
            raise InvalidQuantity(f"precision must be auto, bf16, fp8 or fp4, got {self.precision!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise InvalidQuantity(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.max_batch_per_rank < 1 or self.max_num_tokens < 1:
            raise InvalidQuantity("--max-batch-per-rank and the per-rank token budget must be >= 1")
        for name, v in (("--ttft-slo", self.ttft_slo_s), ("--tpot-slo", self.tpot_slo_s)):
            if v is not None and not v > 0:
                raise InvalidQuantity(f"{name} must be positive, got {v:g}")

    @property
    def prompt_tokens(self) -> float:
        """Tokens the prefill processes per request: text + image tokens."""
        return self.input_tokens + self.image_tokens

    @property
    def latency_bound(self) -> bool:
        return self.ttft_slo_s is not None or self.tpot_slo_s is not None


@dataclass(frozen=True)
class StepBreakdown:
    linear_s: float
    attention_s: float
    comm_s: float
    step_s: float
    busy: float  # fraction of the step the tensor units are busy at gemm efficiency
    fixed_s: float = 0.0  # per-step fixed costs included in step_s (launch/host per step and per sequence)


@dataclass
class ReplicaEstimate:
    chips: int
    tp: int
    pp: int
    ep: int  # > 1: data-parallel attention + expert parallelism over the replica
    ranks: int  # engine schedulers in the replica (1 for a tensor/pipeline group, ep for attention data parallel)
    precision: str
    kv_bytes_per_value: float
    max_batch: int
    batch: int  # mean sequences in flight
    step: StepBreakdown  # the engine step at the mean batch
    ttft_s: float
    tpot_s: float
    tokens_per_s: float  # output tokens/s of the replica at `batch`
    prefill_tokens_per_s: float  # prompt tokens/s of the replica doing only prefill
    decode_tokens_per_s: float  # output tokens/s of the replica doing only decode at max batch
    meets_slo: bool
    latency: str  # how ttft_s / tpot_s are meant (p99 under Poisson arrivals, or unloaded / mean)
    best_ttft_s: float = 0.0  # one request alone (what no load can beat)
    best_tpot_s: float = 0.0


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
    latency: str | None = None  # "p99 under Poisson arrivals" (with SLOs) or "unloaded TTFT, mean TPOT" (without)
    system: str | None = None  # rack-scale system the chips come in (GB200 NVL72, CloudMatrix 384)
    systems: int | None = None  # whole systems the deployment needs
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
    tp = min(n, cluster.domain, TP_MAX) if c.link_kind != "none" else 1
    return tp, n // tp


def replica_sizes(cluster: Cluster) -> list[int]:
    """Chips per replica the planner tries: powers of two up to 64 (or up to the scale-up domain when it is larger)
    and the whole domain of a rack-scale system (72 for GB200 NVL72, 384 for CloudMatrix 384)."""
    top = max(REPLICA_SIZES[-1], cluster.domain)
    sizes = [n for n in (1 << k for k in range(20)) if n <= top]
    if cluster.domain not in sizes:
        sizes.append(cluster.domain)
    return sorted(sizes)


def _weights_per_chip(s: Shape, precision: str, n: int, ep: bool) -> float:
    """Weight bytes on each chip: sharded n ways (tensor/pipeline parallel), or, for expert parallelism,
    the dense part replicated and the routed experts spread over the n chips. A vision encoder is kept in BF16
    on every chip that prefills."""
    bpp = BYTES_PER_PARAM[precision]
    vision = s.vision_params * BYTES_PER_PARAM["bf16"]
    if ep:
        return s.dense_weight_params() * bpp + s.params_routed * bpp / n + vision
    return s.params_total * bpp / n + vision / n


def _link_bw(c: Chip, cluster: Cluster, cal: Calibration, n: int) -> float:
    """Bytes/s of one chip's traffic to the other chips of a replica of n chips (scale-up link inside the domain,
    NIC beyond it)."""
    if c.link_gbps_per_dir is None:
        return cluster.scaleout_gbps * 1e9 * cal.net_eff
    if n <= cluster.domain:
        return c.link_gbps_per_dir * 1e9 * cal.link_eff
    return min(c.link_gbps_per_dir, cluster.scaleout_gbps) * 1e9 * cal.net_eff


def step_time(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, *, precision: str, kv_bpv: float, n: int,
              batch: float, isl: float, osl: float, admit_prompts: bool = True, ep: bool = False,
              image_tokens: float = 0.0) -> StepBreakdown:
    """Time of one engine step of a replica of ``n`` chips running ``batch`` sequences (see module doc);
    ``admit_prompts=False`` gives a pure decode step; ``ep=True`` runs a MoE model with data-parallel attention
    and expert parallelism over the replica (dense weights replicated, all-to-all instead of all-reduce).
    ``isl`` counts every prompt token (text + ``image_tokens``); the vision encoder runs on the image tokens."""
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    ranks = n if ep else 1
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
    if image_tokens and admit_prompts:
        # the vision encoder (BF16) on the images of the prompts admitted this step
        dense_flops += s.vision_flops_per_image_token * image_tokens * batch / osl * (peak / c.bf16_tflops)
    dense_bytes = s.dense_weight_params() * bpp * (n if ep else 1)  # replicated under expert parallelism
    # a GEMM over few token rows runs below peak too (tile / wave quantisation): the same saturation m / (m + m_half)
    # at the rows one chip's GEMMs see per step (all tokens under tensor parallelism, a rank's share under EP)
    rows = tokens / ranks
    dense_sat = rows / (rows + cal.expert_m_half) if cal.dense_saturation else 1.0
    linear = max(dense_flops / (flops_rate * dense_sat), dense_bytes / mem_rate)
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
    decode_attn_flops = s.decode_attn_flops_per_key() * ctx * batch
    kv_bytes = batch * ctx * s.kv_bytes_per_token(kv_bpv)
    attn_rate = n * peak_attn * cal.gemm_eff
    attention = prompt_attn_flops / attn_rate + max(decode_attn_flops / attn_rate, kv_bytes / mem_rate)
    comm = 0.0
    if ep and n > 1:
        # dispatch + combine of each token's hidden state to its experts on other chips, 16-bit
        per_chip = tokens / n * s.experts_per_token * (n - 1) / n * s.hidden * 2.0 * 2.0 * s.moe_layers
        comm += per_chip / _link_bw(c, cluster, cal, n)
    if tp > 1:
        per_chip = tokens * (s.layers / pp) * 2 * (2.0 * (tp - 1) / tp) * s.hidden * 2.0
        comm += per_chip / _link_bw(c, cluster, cal, tp)
    if pp > 1:
        comm += tokens * s.hidden * 2.0 / _link_bw(c, cluster, cal, n)
    raw = linear + attention + comm
    eff = serve_factor(cal, precision, s.is_moe)
    # fixed costs of a step that no roofline sees: a constant per step, and host work per sequence on its rank
    fixed = cal.step_overhead_s + cal.seq_overhead_s * batch / ranks
    step = raw / eff + fixed
    busy = (lin_flops / flops_rate + (prompt_attn_flops + decode_attn_flops) / attn_rate) / step
    return StepBreakdown(linear_s=linear / eff, attention_s=attention / eff, comm_s=comm / eff, step_s=step,
                         busy=min(1.0, busy), fixed_s=fixed)


def prefill_time(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, *, precision: str, n: int,
                 tokens: float, ep: bool = False, image_tokens: float = 0.0) -> float:
    """Time to prefill one prompt of ``tokens`` tokens (text + images) alone on the replica (under expert
    parallelism the prompt's attention and dense layers run on one chip)."""
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    peak = c.peak_tflops(precision)
    assert peak is not None and c.memory_bw_gbps is not None and c.bf16_tflops is not None
    peak_attn = (c.fp8_tflops if precision in ("fp8", "fp4") and c.fp8_tflops else c.bf16_tflops) * 1e12
    flops = s.linear_flops_body() * tokens + s.head_flops()
    lanes = 1 if ep else n
    wbytes = _weights_per_chip(s, precision, n, ep)
    t = max(flops / (lanes * peak * 1e12 * cal.gemm_eff), wbytes / (c.memory_bw_gbps * 1e9 * cal.hbm_eff))
    t += s.attn_flops_per_key() * tokens * tokens / 2.0 / (lanes * peak_attn * cal.gemm_eff)
    if image_tokens:
        t += s.vision_flops_per_image_token * image_tokens / (lanes * c.bf16_tflops * 1e12 * cal.gemm_eff)
    if tp > 1:
        t += tokens * (s.layers / pp) * 2 * (2.0 * (tp - 1) / tp) * s.hidden * 2.0 / _link_bw(c, cluster, cal, tp)
    if pp > 1:
        t += pp * tokens * s.hidden * 2.0 / _link_bw(c, cluster, cal, n)
    return t / serve_factor(cal, precision, s.is_moe) + cal.step_overhead_s + cal.seq_overhead_s


def max_batch(s: Shape, c: Chip, cal: Calibration, *, precision: str, kv_bpv: float, n: int, isl: float,
              osl: float, cap: int, ep: bool = False) -> int:
    """Sequences in flight the KV pool of a replica of ``n`` chips holds (0 when the weights do not fit)."""
    assert c.memory_gb is not None
    free_per_chip = (c.memory_gb - cal.mem_reserve_gb) * 1e9 - _weights_per_chip(s, precision, n, ep)
    if free_per_chip <= 0:
        return 0
    per_seq = s.kv_bytes_per_token(kv_bpv) * (isl + osl / 2.0)
    return int(min(cap, math.floor(n * free_per_chip * cal.kv_pool_frac / per_seq)))


def engine_cap(job: ServeJob, ranks: int) -> int:
    """Sequences in flight the engine allows a replica of ``ranks`` schedulers: per rank the scheduler's sequence
    limit and its token budget per step (a running sequence brings 1 + in/out tokens per step with chunked
    prefill), times the ranks; then the user's per-replica ``--max-batch``."""
    per_rank = min(job.max_batch_per_rank, int(job.max_num_tokens / (1.0 + job.prompt_tokens / job.output_tokens)))
    cap = ranks * max(per_rank, 1)
    return min(cap, job.max_batch) if job.max_batch is not None else cap


@dataclass(frozen=True)
class LoadPoint:
    """A replica under Poisson arrivals at mean concurrency ``batch`` (see :func:`latency_at`)."""

    batch: float
    n99: float  # 99th percentile of the sequences in flight
    tpot99_s: float
    ttft99_s: float
    feasible: bool  # enough KV slots and prefill budget for the p99 load


def latency_at(b: float, *, bmax: int, ranks: int, isl: float, osl: float, max_num_tokens: int, t_pre: float,
               step: Any) -> LoadPoint:
    """p99 TPOT and TTFT of a replica whose mean concurrency is ``b`` sequences under Poisson arrivals.

    * Sequences in flight form an M/G/inf system: Poisson with mean ``b``. A request's TPOT is the mean step
      time over its own lifetime, over which the count averages with variance ``2b/3`` (service time D,
      covariance b(1 - |u|/D)); its 99th percentile ``n99 = b + 2.326 sqrt(2b/3)`` sets the p99 TPOT =
      step(n99). The engine must hold n99 sequences (KV slots, scheduler limit), or requests queue for slots.
    * TTFT: prompts queue for the prefill budget of each rank's steps (``max_num_tokens`` minus the decode
      tokens); utilisation ``rho`` = prompt tokens arriving per step / budget; a prompt's service is
      ``ceil(in/budget)`` steps (at least its prefill alone); the p99 wait takes the M/M/1 tail
      ``s ln(100 rho)/(1 - rho)`` (an upper bound for near-deterministic service). p99 TTFT = wait + service +
      one step.
    """
    n99 = b + Z99 * math.sqrt(2.0 * b / 3.0)
    t99 = step(max(n99, 1.0))
    budget = max_num_tokens - n99 / ranks
    arriving = b / ranks * isl / osl
    if n99 > bmax or budget <= 0 or arriving >= budget:
        return LoadPoint(b, n99, t99, math.inf, False)
    rho = arriving / budget
    service = max(t_pre, math.ceil(isl / budget) * t99)
    wait = service * math.log(100.0 * rho) / (1.0 - rho) if rho > 0.01 else 0.0
    return LoadPoint(b, n99, t99, wait + service + t99, True)


def replica_estimate(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: ServeJob, n: int,
                     precision: str, ep: bool = False) -> ReplicaEstimate | None:
    """Best operating point of a replica of ``n`` chips under the job's SLOs (None when the model does not fit).

    Without SLOs the replica runs full (Offline): the batch is the most the KV pool and the engine allow, TTFT is
    a prompt's prefill alone + one step and TPOT the mean step. With SLOs they are p99 bounds under Poisson
    arrivals (MLPerf Server / Interactive): the batch is the largest mean concurrency whose p99 TPOT and TTFT
    (:func:`latency_at`) meet them."""
    isl, osl, img = job.prompt_tokens, job.output_tokens, job.image_tokens
    kv_bpv = 1.0 if precision in ("fp8", "fp4") and c.supports("fp8") else 2.0
    tp, pp = (1, 1) if ep else _split(n, cluster, c)
    ranks = n if ep else 1
    if ep and (not s.is_moe or n > cluster.domain or n > s.experts or c.link_kind == "none" or n == 1):
        return None
    if not ep and (tp * pp != n or pp > s.layers):
        return None
    bmax = max_batch(s, c, cal, precision=precision, kv_bpv=kv_bpv, n=n, isl=isl, osl=osl,
                     cap=engine_cap(job, ranks), ep=ep)
    if bmax < 1:
        return None
    t_pre = prefill_time(s, c, cal, cluster, precision=precision, n=n, tokens=isl, ep=ep, image_tokens=img)

    def st(b: float) -> StepBreakdown:
        return step_time(s, c, cal, cluster, precision=precision, kv_bpv=kv_bpv, n=n, batch=b, isl=isl, osl=osl,
                         ep=ep, image_tokens=img)

    def load(b: float) -> LoadPoint:
        return latency_at(b, bmax=bmax, ranks=ranks, isl=isl, osl=osl, max_num_tokens=job.max_num_tokens,
                          t_pre=t_pre, step=lambda x: st(x).step_s)

    def ok(b: int) -> bool:
        p = load(b)
        if not p.feasible:
            return False
        if job.tpot_slo_s is not None and p.tpot99_s > job.tpot_slo_s:
            return False
        return not (job.ttft_slo_s is not None and p.ttft99_s > job.ttft_slo_s)

    best_tpot = st(1).step_s
    best_ttft = t_pre + best_tpot
    if job.latency_bound:
        meets = ok(1)
        if not meets:
            b = 1
        elif ok(bmax):
            b = bmax
        else:  # largest mean concurrency meeting the p99 bounds (latency grows with the load)
            lo, hi = 1, bmax
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if ok(mid) else (lo, mid)
            b = lo
        point = load(b)
        ttft, tpot = point.ttft99_s, point.tpot99_s
        latency = "p99 under Poisson arrivals"
    else:
        meets, b = True, bmax
        ttft, tpot = t_pre + st(b).step_s, st(b).step_s
        latency = "unloaded TTFT, mean TPOT at full batch"
    step = st(b)
    # decode-only throughput at max batch: the same step without the admitted prompt tokens
    dec_only = step_time(s, c, cal, cluster, precision=precision, kv_bpv=kv_bpv, n=n, batch=bmax, isl=isl,
                         osl=osl, admit_prompts=False, ep=ep)
    return ReplicaEstimate(
        chips=n, tp=tp, pp=pp, ep=n if ep else 1, ranks=ranks, precision=precision, kv_bytes_per_value=kv_bpv,
        max_batch=bmax, batch=b, step=step, ttft_s=ttft, tpot_s=tpot, tokens_per_s=b / step.step_s,
        prefill_tokens_per_s=isl / t_pre, decode_tokens_per_s=bmax / dec_only.step_s, meets_slo=meets,
        latency=latency, best_ttft_s=best_ttft, best_tpot_s=best_tpot,
    )


def _secs(t: float) -> str:
    return f"{t:.2f} s" if t >= 1.0 else f"{t * 1e3:.3g} ms"


def check_context(job: ServeJob, s: Shape) -> None:
    """Refuse a job the model cannot run: a prompt + output beyond its context window, images for a text model."""
    if job.image_tokens and not s.is_multimodal:
        raise InvalidQuantity(f"--image-tokens: {s.key} has no vision encoder (a text-only model)")
    total = job.prompt_tokens + job.output_tokens
    if s.max_positions and total > s.max_positions:
        what = f"{job.input_tokens:,.0f} input" + (f" + {job.image_tokens:,.0f} image" if job.image_tokens else "")
        raise InvalidQuantity(f"{what} + {job.output_tokens:,.0f} output tokens = {total:,.0f} exceed the context "
                              f"window of {s.key} ({s.max_positions:,} tokens)")


def estimate_serve(job: ServeJob, accelerator: str, *, cluster: Cluster | None = None, money: Money | None = None,
                   calibration: Calibration | None = None) -> ServeEstimate:
    """Plan serving ``job`` on ``accelerator`` (catalog key or alias). Raises InvalidQuantity for a job the model
    cannot run (context window, images for a text-only model)."""
    money = money or Money()
    c, s, cal, fields, reason = setup(job.model, accelerator, calibration)
    check_context(job, s)
    cluster = (cluster or Cluster()).for_chip(c.scaleup_domain)
    row = ServeEstimate(**fields)
    row.system = c.system
    if reason:
        row.reason = reason
        return row
    precision, note = _resolve_precision(job.precision, c)
    if note:
        row.notes.append(note)
    row.precision = precision
    sizes = [job.replica_chips] if job.replica_chips else replica_sizes(cluster)
    if job.chips is not None:
        sizes = [n for n in sizes if n <= job.chips]
    best: ReplicaEstimate | None = None
    fallback: ReplicaEstimate | None = None
    candidates = [(n, ep) for n in sizes for ep in ((False, True) if s.is_moe and n > 1 else (False,))]
    if job.expert_parallel is not None:
        candidates = [(n, ep) for n, ep in candidates if ep == job.expert_parallel or n == 1]
    best_ttft = best_tpot = math.inf
    for n, ep in candidates:
        r = replica_estimate(s, c, cal, cluster, job, n, precision, ep)
        if r is None:
            continue
        best_ttft, best_tpot = min(best_ttft, r.best_ttft_s), min(best_tpot, r.best_tpot_s)
        if not r.meets_slo:
            if fallback is None or r.best_ttft_s + r.best_tpot_s < fallback.best_ttft_s + fallback.best_tpot_s:
                fallback = r
            continue
        if best is None or r.tokens_per_s / r.chips > best.tokens_per_s / best.chips * 1.0001:
            best = r
    if best is None:
        if fallback is None:
            limit = f" within {job.chips} chips" if job.chips else ""
            row.reason = f"weights + KV cache do not fit{limit} (replicas up to {max(sizes)} chips)"
            return row
        # no plan rather than a plan that misses the SLO: say what the chip can do at best (one request alone; the
        # p99 under any load is higher)
        slos = []
        if job.ttft_slo_s is not None:
            slos.append(f"TTFT {_secs(job.ttft_slo_s)}")
        if job.tpot_slo_s is not None:
            slos.append(f"TPOT {_secs(job.tpot_slo_s)}")
        row.reason = (f"SLO ({', '.join(slos)}) not reachable on {c.key}: best TTFT is {_secs(best_ttft)} and best "
                      f"TPOT {_secs(best_tpot)} ({precision}, one request alone on the fastest replica; p99 under "
                      "load is higher)")
        return row
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
    row.ttft_s, row.tpot_s, row.latency = best.ttft_s, best.tpot_s, best.latency
    if c.scaleup_domain:
        row.systems = math.ceil(chips_total / c.scaleup_domain)
        row.notes.append(f"{chips_total} chips = {row.systems} {c.system or c.key} system(s) of "
                         f"{c.scaleup_domain} chips (replicas never span two)")
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
