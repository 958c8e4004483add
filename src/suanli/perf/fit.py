"""Recomputes the fitted calibration factors of :mod:`suanli.perf.calibration` from their calibration anchors.

The calibration anchors are published measurements that are *not* part of the validation set
(:mod:`suanli.perf.validation`):

* serving: NVIDIA TensorRT-LLM's throughput table (``docs/source/performance/perf-overview.md`` of
  NVIDIA/TensorRT-LLM at commit 00f37686aa854010d68bcbd0f4ab000221541ca6): output tokens/s of the TP group, fixed
  input/output lengths, infinite request rate. Dense FP8 rows fit ``serve_eff``, dense FP4 rows ``serve_eff_fp4``,
  the MoE rows of four models (Qwen3-235B-A22B, Qwen3-30B-A3B, Llama 4 Maverick, Llama 4 Scout) fit
  ``expert_m_half`` and ``moe_eff`` jointly. No MLPerf row (the validation set) is in this table.
* training: BAAI FlagPerf ``training/nvidia/llama2_70B-megatron`` (FlagOpen/FlagPerf README): Llama 2 70B on 32
  H800 (4 nodes x 8, InfiniBand 200 Gb/s), BF16, sequence 4,096, global batch 44 sequences, no recomputation:
  791.37 tokens/s/GPU with TP4 PP8 and 641.93 with TP8 PP4. Fits ``train_eff``.

Each factor is one number for the whole family (geometric-mean fit), never one per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from suanli.perf.assumptions import Cluster
from suanli.perf.calibration import NVIDIA, Calibration, with_factors
from suanli.perf.hardware import chip
from suanli.perf.serve import ServeJob, estimate_serve
from suanli.perf.shape import shape
from suanli.perf.train import Layout, TrainJob, step_estimate

TRTLLM_SOURCE = ("NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @ 00f37686aa85 "
                 "(Total Output Throughput, tokens/s, trtllm-bench, PyTorch backend)")
FLAGPERF_SOURCE = "FlagOpen/FlagPerf training/nvidia/llama2_70B-megatron/README.md (H800 4x8, amp)"

ISL_OSL: tuple[tuple[int, int], ...] = ((128, 128), (128, 2048), (128, 4096), (500, 2000), (1000, 1000),
                                        (1000, 2000), (2048, 128), (2048, 2048), (5000, 500), (20000, 2000))

# (model, accelerator, precision, chips per TP group) -> output tokens/s per ISL_OSL row (None = not published)
TRTLLM_TABLE: dict[tuple[str, str, str, int], tuple[int | None, ...]] = {
    ("Llama-3.3-70B", "B200", "fp4", 1): (11147, 9922, 6831, 7762, 7007, 6271, 1339, 4783, 1459, 665),
    ("Llama-3.3-70B", "H200", "fp8", 1): (3803, 4336, 2872, 3666, 2909, 2994, 442, 2003, 566, 283),
    ("Llama-3.3-70B", "H100", "fp8", 2): (6378, 6651, 4199, 5222, 4205, 4146, 762, 3082, 898, 437),
    ("Llama-3.1-405B", "B200", "fp4", 4): (6281, 8020, 6345, 6244, 5209, 4933, 749, 4212, 1048, 672),
    ("Llama-3.1-405B", "H200", "fp8", 8): (3814, 5348, 4741, 4724, 3330, 3722, 456, 2948, 650, 505),
    ("Llama-3.1-405B", "H100", "fp8", 8): (3627, 4340, 3116, 3994, 2919, 2895, 453, 2296, 610, 345),
    ("Llama-3.1-8B", "H200", "fp8", 1): (27911, 26221, 18027, 20770, 17744, 16828, 3538, 12194, 3902, 1804),
    ("Llama-3.1-8B", "H100", "fp8", 1): (28312, 22714, 14325, 17660, 15220, 13899, 3450, 9305, 3459, 1351),
    ("Qwen3-235B-A22B", "B200", "fp4", 8): (63362, 66057, 39496, 57117, 42391, 34105, 7329, 26854, 8190, 4453),
    ("Qwen3-235B-A22B", "H200", "fp8", 8): (30429, 42821, 26852, 28026, 23789, 22061, 3331, 16672, 3623, 1876),
    ("Qwen3-235B-A22B", "H100", "fp8", 8): (None, 19658, 12447, 18351, 14898, 15136, None, 9924, 3225, None),
    ("Qwen3-30B-A3B", "B200", "fp4", 1): (39827, 37844, 24953, 27817, 25828, 22051, 6251, 17554, 6142, 2944),
    ("Llama-4-Maverick-17B-128E", "B200", "fp4", 8): (124323, 112676, 68170, None, 79617, 63766, 18088, 52195, None,
                                                      12678),
    ("Llama-4-Maverick-17B-128E", "H200", "fp8", 8): (63994, 40572, 24616, 37835, 31782, 34734, 7307, 20957, 8456,
                                                      4106),
    ("Llama-4-Maverick-17B-128E", "H100", "fp8", 8): (None, 10829, 6744, 10108, 9677, 9151, None, 6916, 3457, None),
    ("Llama-4-Scout-17B-16E", "B200", "fp4", 1): (25342, 14699, 8932, 11977, 10591, 9356, 3137, 7152, 2937, 1644),
    ("Llama-4-Scout-17B-16E", "H200", "fp8", 4): (30354, 34316, 21332, 24630, 21636, 18499, 3699, 14949, 4605, 2105),
    ("Llama-4-Scout-17B-16E", "H100", "fp8", 4): (None, 15130, 8603, 12399, 12129, 9838, 3253, 7972, 3342, None),
}

TRTLLM_MAX_BATCH_PER_RANK = 2048  # TensorRT-LLM's default max_batch_size (per rank)

# (accelerator, chips, tp, pp, measured tokens/s per chip)
FLAGPERF_LLAMA2_70B: tuple[tuple[str, int, int, int, float], ...] = (
    ("H800", 32, 4, 8, 791.37),
    ("H800", 32, 8, 4, 641.93),
)
FLAGPERF_CLUSTER = Cluster(scaleup_size=8, scaleout_gbps=25.0)  # InfiniBand 200 Gb/s per node link as stated


@dataclass(frozen=True)
class FitRow:
    label: str
    published: float
    predicted: float

    @property
    def ratio(self) -> float:
        return self.published / self.predicted


def _geo(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def serve_rows(cal: Calibration, *, moe: bool | None = None, precision: str | None = None) -> list[FitRow]:
    """Model vs TensorRT-LLM table rows under calibration ``cal`` (filtered by MoE-ness / precision)."""
    out = []
    for (model, acc, prec, tp), values in TRTLLM_TABLE.items():
        if precision is not None and prec != precision:
            continue
        if moe is not None and shape(model).is_moe != moe:
            continue
        for (isl, osl), pub in zip(ISL_OSL, values, strict=True):
            if pub is None:
                continue
            # the table's MoE runs use attention data parallelism + expert parallelism (its MoE llm_options)
            # TensorRT-LLM's engine defaults (max_batch_size 2,048 and max_num_tokens 8,192 per rank)
            job = ServeJob(model=model, input_tokens=isl, output_tokens=osl, precision=prec, replica_chips=tp,
                           expert_parallel=True if shape(model).is_moe else None,
                           max_batch_per_rank=TRTLLM_MAX_BATCH_PER_RANK)
            est = estimate_serve(job, acc, calibration=cal)
            if est.tokens_per_s is None:
                continue
            out.append(FitRow(f"{model} {acc} TP{tp} {prec} {isl}/{osl}", float(pub), est.tokens_per_s))
    return out


def _log_rms(rows: list[FitRow]) -> float:
    return math.sqrt(sum(math.log(r.ratio) ** 2 for r in rows) / len(rows))


def nelder_mead(f: Callable[[list[float]], float], x0: list[float], step: list[float], *, iters: int = 200,
                tol: float = 1e-6) -> tuple[list[float], float]:
    """Minimise ``f`` from ``x0`` (Nelder-Mead simplex, standard coefficients); returns (x, f(x))."""
    n = len(x0)
    pts = [list(x0)] + [[x0[j] + (step[j] if j == i else 0.0) for j in range(n)] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda k: vals[k])
        pts, vals = [pts[k] for k in order], [vals[k] for k in order]
        if abs(vals[-1] - vals[0]) < tol:
            break
        centroid = [sum(p[j] for p in pts[:-1]) / n for j in range(n)]

        def towards(c: float, p: list[float] = pts[-1], centroid: list[float] = centroid) -> list[float]:
            return [centroid[j] + c * (p[j] - centroid[j]) for j in range(n)]

        xr = towards(-1.0)
        fr = f(xr)
        if fr < vals[0]:
            xe = towards(-2.0)
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = towards(0.5)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:  # shrink towards the best point
                pts = [pts[0]] + [[pts[0][j] + 0.5 * (p[j] - pts[0][j]) for j in range(n)] for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    k = min(range(n + 1), key=lambda i: vals[i])
    return pts[k], vals[k]


def dense_fit(base: Calibration) -> dict[str, float]:
    """``serve_eff`` (FP8/BF16 GEMMs), ``serve_eff_fp4`` and the fixed step costs ``step_overhead_s`` and
    ``seq_overhead_s`` jointly on the dense rows (least squares in log throughput). The fixed costs are shared by
    both precisions; parameters are searched as log(eff) and sqrt(cost) so that they stay positive."""

    def cal_of(x: list[float]) -> Calibration:
        return with_factors(base, serve_eff=math.exp(x[0]), serve_eff_fp4=math.exp(x[1]),
                            step_overhead_s=x[2] ** 2 * 1e-3, seq_overhead_s=x[3] ** 2 * 1e-6)

    def err(x: list[float]) -> float:
        return _log_rms(serve_rows(cal_of(x), moe=False))

    x, rms = nelder_mead(err, [math.log(0.66), math.log(0.5), 1.0, 1.0], [0.1, 0.1, 0.7, 0.7], iters=250)
    c = cal_of(x)
    return {"serve_eff": c.serve_eff, "serve_eff_fp4": c.serve_eff_fp4, "step_overhead_s": c.step_overhead_s,
            "seq_overhead_s": c.seq_overhead_s, "dense_rms_log": rms}


def moe_fit(base: Calibration, m_half: float) -> tuple[float, float]:
    """For a given ``expert_m_half``: the ``moe_eff`` that best fits the MoE rows (least squares in log; with fixed
    step costs throughput is no longer proportional to it, so it is searched) and the RMS log error left."""

    def err(e: float) -> float:
        return _log_rms(serve_rows(with_factors(base, expert_m_half=m_half, moe_eff=e), moe=True))

    lo, hi = 0.2, 1.5
    inv = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - inv * (hi - lo), lo + inv * (hi - lo)
    fa, fb = err(a), err(b)
    for _ in range(22):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - inv * (hi - lo)
            fa = err(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + inv * (hi - lo)
            fb = err(b)
    eff = (lo + hi) / 2.0
    return eff, err(eff)


def fit_serve(base: Calibration = NVIDIA) -> dict[str, float]:
    """The dense factors and fixed costs (:func:`dense_fit`), then (``expert_m_half``, ``moe_eff``) jointly on the
    MoE rows (least squares in log throughput), all for the whole family."""
    d = dense_fit(base)
    dense = with_factors(base, serve_eff=d["serve_eff"], serve_eff_fp4=d["serve_eff_fp4"],
                         step_overhead_s=d["step_overhead_s"], seq_overhead_s=d["seq_overhead_s"])

    def err(x: list[float]) -> float:
        return _log_rms(serve_rows(with_factors(dense, expert_m_half=math.exp(x[0]), moe_eff=math.exp(x[1])),
                                   moe=True))

    x, rms = nelder_mead(err, [math.log(320.0), math.log(0.7)], [0.5, 0.1], iters=120)
    return {**d, "expert_m_half": math.exp(x[0]), "moe_eff": math.exp(x[1]), "moe_rms_log": rms}


def train_rows(cal: Calibration) -> list[FitRow]:
    s = shape("Llama-2-70B")
    out = []
    for acc, chips, tp, pp, pub in FLAGPERF_LLAMA2_70B:
        job = TrainJob(model="Llama-2-70B", tokens=1e9, seq=4096, global_batch_tokens=44 * 4096, chips=chips)
        lay = Layout(tp=tp, pp=pp, dp=chips // (tp * pp), ep=1, v=1, recompute=0.0)
        est = step_estimate(s, chip(acc), cal, FLAGPERF_CLUSTER, job, lay, check_memory=False)
        assert est is not None
        out.append(FitRow(f"Llama-2-70B {acc}x{chips} TP{tp} PP{pp}", pub, est.tokens_per_s / chips))
    return out


def fit_train(base: Calibration = NVIDIA) -> dict[str, float]:
    """``train_eff`` such that the geometric-mean ratio over the FlagPerf rows is 1."""

    def bias(e: float) -> float:
        return math.log(_geo([r.ratio for r in train_rows(with_factors(base, train_eff=e))]))

    lo, hi = 0.1, 1.5
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bias(mid) > 0 else (lo, mid)
    return {"train_eff": (lo + hi) / 2}


def rms_error(rows: list[FitRow]) -> float:
    """Root-mean-square relative error of the model on ``rows`` (predicted / published - 1): the printed band."""
    return math.sqrt(sum((r.predicted / r.published - 1.0) ** 2 for r in rows) / len(rows))


def spread(rows: list[FitRow]) -> float:
    """Largest |log ratio| of the rows, as a relative error (how far single rows sit from the family fit)."""
    return math.exp(max(abs(math.log(r.ratio)) for r in rows)) - 1.0


if __name__ == "__main__":  # pragma: no cover - helper for maintainers
    print(fit_serve())
    print(fit_train())
