"""The planner checked against published results (MLPerf Inference, DeepSeek-V3, Llama 3 405B).

None of these figures is used to set a constant (see :mod:`suanli.perf.calibration` / :mod:`suanli.perf.fit` for
the disjoint calibration set). Each row describes the *job* as published (model, chips, precision, lengths, batch)
and lets the planner choose everything else (parallel layout, batch, replica size) from first principles.

Workload facts used by the rows:

* MLPerf llama2-70b (OpenOrca, 24,576 samples): mean input 222.3 tokens = 5,463,976 input tokens / 24,576 samples
  (digest-checked length table of the official ``open_orca_gpt4_tokenized_llama.sampled_24576.pkl``, recorded in
  FlashLab-MBZUAI/HBFSim validation/calibration/h100-llama2-70b-calibration-protocol.json); mean output 294.45
  tokens (MLPerf submission checker's TOKENS_PER_SAMPLE reference; results must be within 90-110% of it, and the
  265 of ``anchors.md`` is that 90% bound).
* MLPerf mixtral-8x7b (15,000 samples: 5k OpenOrca, 5k GSM8K 5-shot, 5k MBXP): mean output 145.9 tokens (submission
  checker reference); mean input 427.4 tokens = 6,410,905 input tokens / 15,000 rows of the per-sample length
  table openshift-psap/performance-dashboard mlperf-data/summaries/mixtral-8x7b.csv @ 67033ba (three blocks of
  5,000 rows averaging 665.6, 415.4 and 201.2; the first version of the planner estimated ~390).
* MLPerf llama2-70b Server: Poisson arrivals, p99 TTFT <= 2 s and p99 TPOT <= 200 ms (MLPerf Inference rules for
  llama2-70b); anchors.md gives the measured p99s of the H200 result (0.453 s, 146 ms).
* DeepSeek-R1 max-throughput (TensorRT-LLM's published recipe, NVIDIA/TensorRT-LLM
  docs/source/blogs/Best_perf_practice_on_DeepSeek-R1_in_TensorRT-LLM.md @ f0c873f): 8 GPUs, 1,024 in / 2,048 out
  tokens, the benchmark's concurrency (sequences in flight) as published - the engine caps it; the planner
  chooses the replica and parallelism.
* Precision as submitted: NVIDIA's Hopper submissions run FP8 weights and FP8 KV cache (TensorRT-LLM); its
  Blackwell (B200) submissions run FP4 (NVFP4) weights - planning B200 in FP8 is shown separately in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass

from suanli.perf.serve import ServeJob, estimate_serve
from suanli.perf.train import TrainJob, estimate_train

LLAMA2_ISL = 5_463_976 / 24_576  # 222.3
LLAMA2_OSL = 294.45
MIXTRAL_ISL = 6_410_905 / 15_000  # 427.4: sum over all 15,000 rows of the cited length table / rows
MIXTRAL_OSL = 145.9
MLPERF = "MLCommons MLPerf Inference datacenter closed, official results (shared/research/anchors.md)"
TRTLLM_R1 = ("NVIDIA/TensorRT-LLM docs/source/blogs/Best_perf_practice_on_DeepSeek-R1_in_TensorRT-LLM.md @ f0c873f "
             "(trtllm-bench, Per GPU Output Throughput)")
TRTLLM_MAX_BATCH_PER_RANK = 2048  # TensorRT-LLM's default max_batch_size: the engine of every serving row


@dataclass(frozen=True)
class Check:
    key: str
    what: str  # the published quantity, in words
    kind: str  # "serve" | "train"
    accelerator: str
    model: str
    chips: int
    published: float
    unit: str
    source: str
    precision: str
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    tokens: float = 0.0
    seq: int = 4096
    global_batch_tokens: float | None = None
    ttft_slo_s: float | None = None  # p99 bounds of a latency-bound (Server) scenario
    tpot_slo_s: float | None = None
    concurrency: int | None = None  # sequences in flight the benchmark allows (per deployment)


CHECKS: tuple[Check, ...] = (
    Check("mlperf-v4.1-llama2-h100", "llama2-70b Offline v4.1, 8x H100-SXM-80GB, tokens/s per GPU", "serve", "H100",
          "Llama-2-70B", 8, 24_525 / 8, "tok/s/chip", MLPERF, "fp8", LLAMA2_ISL, LLAMA2_OSL),
    Check("mlperf-v4.1-llama2-h200", "llama2-70b Offline v4.1, 8x H200-SXM-141GB, tokens/s per GPU", "serve", "H200",
          "Llama-2-70B", 8, 31_303 / 8, "tok/s/chip", MLPERF, "fp8", LLAMA2_ISL, LLAMA2_OSL),
    Check("mlperf-v5.0-llama2-h200", "llama2-70b Offline v5.0, 8x H200-SXM-141GB, tokens/s per GPU", "serve", "H200",
          "Llama-2-70B", 8, 34_988 / 8, "tok/s/chip", MLPERF, "fp8", LLAMA2_ISL, LLAMA2_OSL),
    Check("mlperf-v4.1-llama2-b200", "llama2-70b Offline v4.1, 1x B200-SXM-180GB, tokens/s", "serve", "B200",
          "Llama-2-70B", 1, 11_264, "tok/s/chip", MLPERF, "fp4", LLAMA2_ISL, LLAMA2_OSL),
    Check("mlperf-v5.1-llama2-b200", "llama2-70b Offline v5.1, 8x B200-SXM-180GB, tokens/s per GPU", "serve", "B200",
          "Llama-2-70B", 8, 101_527 / 8, "tok/s/chip", MLPERF, "fp4", LLAMA2_ISL, LLAMA2_OSL),
    Check("mlperf-v4.1-llama2-h200-server", "llama2-70b Server v4.1 (p99 TTFT 2 s, TPOT 200 ms), 8x H200-SXM-141GB, "
          "tokens/s per GPU", "serve", "H200", "Llama-2-70B", 8, 29_228 / 8, "tok/s/chip", MLPERF, "fp8", LLAMA2_ISL,
          LLAMA2_OSL, ttft_slo_s=2.0, tpot_slo_s=0.2),
    Check("mlperf-v4.1-mixtral-h100", "mixtral-8x7b Offline v4.1, 8x H100-SXM-80GB, tokens/s per GPU", "serve",
          "H100", "Mixtral-8x7B", 8, 52_416 / 8, "tok/s/chip", MLPERF, "fp8", MIXTRAL_ISL, MIXTRAL_OSL),
    Check("mlperf-v4.1-mixtral-h200", "mixtral-8x7b Offline v4.1, 8x H200-SXM-141GB, tokens/s per GPU", "serve",
          "H200", "Mixtral-8x7B", 8, 59_022 / 8, "tok/s/chip", MLPERF, "fp8", MIXTRAL_ISL, MIXTRAL_OSL),
    Check("trtllm-r1-b200-maxtput", "DeepSeek-R1 FP4 max throughput, 8x B200, 1K in / 2K out, concurrency 7,168: "
          "tokens/s per GPU", "serve", "B200", "DeepSeek-R1", 8, 5393.2755, "tok/s/chip", TRTLLM_R1, "fp4", 1024,
          2048, concurrency=7168),
    Check("trtllm-r1-h200-maxtput", "DeepSeek-R1 FP8 max throughput, 8x H200, 1K in / 2K out, concurrency 1,024: "
          "tokens/s per GPU", "serve", "H200", "DeepSeek-R1", 8, 1436.1584, "tok/s/chip", TRTLLM_R1, "fp8", 1024,
          2048, concurrency=1024),
    Check("llama3-405b-16k", "Llama 3 405B pre-training, 16,384 H100, 8K sequences, 16M-token batch: BF16 MFU",
          "train", "H100", "Llama-3.1-405B", 16_384, 0.41, "MFU",
          "The Llama 3 Herd of Models, Table 4 (41%; anchors.md: 38-43%)", "bf16",
          tokens=15.6e12, seq=8192, global_batch_tokens=2048 * 8192),
    Check("llama3-405b-8k", "Llama 3 405B pre-training, 8,192 H100, 8K sequences, 16M-token batch: BF16 MFU",
          "train", "H100", "Llama-3.1-405B", 8_192, 0.43, "MFU",
          "The Llama 3 Herd of Models, Table 4 (43%; anchors.md: 38-43%)", "bf16",
          tokens=15.6e12, seq=8192, global_batch_tokens=2048 * 8192),
    Check("deepseek-v3-pretrain", "DeepSeek-V3 pre-training, 14.8T tokens on 2,048 H800, FP8: GPU-hours", "train",
          "H800", "DeepSeek-V3", 2_048, 2.664e6, "GPU-hours",
          "DeepSeek-V3 technical report (2.664M H800 GPU-hours; anchors.md)", "fp8",
          tokens=14.8e12, seq=4096, global_batch_tokens=15_360 * 4096),
)


@dataclass(frozen=True)
class Result:
    check: Check
    predicted: float | None
    detail: str

    @property
    def error(self) -> float | None:
        if self.predicted is None:
            return None
        return self.predicted / self.check.published - 1.0


def run_check(c: Check, *, precision: str | None = None) -> Result:
    """The planner's prediction for check ``c`` (optionally in another precision, for what-ifs)."""
    prec = precision or c.precision
    if c.kind == "serve":
        job = ServeJob(model=c.model, input_tokens=c.input_tokens, output_tokens=c.output_tokens, precision=prec,
                       chips=c.chips, ttft_slo_s=c.ttft_slo_s, tpot_slo_s=c.tpot_slo_s,
                       max_batch_per_rank=TRTLLM_MAX_BATCH_PER_RANK, max_batch=c.concurrency)
        est = estimate_serve(job, c.accelerator)
        layout = f"replica {est.chips_per_replica} chip(s)" + (f" EP{est.ep}" if est.ep and est.ep > 1 else
                                                              f" TP{est.tp}") + f", batch {est.batch}"
        return Result(c, est.tokens_per_s_per_chip, layout)
    tjob = TrainJob(model=c.model, tokens=c.tokens, seq=c.seq, precision=prec, chips=c.chips,
                    global_batch_tokens=c.global_batch_tokens)
    tr = estimate_train(tjob, c.accelerator)
    value = tr.mfu if c.unit == "MFU" else tr.chip_hours
    return Result(c, value, tr.layout or (tr.reason or ""))


