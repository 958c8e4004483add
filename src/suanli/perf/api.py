"""The small, stable interface other layers (scheduler, simulator, control plane) call.

It imports nothing from sched/sim/control/api/cli. Numbers come from the same model as ``suanli plan`` so that
placement decisions and "what if we add 512 BR100s" are answered with the same figures.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from suanli.catalog.accelerators import resolve_accelerator
from suanli.catalog.llms import resolve_llm
from suanli.perf.assumptions import Cluster, Money
from suanli.perf.calibration import calibration_for
from suanli.perf.hardware import chip
from suanli.perf.serve import MAX_SEQS_PER_RANK, ServeEstimate, ServeJob, estimate_serve
from suanli.perf.shape import shape
from suanli.perf.train import TrainEstimate, TrainJob, best_layout, estimate_train, min_chips_by_memory

Kind = Literal["train", "serve"]


def plan_train(model: str, accelerators: list[str], tokens: float, *, seq: int = 4096, precision: str = "bf16",
               chips: int | None = None, global_batch_tokens: float | None = None, target_days: float = 60.0,
               cluster: Cluster | None = None, money: Money | None = None, method: str = "pretrain",
               lora_rank: int = 16) -> list[TrainEstimate]:
    """One training estimate per accelerator (rows with unknown figures carry ``reason``)."""
    job = TrainJob(model=resolve_llm(model), tokens=tokens, seq=seq, precision=precision, chips=chips,
                   global_batch_tokens=global_batch_tokens, target_days=target_days, method=method,
                   lora_rank=lora_rank)
    return [estimate_train(job, a, cluster=cluster, money=money) for a in accelerators]


def plan_serve(model: str, accelerators: list[str], *, input_tokens: float = 2000, output_tokens: float = 500,
               qps: float | None = None, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
               precision: str = "auto", chips: int | None = None, max_batch: int | None = None,
               max_batch_per_rank: int = MAX_SEQS_PER_RANK, image_tokens: float = 0.0,
               cluster: Cluster | None = None, money: Money | None = None) -> list[ServeEstimate]:
    """One serving estimate per accelerator (rows with unknown figures or an unreachable SLO carry ``reason``).
    Raises InvalidQuantity for a job the model cannot run (prompt + output beyond its context window)."""
    job = ServeJob(model=resolve_llm(model), input_tokens=input_tokens, output_tokens=output_tokens, qps=qps,
                   ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, precision=precision, chips=chips,
                   max_batch=max_batch, max_batch_per_rank=max_batch_per_rank, image_tokens=image_tokens)
    return [estimate_serve(job, a, cluster=cluster, money=money) for a in accelerators]


@lru_cache(maxsize=4096)
def _throughput(model: str, accelerator: str, chips: int, kind: str, seq: int, precision: str,
                input_tokens: float, output_tokens: float, global_batch_tokens: float | None) -> float | None:
    if kind == "train":
        job = TrainJob(model=model, tokens=1e12, seq=seq, precision=precision, chips=chips,
                       global_batch_tokens=global_batch_tokens)
        return estimate_train(job, accelerator).tokens_per_s
    sjob = ServeJob(model=model, input_tokens=input_tokens, output_tokens=output_tokens, precision=precision,
                    chips=chips)
    est = estimate_serve(sjob, accelerator)
    return est.tokens_per_s if est.reason is None else None


def job_throughput(model: str, accelerator: str, chips: int, kind: Kind = "train", *, seq: int = 4096,
                   precision: str | None = None, input_tokens: float = 2000, output_tokens: float = 500,
                   global_batch_tokens: float | None = None) -> float | None:
    """Tokens/s of a job of ``model`` on ``chips`` chips of ``accelerator``.

    ``train``: training tokens/s of the whole job (best layout for that chip count); ``serve``: output tokens/s
    of the deployment (as many replicas as fit in ``chips``). ``None`` when a needed figure is unknown, the model
    does not fit in ``chips`` chips, or no layout works. Unknown names raise UnknownName. Cached.
    """
    if chips < 1:
        raise ValueError("chips must be >= 1")
    prec = precision or ("bf16" if kind == "train" else "auto")
    return _throughput(resolve_llm(model), resolve_accelerator(accelerator), int(chips), kind, int(seq), prec,
                       float(input_tokens), float(output_tokens), global_batch_tokens)


@lru_cache(maxsize=1024)
def _per_chip_speed(llm: str, accelerator: str, kind: str) -> float | None:
    c = chip(accelerator)
    if kind == "serve":
        est = estimate_serve(ServeJob(model=llm), accelerator)
        return est.tokens_per_s_per_chip if est.reason is None else None
    if c.missing("bf16_tflops", "memory_gb", "memory_bw_gbps"):
        return None
    s = shape(llm)
    job = TrainJob(model=llm, tokens=1e12)
    cal = calibration_for(c.vendor)
    cluster = Cluster().for_chip(c.scaleup_domain)
    n = min_chips_by_memory(s, c, cal, cluster, job)
    while n is not None and n <= 1 << 16:
        est = best_layout(s, c, cal, cluster, job, max(n, 8))
        if est is not None:
            return est.tokens_per_s / est.layout.chips
        n *= 2
    return None


def relative_speed(accelerators: list[str], llm: str | None = None, kind: Kind = "serve") -> dict[str, float | None]:
    """Speed of one chip of each accelerator, normalised so the fastest known one is 1.0.

    Without ``llm``: ratio of BF16 dense peaks. With ``llm``: per-chip throughput of that model (``serve``: output
    tokens/s per chip at the default 2,000-in/500-out workload; ``train``: training tokens/s per chip at the
    smallest power-of-two chip count (>= 8) that holds the model). Accelerators whose figures are unknown map to
    ``None`` (they stay in the dict so callers see them); keys are catalog keys.
    """
    keys = [resolve_accelerator(a) for a in accelerators]
    raw: dict[str, float | None] = {}
    if llm is None:
        for k in keys:
            raw[k] = chip(k).bf16_tflops
    else:
        model = resolve_llm(llm)
        for k in keys:
            raw[k] = _per_chip_speed(model, k, kind)
    known = [v for v in raw.values() if v is not None and v > 0]
    top = max(known) if known else None
    return {k: (v / top if v is not None and top else None) for k, v in raw.items()}
