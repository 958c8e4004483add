"""Training estimates: minimum chips by memory, parallel layout, step time, MFU, days, chip-hours, energy, cost.

Model (Megatron-style 3D/4D parallelism: tensor ``tp`` within a scale-up domain, pipeline ``pp`` with interleaving
``v``, data ``dp`` with ZeRO-1 (distributed optimizer) or ZeRO-2 (gradients sharded too), expert ``ep`` taken from
the data-parallel ranks, block recomputation of a share of the layers when memory requires it; one sequence per
micro-batch):

* memory per chip = weights + gradients (2 + 4 bytes/param of the shard it computes) + optimizer states (12 bytes/
  param: fp32 master, Adam m and v, sharded over the data-parallel ranks) + activations (per token and layer, after
  Korthikanti et al. 2022, ``/tp`` with sequence parallelism, ``pp`` micro-batches in flight on the first stage) +
  logits; it must fit in ``memory - reserve``;
* per micro-batch and stage: compute = FLOPs / (chips x peak x gemm_eff) + element-wise traffic / (BW x hbm_eff),
  both / train_eff; tensor-parallel collectives (4 per layer, not overlapped); expert all-to-all (dispatch and
  combine, forward and backward, not overlapped, NIC bandwidth for the part that leaves the node); pipeline
  hand-offs;
* step = (m + (pp - 1) / v) x micro-batch-stage time + data-parallel gradient reduce-scatter / parameter all-gather
  not hidden behind the last micro-batch + optimizer update;
* MFU = model FLOPs (6 x active params + attention, no recomputation) / (chips x peak x step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from suanli.perf.assumptions import Cluster, Money
from suanli.perf.calibration import Calibration
from suanli.perf.hardware import Chip, setup
from suanli.perf.shape import Shape
from suanli.perf.units import InvalidQuantity

TP_CHOICES: tuple[int, ...] = (1, 2, 4, 8, 16)
PP_CHOICES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
V_CHOICES: tuple[int, ...] = (1, 2, 4, 8)
RECOMPUTE_CHOICES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_CHIPS = 1 << 17
BYTES_WEIGHT_GRAD = 6.0  # bf16 weights + fp32 gradient buffers (Megatron-Core distributed optimizer default)
BYTES_OPTIMIZER = 12.0  # fp32 master weights + Adam first and second moments
BYTES_LORA_BASE: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}  # frozen base weights (LoRA)
# Latency of one step of a ring collective (NCCL src/graph/tuning.cc, ring / Simple protocol: base 8.4 us, plus
# 3.4 us per NVLink hop and 14 us per network hop)
NCCL_BASE_S, NCCL_NVLINK_HOP_S, NCCL_NET_HOP_S = 8.4e-6, 3.4e-6, 14e-6
# Megatron-Core DDP bucket: max(40M, 1M x data-parallel size) parameters per gradient reduce-scatter
DDP_BUCKET_MIN, DDP_BUCKET_PER_RANK = 40e6, 1e6
MOE_TRAINING_SATURATION = True


def lora_params(s: Shape, rank: int) -> float:
    """Trainable LoRA parameters: rank x (in + out) for every linear layer of the body - attention projections,
    dense FFNs and shared experts (routed experts keep no adapter)."""
    h = s.hidden
    attn = (h + s.q_width) * 2 + 2 * (h + s.kv_width)
    dense_ffn = 3 * (h + s.ffn_width)
    moe_ffn = 3 * (h + s.moe_width) * s.shared_experts
    return float(rank * (s.layers * attn + (s.layers - s.moe_layers) * dense_ffn + s.moe_layers * moe_ffn))


def ring_latency(ranks: int, cluster: Cluster) -> float:
    """Latency part of one ring reduce-scatter or all-gather over ``ranks`` chips (NCCL's tuning model)."""
    if ranks <= 1:
        return 0.0
    nodes = math.ceil(ranks / cluster.domain)
    return NCCL_BASE_S + (ranks - nodes) * NCCL_NVLINK_HOP_S + (nodes - 1) * NCCL_NET_HOP_S


@dataclass(frozen=True)
class TrainJob:
    model: str
    tokens: float
    seq: int = 4096
    precision: str = "bf16"  # bf16 | fp8 | fp4 (FP8 / NVFP4 GEMMs, BF16 attention, optimizer as for bf16)
    global_batch_tokens: float | None = None  # default: 16M tokens (4M for models under 20B params)
    chips: int | None = None  # fixed chip count; otherwise the planner picks one (see target_days)
    target_days: float = 60.0  # with chips unset: the smallest power-of-two count that trains within this
    method: str = "pretrain"  # pretrain | full (full fine-tuning: the same work) | lora (frozen base + adapters)
    lora_rank: int = 16  # LoRA adapter rank (method "lora"), adapters on every linear layer of the body

    def __post_init__(self) -> None:
        if self.tokens <= 0:
            raise InvalidQuantity("training tokens must be positive")
        if self.seq < 1:
            raise InvalidQuantity("sequence length must be >= 1")
        if self.precision not in ("bf16", "fp8", "fp4"):
            raise InvalidQuantity(f"--precision must be bf16, fp8 or fp4, got {self.precision!r}")
        if self.method not in ("pretrain", "full", "lora"):
            raise InvalidQuantity(f"--method must be pretrain, full or lora, got {self.method!r}")
        if self.lora_rank < 1:
            raise InvalidQuantity(f"--lora-rank must be >= 1, got {self.lora_rank}")
        if self.chips is not None and self.chips <= 0:
            raise InvalidQuantity(f"--chips must be a positive whole number, got {self.chips}")
        if self.global_batch_tokens is not None and self.global_batch_tokens < self.seq:
            raise InvalidQuantity("global batch must hold at least one sequence")
        if self.target_days <= 0:
            raise InvalidQuantity("target days must be positive")

    @property
    def lora(self) -> bool:
        return self.method == "lora"

    def batch_tokens(self, s: Shape) -> float:
        if self.global_batch_tokens is not None:
            return self.global_batch_tokens
        return 16 * 2**20 if s.params_total >= 20e9 else 4 * 2**20


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    ep: int
    v: int  # interleaved virtual stages per pipeline rank
    recompute: float  # share of layers whose activations are recomputed in the backward pass (block recompute)
    zero: int = 1  # 1: optimizer states sharded over data parallel; 2: gradients too

    @property
    def chips(self) -> int:
        return self.tp * self.pp * self.dp

    def describe(self) -> str:
        parts = [f"TP{self.tp}", f"PP{self.pp}" + (f"x{self.v}" if self.v > 1 else ""), f"DP{self.dp}"]
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        parts.append(f"ZeRO-{self.zero}")
        if self.recompute > 0:
            parts.append(f"recompute {self.recompute:.0%} of layers")
        return " ".join(parts)


@dataclass(frozen=True)
class StepEstimate:
    layout: Layout
    memory_gb: float
    step_s: float
    compute_s: float  # per step, summed over micro-batches (incl. bubble share not)
    tp_comm_s: float
    ep_comm_s: float
    pp_comm_s: float
    bubble_s: float
    dp_exposed_s: float
    optimizer_s: float
    mfu: float
    tokens_per_s: float


@dataclass
class TrainEstimate:
    """One row of a training plan (``None`` = unknown; ``reason`` says why)."""

    accelerator: str
    vendor: str
    family: str
    model: str
    precision: str | None = None
    min_chips_memory: int | None = None
    chips: int | None = None
    layout: str | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: int | None = None
    memory_per_chip_gb: float | None = None
    step_s: float | None = None
    tokens_per_s: float | None = None
    tokens_per_s_per_chip: float | None = None
    mfu: float | None = None
    days: float | None = None
    chip_hours: float | None = None
    energy_kwh: float | None = None
    usd: float | None = None
    usd_per_chip_hour: float | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    confidence: str = "low"
    uncertainty: float | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- memory


def memory_per_chip(s: Shape, c: Chip, job: TrainJob, lay: Layout, micro_batches: float) -> float:
    """Bytes one chip holds (the first pipeline stage, the fullest)."""
    dense = s.params_total - s.params_routed
    dense_chip = dense / (lay.tp * lay.pp)
    routed_chip = s.params_routed / (lay.pp * lay.ep) if s.is_moe else 0.0
    edp = max(1.0, lay.dp * lay.tp / lay.ep)
    if job.lora:
        # frozen base weights in the training precision's storage, trainable adapters with full training states
        base = BYTES_LORA_BASE[job.precision] * (dense_chip + routed_chip)
        states = base + (BYTES_WEIGHT_GRAD + BYTES_OPTIMIZER) * lora_params(s, job.lora_rank) / (lay.tp * lay.pp)
    else:
        sharded = BYTES_OPTIMIZER + (BYTES_WEIGHT_GRAD - 2.0 if lay.zero >= 2 else 0.0)
        replicated = BYTES_WEIGHT_GRAD - (BYTES_WEIGHT_GRAD - 2.0 if lay.zero >= 2 else 0.0)
        states = replicated * (dense_chip + routed_chip) + sharded * (dense_chip / lay.dp + routed_chip / edp)
    layers_stage = math.ceil(s.layers / lay.pp)
    in_flight = min(lay.pp, max(1.0, micro_batches))
    if lay.v > 1:
        in_flight *= 1.0 + (lay.pp - 1) / (lay.pp * lay.v)
    tokens = job.seq
    per_layer = s.activation_bytes_per_token_layer() * tokens / lay.tp
    kept = (1.0 - lay.recompute) * per_layer + lay.recompute * 2.0 * s.hidden * tokens / lay.tp
    act = kept * layers_stage * in_flight
    if lay.recompute > 0:
        act += per_layer  # the layer being recomputed
    logits = 4.0 * tokens * s.head_flop_params / s.hidden / lay.tp  # fp32 logits of one micro-batch
    return states + act + logits


def _usable_bytes(c: Chip, cal: Calibration) -> float:
    assert c.memory_gb is not None
    return (c.memory_gb - cal.mem_reserve_gb) * 1e9


# ---------------------------------------------------------------------------------------------------- time


def _ep_choices(s: Shape, tp: int, dp: int) -> list[int]:
    if not s.is_moe:
        return [1]
    out = []
    e = 1
    while e <= min(s.experts, dp * tp):
        if s.experts % e == 0 and (dp * tp) % e == 0:
            out.append(e)
        e *= 2
    return out


def step_estimate(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: TrainJob, lay: Layout,
                  check_memory: bool = True) -> StepEstimate | None:
    """Time of one optimizer step with layout ``lay`` (None when it does not fit or the batch cannot feed it)."""
    batch_seqs = job.batch_tokens(s) / job.seq
    m = batch_seqs / lay.dp  # micro-batches per pipeline
    if m < 1:
        return None
    mem = memory_per_chip(s, c, job, lay, m)
    if check_memory and mem > _usable_bytes(c, cal):
        return None
    assert c.bf16_tflops is not None and c.memory_bw_gbps is not None
    peak_lin = peak_rated = (c.peak_tflops(job.precision) or c.bf16_tflops) * 1e12
    if job.precision == "fp4":
        # 4-bit tensor units reach a smaller share of their peak than 8-bit ones: the ratio of the family's
        # fitted FP4 and FP8 serving factors (no FP4 training measurement in the calibration set)
        peak_lin *= cal.serve_eff_fp4 / cal.serve_eff
    peak_attn = c.bf16_tflops * 1e12
    tokens = float(job.seq)
    shard = lay.tp * lay.pp  # chips sharing one micro-batch's work (experts: balanced over the EP group)
    # forward + backward (input gradients + weight gradients); LoRA computes no weight gradients of the frozen
    # base (2 of the 3 passes) and trains only the adapters
    passes = 2.0 if job.lora else 3.0
    lin = passes * (s.linear_flops_body() + s.head_flops()) * tokens
    if job.lora:
        lin += 6.0 * lora_params(s, job.lora_rank) * tokens
    attn = 3.0 * s.attn_flops_per_key() * (job.seq / 2.0) * tokens
    # flash attention recomputes the attention core in its backward pass; block recomputation reruns the
    # forward pass of the recomputed layers
    extra_lin = lay.recompute * lin / passes
    extra_attn = attn / 3.0
    gemm = cal.gemm_eff
    t_flops = ((lin + extra_lin) / peak_lin + (attn + extra_attn) / peak_attn) / (shard * gemm)
    if s.is_moe and MOE_TRAINING_SATURATION:
        # grouped expert GEMMs run at m / (m + expert_m_half) of peak, m = tokens one local expert gets per
        # micro-batch: each rank's routed tokens (seq x k) spread over E experts, gathered from the ep ranks of
        # the expert-parallel group (the serving fit's kernel constant; the same tile/wave effect)
        m_exp = tokens * s.experts_per_token * lay.ep / s.experts
        g = m_exp / (m_exp + cal.expert_m_half)
        routed = (lin + extra_lin - (s.head_flops() * tokens * passes if not job.lora else 0.0)) * (
            s.params_routed_active / s.linear_params_body)
        t_flops += routed / peak_lin * (1.0 / g - 1.0) / (shard * gemm)
    traffic = 3.0 * s.activation_bytes_per_token_layer() * tokens * s.layers / shard
    t_mem = traffic / (c.memory_bw_gbps * 1e9 * cal.hbm_eff)
    t_comp = (t_flops + t_mem) / cal.train_eff
    layers_stage = s.layers / lay.pp
    t_tp = 0.0
    if lay.tp > 1:
        assert c.link_gbps_per_dir is not None
        vol = tokens * layers_stage * 4 * (2.0 * (lay.tp - 1) / lay.tp) * s.hidden * 2.0
        t_tp = vol / (c.link_gbps_per_dir * 1e9 * cal.link_eff)
    t_ep = 0.0
    if s.is_moe and lay.ep > 1:
        moe_stage = s.moe_layers / lay.pp
        act_bytes = 1.0 + 2.0 if job.precision in ("fp8", "fp4") else 2.0 + 2.0  # dispatch + combine, per value
        per_token = 2.0 * s.experts_per_token * (lay.ep - 1) / lay.ep * s.hidden * act_bytes  # fwd + bwd
        vol = tokens / lay.tp * moe_stage * per_token
        ep_span_chips = lay.ep * lay.tp  # the EP group spreads over dp ranks that sit tp chips apart
        local = min(1.0, cluster.domain / ep_span_chips) if ep_span_chips > cluster.domain else 1.0
        t_local = vol * local / ((c.link_gbps_per_dir or cluster.scaleout_gbps) * 1e9 * cal.link_eff)
        t_remote = vol * (1.0 - local) / (cluster.scaleout_gbps * 1e9 * cal.net_eff)
        t_ep = max(t_local, t_remote)
    t_pp = 0.0
    if lay.pp > 1:
        crosses = lay.tp * lay.pp > cluster.domain
        bw = cluster.scaleout_gbps * cal.net_eff if crosses else (c.link_gbps_per_dir or 0.0) * cal.link_eff
        t_pp = 2.0 * lay.v * tokens * s.hidden * 2.0 / lay.tp / (bw * 1e9) if bw > 0 else math.inf
    # fixed cost of a forward + backward pass of one micro-batch on one stage (kernel launches, host work): three
    # forward passes' worth of the family's fitted per-step serving overhead (an assumption: no training fit)
    t_fixed = 3.0 * cal.step_overhead_s * layers_stage / s.layers
    t_mb = t_comp + (1.0 - cal.tp_overlap) * t_tp + t_ep + t_pp + t_fixed
    bubble = (lay.pp - 1) / lay.v * t_mb if lay.pp > 1 else 0.0
    # data parallel: reduce-scatter gradients + all-gather parameters (bf16), over the NICs
    dense_chip = (s.params_total - s.params_routed) / (lay.tp * lay.pp)
    routed_chip = s.params_routed / (lay.pp * lay.ep) if s.is_moe else 0.0
    edp = max(1.0, lay.dp * lay.tp / lay.ep)
    if job.lora:  # only the adapters have gradients and optimizer states
        dense_chip, routed_chip = lora_params(s, job.lora_rank) / (lay.tp * lay.pp), 0.0
    grad_bytes = 2.0 * ((lay.dp - 1) / lay.dp * dense_chip + (edp - 1) / edp * routed_chip)  # bf16, one pass
    net = cluster.scaleout_gbps * 1e9 * cal.net_eff
    # each gradient bucket's ring collective also pays NCCL's latency, which grows with the data-parallel ranks
    buckets = math.ceil((dense_chip + routed_chip) / max(DDP_BUCKET_MIN, DDP_BUCKET_PER_RANK * lay.dp))
    t_grad = grad_bytes / net + buckets * ring_latency(lay.dp, cluster) if lay.dp > 1 else 0.0
    if lay.zero >= 2:
        # gradients are reduce-scattered after every micro-batch (hidden behind its backward pass) and the
        # parameters all-gathered once per step
        per_mb = max(0.0, t_grad - 2.0 / 3.0 * t_mb)
        dp_exposed = m * per_mb + max(0.0, t_grad - t_mb)
    else:
        # reduce-scatter gradients + all-gather parameters once per step, behind the last micro-batch
        dp_exposed = max(0.0, 2.0 * t_grad - t_mb)
    opt_params = dense_chip / lay.dp + routed_chip / edp
    t_opt = opt_params * 2.0 * (BYTES_OPTIMIZER + BYTES_WEIGHT_GRAD) / (c.memory_bw_gbps * 1e9 * cal.hbm_eff)
    step = m * t_mb + bubble + dp_exposed + t_opt
    # model FLOPs the job needs (no recomputation): 6 x active params for training, 4 x for LoRA (+ adapters)
    model_flops = lin / tokens + 3.0 * s.attn_flops_per_key() * job.seq / 2.0
    step_tokens = batch_seqs * job.seq
    mfu = model_flops * step_tokens / (lay.chips * peak_rated * step)
    return StepEstimate(layout=lay, memory_gb=mem / 1e9, step_s=step, compute_s=m * t_comp, tp_comm_s=m * t_tp,
                        ep_comm_s=m * t_ep, pp_comm_s=m * t_pp, bubble_s=bubble, dp_exposed_s=dp_exposed,
                        optimizer_s=t_opt, mfu=mfu, tokens_per_s=step_tokens / step)


def layouts(s: Shape, c: Chip, cluster: Cluster, chips: int) -> list[Layout]:
    """Candidate layouts for ``chips`` chips (tp within the scale-up domain)."""
    tps = [t for t in TP_CHOICES if t <= cluster.domain and s.heads % t == 0]
    if c.link_kind == "none":
        tps = [1]
    out = []
    for tp in tps:
        for pp in PP_CHOICES:
            if pp > s.layers or chips % (tp * pp):
                continue
            dp = chips // (tp * pp)
            for ep in _ep_choices(s, tp, dp):
                for v in V_CHOICES:
                    if v > 1 and (pp == 1 or v * pp > s.layers):
                        continue
                    for rc in RECOMPUTE_CHOICES:
                        for zero in (1, 2) if dp > 1 else (1,):
                            out.append(Layout(tp=tp, pp=pp, dp=dp, ep=ep, v=v, recompute=rc, zero=zero))
    return out


def best_layout(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: TrainJob,
                chips: int) -> StepEstimate | None:
    best: StepEstimate | None = None
    for lay in layouts(s, c, cluster, chips):
        est = step_estimate(s, c, cal, cluster, job, lay)
        if est is not None and (best is None or est.step_s < best.step_s * (1 - 1e-9)):
            best = est
    return best


def fits_in_memory(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: TrainJob, chips: int) -> bool:
    """Whether some layout holds the job on ``chips`` chips (ignoring whether the batch can feed it)."""
    usable = _usable_bytes(c, cal)
    return any(memory_per_chip(s, c, job, lay, lay.pp) <= usable for lay in layouts(s, c, cluster, chips))


def min_chips_by_memory(s: Shape, c: Chip, cal: Calibration, cluster: Cluster, job: TrainJob) -> int | None:
    """Smallest power-of-two chip count some layout fits on (None beyond MAX_CHIPS)."""
    n = 1
    while n <= MAX_CHIPS:
        if fits_in_memory(s, c, cal, cluster, job, n):
            return n
        n *= 2
    return None


# ---------------------------------------------------------------------------------------------------- plan


def estimate_train(job: TrainJob, accelerator: str, *, cluster: Cluster | None = None, money: Money | None = None,
                   calibration: Calibration | None = None) -> TrainEstimate:
    """Plan training ``job`` on ``accelerator`` (catalog key or alias)."""
    money = money or Money()
    c, s, cal, fields, reason = setup(job.model, accelerator, calibration)
    cluster = (cluster or Cluster()).for_chip(c.scaleup_domain)
    row = TrainEstimate(**fields)
    if reason:
        row.reason = reason
        return row
    precision = job.precision
    if precision == "fp4" and not c.supports("fp4"):
        row.reason = (f"FP4 training refused on {c.key}: the catalog has no FP4 peak for it (no FP4 tensor units; "
                      "FP4 needs Blackwell-class chips such as B200 or GB200) - plan with --precision fp8 or bf16")
        return row
    if precision == "fp4":
        row.notes.append("FP4 (NVFP4) GEMMs at the family's FP4/FP8 efficiency ratio; no FP4 training measurement "
                         "in the calibration set")
    if job.method == "lora":
        row.notes.append(f"LoRA rank {job.lora_rank}: {lora_params(s, job.lora_rank) / 1e6:,.0f}M trainable "
                         f"parameters on a frozen base in {precision} storage; MFU counts 4 x params per token")
    if s.max_positions and job.seq > s.max_positions:
        row.notes.append(f"sequence {job.seq:,} is longer than {s.key}'s context window ({s.max_positions:,}): "
                         "a context-extension job")
    if precision == "fp8" and not c.supports("fp8"):
        precision = "bf16"
        row.notes.append(f"{c.key} has no known fp8 peak: planned in bf16")
        job = TrainJob(**{**asdict(job), "precision": "bf16"})
    row.precision = precision
    min_chips = min_chips_by_memory(s, c, cal, cluster, job)
    row.min_chips_memory = min_chips
    if min_chips is None:
        row.reason = f"does not fit on {MAX_CHIPS} chips"
        return row
    est: StepEstimate | None = None
    if job.chips is not None:
        if job.chips < min_chips:
            row.chips = job.chips
            row.reason = f"{job.chips} chips cannot hold the job: at least {min_chips} needed by memory"
            return row
        est = best_layout(s, c, cal, cluster, job, job.chips)
        if est is None:
            row.chips = job.chips
            row.reason = (f"no layout for {job.chips} chips: the global batch of "
                          f"{job.batch_tokens(s) / job.seq:,.0f} sequences cannot feed that many data-parallel ranks")
            return row
    else:
        n = min_chips
        while n <= MAX_CHIPS:
            cand = best_layout(s, c, cal, cluster, job, n)
            if cand is not None:
                est = cand
                if job.tokens / cand.tokens_per_s / 86400.0 <= job.target_days:
                    break
            n *= 2
        if est is None:
            row.reason = "no layout found (global batch too small for the chips memory requires)"
            return row
        days = job.tokens / est.tokens_per_s / 86400.0
        if days > job.target_days:
            row.notes.append(f"cannot reach {job.target_days:g} days: the global batch limits data parallelism")
    lay = est.layout
    row.chips, row.layout = lay.chips, lay.describe()
    row.tp, row.pp, row.dp, row.ep = lay.tp, lay.pp, lay.dp, lay.ep
    row.memory_per_chip_gb = est.memory_gb
    row.step_s, row.tokens_per_s, row.mfu = est.step_s, est.tokens_per_s, est.mfu
    row.tokens_per_s_per_chip = est.tokens_per_s / lay.chips
    seconds = job.tokens / est.tokens_per_s
    row.days = seconds / 86400.0
    row.chip_hours = lay.chips * seconds / 3600.0
    row.breakdown = {"compute_s": est.compute_s, "tp_comm_s": est.tp_comm_s, "ep_comm_s": est.ep_comm_s,
                     "pp_comm_s": est.pp_comm_s, "bubble_s": est.bubble_s, "dp_exposed_s": est.dp_exposed_s,
                     "optimizer_s": est.optimizer_s}
    busy = est.mfu / cal.gemm_eff
    if c.tdp_w is not None:
        row.energy_kwh = row.chip_hours * c.tdp_w * money.power_frac(busy) * money.pue / 1000.0
    else:
        row.notes.append("energy unknown: tdp_w unknown in the catalog")
    if c.price_usd is not None and row.energy_kwh is not None:
        capex = money.capex_usd_per_chip_hour(c.price_usd)
        row.usd = row.chip_hours * capex + row.energy_kwh * money.usd_per_kwh
        row.usd_per_chip_hour = row.usd / row.chip_hours
    elif c.price_usd is None:
        row.notes.append("cost unknown: price_usd unknown in the catalog")
    return row