def run_all() -> list[Result]:
    return [run_check(c) for c in CHECKS]


def _fmt(v: float, unit: str) -> str:
    if unit == "MFU":
        return f"{v:.1%}"
    if unit == "GPU-hours":
        return f"{v / 1e6:.3f}M"
    return f"{v:,.0f}"


def markdown_table(results: list[Result] | None = None) -> str:
    """The validation table of docs/planner.md (generated, never typed by hand)."""
    results = results if results is not None else run_all()
    lines = ["| published figure | unit | predicted | published | error | planner's choice | source |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in results:
        c = r.check
        pred = _fmt(r.predicted, c.unit) if r.predicted is not None else "unknown"
        err = f"{r.error:+.1%}" if r.error is not None else "-"
        lines.append(f"| {c.what} | {c.unit} | {pred} | {_fmt(c.published, c.unit)} | {err} | {r.detail} | "
                     f"{c.source} |")
    errs = [abs(r.error) for r in results if r.error is not None]
    if errs:
        within = sum(1 for e in errs if e < 0.15)
        lines.append("")
        lines.append(f"Mean absolute error {sum(errs) / len(errs):.1%} over {len(errs)} rows; "
                     f"{within} of {len(errs)} within 15%; largest {max(errs):.1%}.")
    return "\n".join(lines)
