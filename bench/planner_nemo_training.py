"""The training planner against NVIDIA's Megatron-Bridge pre-training table (NeMo 25.11 container): an extra check
that is *not* part of ``suanli plan validate`` (no constant is fitted on it either) and that covers what the
validation set lacks - an 8B model, Blackwell and GB200 NVL72 systems, and MoE training.

Source: NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary.md``, "25.11 NeMo Container", pre-training, FP8-CS
(current scaling) figures, the first number of each cell (read from the fork pufanyi/Megatron-Bridge @ 21a2ced).
Each row describes the job as published (model, GPUs, precision, global batch, sequence length); the planner picks
the layout. Llama 3 8B / 70B are planned with the catalog's Llama 3.1 8B / 70B (the same architecture).

    .venv/bin/python bench/planner_nemo_training.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math

from suanli.perf.train import TrainJob, estimate_train

SOURCE = "NVIDIA-NeMo/Megatron-Bridge docs/performance-summary.md (25.11, pre-training; fork pufanyi @ 21a2ced)"

# (model, accelerator, GPUs, global batch in sequences, sequence length, precision, published tokens/s per GPU)
ROWS: tuple[tuple[str, str, int, int, int, str, float], ...] = (
    ("Llama-3.1-8B", "H100", 8, 128, 8192, "fp8", 14451),
    ("Llama-3.1-70B", "H100", 64, 128, 8192, "fp8", 1602),
    ("Llama-3.1-405B", "H100", 1024, 512, 8192, "fp8", 292),
    ("Llama-3.1-8B", "B200", 8, 128, 8192, "fp8", 30624),
    ("Llama-3.1-405B", "B200", 128, 64, 8192, "fp8", 661),
    ("Llama-3.1-8B", "GB200-NVL72", 8, 128, 8192, "fp8", 31508),
    ("Llama-3.1-70B", "GB200-NVL72", 64, 128, 8192, "fp8", 4312),
    ("Llama-3.1-405B", "GB200-NVL72", 128, 64, 8192, "fp8", 706),
    ("DeepSeek-V3", "B200", 256, 2048, 4096, "fp8", 2139),
    ("DeepSeek-V3", "GB200-NVL72", 256, 2048, 4096, "fp8", 3653),
    ("Qwen3-30B-A3B", "H100", 16, 512, 4096, "fp8", 5275),
    ("Qwen3-30B-A3B", "B200", 8, 512, 4096, "fp8", 9299),
    ("Qwen3-30B-A3B", "GB200-NVL72", 8, 512, 4096, "fp8", 23766),
    ("Qwen3-235B-A22B", "B200", 64, 1024, 4096, "fp8", 3269),
    ("Qwen3-235B-A22B", "GB200-NVL72", 64, 1024, 4096, "fp8", 4366),
)


def run() -> list[dict[str, object]]:
    out = []
    for model, acc, gpus, gbs, seq, prec, pub in ROWS:
        est = estimate_train(TrainJob(model=model, tokens=1e12, chips=gpus, seq=seq, precision=prec,
                                      global_batch_tokens=gbs * seq), acc)
        pred = est.tokens_per_s_per_chip
        out.append({"model": model, "accelerator": acc, "gpus": gpus, "global_batch": gbs, "seq": seq,
                    "precision": prec, "published": pub, "predicted": pred, "layout": est.layout,
                    "error": None if pred is None else pred / pub - 1.0, "reason": est.reason})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = run()
    if args.json:
        print(json.dumps({"source": SOURCE, "rows": rows}, indent=2))
        return
    print(f"Training tokens/s per GPU vs {SOURCE}\n")
    print("| job | predicted | published | error | planner's layout |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        err = "-" if r["error"] is None else f"{r['error']:+.1%}"
        pred = "-" if r["predicted"] is None else f"{r['predicted']:,.0f}"
        print(f"| {r['model']}, {r['gpus']}x {r['accelerator']}, {r['precision']}, batch {r['global_batch']}x"
              f"{r['seq']} | {pred} | {r['published']:,.0f} | {err} | {r['layout'] or r['reason']} |")
    for moe in (False, True):
        errs = [abs(float(r["error"])) for r in rows if r["error"] is not None  # type: ignore[arg-type]
                and (str(r["model"]).startswith(("DeepSeek", "Qwen3")) == moe)]
        if errs:
            rms = math.sqrt(sum(e * e for e in errs) / len(errs))
            print(f"\n{'MoE' if moe else 'dense'} rows: mean |error| {sum(errs) / len(errs):.1%}, RMS {rms:.1%} "
                  f"over {len(errs)}")


if __name__ == "__main__":
    main()
