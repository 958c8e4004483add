"""Reports of simulation runs: ``report.json``, ``report.md`` and PNG plots (utilization over time, JCT CDF,
queue length)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from suanli.sim.engine import SUCCEEDED, SimResult

ROWS = (
    ("jobs", "jobs", "{:,}"), ("completed", "completed", "{:,}"), ("rejected (never fit)", "rejected", "{:,}"),
    ("avg JCT", "avg_jct_s", "dur"), ("p50 JCT", "p50_jct_s", "dur"), ("p95 JCT", "p95_jct_s", "dur"),
    ("p99 JCT", "p99_jct_s", "dur"), ("avg wait to first start", "avg_queue_s", "dur"),
    ("avg pending (all waits)", "avg_pending_s", "dur"), ("p99 pending", "p99_pending_s", "dur"),
    ("bounded slowdown", "avg_bounded_slowdown", "{:.2f}"), ("worst 1% slowdown", "worst_1pct_slowdown", "{:.1f}"),
    ("makespan", "makespan_s", "dur"), ("utilization", "utilization", "pct"),
    ("alloc ratio (contended)", "alloc_ratio", "pct"), ("fragmentation", "fragmentation", "pct"),
    ("preemptions", "preemptions", "{:,}"), ("preemptions / job", "preemptions_per_job", "{:.2f}"),
    ("most preemptions of a job", "max_preemptions_per_job", "{:,}"),
    ("failures", "failures", "{:,}"), ("jobs killed by failures", "jobs_killed", "{:,}"),
    ("lost chip-hours", "lost_chip_hours", "{:,.1f}"), ("goodput", "goodput", "pct"),
    ("fairness (Jain)", "fairness", "{:.3f}"), ("wall", "wall_s", "{:.2f} s"),
)


def notes(s: dict[str, Any]) -> list[str]:
    """Lines a reader needs to read the figures right: rejected jobs, light-tailed work."""
    out = []
    if s.get("rejected"):
        out.append(f"{s['rejected']:,} jobs can never fit this cluster and were rejected on arrival; load, makespan "
                   f"and utilization are over the {s['jobs'] - s['rejected']:,} accepted jobs (offered load with "
                   f"them: {s['load_with_rejected']:.2f})")
    if s.get("light_tailed"):
        out.append(f"light-tailed work (job-size CV {s['work_cv']:.2f} < 1): LAS only interleaves jobs of similar "
                   "size here and is expected to do worse than FIFO on average JCT; it wins on heavy-tailed work")
    return out


def fmt_duration(s: float) -> str:
    if s != s:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def fmt(v: Any, how: str) -> str:
    if v is None:
        return "-"
    if how == "dur":
        return fmt_duration(float(v))
    if how == "pct":
        return f"{100 * float(v):.1f}%"
    return how.format(v)


def _json_safe(s: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(s, default=float))


def write_report(out: str | Path, summaries: Sequence[dict[str, Any]], results: Sequence[SimResult],
                 context: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and the plots into ``out``; returns the files written."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    p = d / "report.json"
    p.write_text(json.dumps({"context": context, "runs": [_json_safe(s) for s in summaries]}, indent=2,
                            default=str) + "\n")
    files.append(p)
    files += plot(d, results)
    md = [f"# Simulation report: {context.get('workload', '')}", ""]
    md.append(f"- cluster: {context.get('cluster', '')}")
    md.append(f"- offered load: {summaries[0]['load']:.2f} (work / (devices x arrival span), accepted jobs)"
              if summaries else "")
    if summaries:
        md.append(f"- job-size CV (work in device-seconds): {summaries[0]['work_cv']:.2f}")
        md += [f"- note: {n}" for n in notes(summaries[0])]
    for k in ("jobs", "seed", "failures", "skipped_rows"):
        if k in context:
            md.append(f"- {k}: {context[k]}")
    md += ["", "| metric | " + " | ".join(s["policy"] for s in summaries) + " |",
           "|---|" + "---|" * len(summaries)]
    for label, key, how in ROWS:
        md.append(f"| {label} | " + " | ".join(fmt(s.get(key), how) for s in summaries) + " |")
    if any("vs_fifo" in s for s in summaries):
        md.append("| avg JCT / fifo | " + " | ".join(
            f"{s['vs_fifo']['avg_jct_s']:.2f}" if s.get("vs_fifo", {}).get("avg_jct_s") else "-"
            for s in summaries) + " |")
    codes = sorted({k for s in summaries for k in s.get("wait_by_reason_h", {})})
    if codes:
        md += ["", "Waiting job-hours by reason (share of all waiting time; see docs/dashboard.md):", "",
               "| reason | " + " | ".join(s["policy"] for s in summaries) + " |", "|---|" + "---|" * len(summaries)]
        for k in codes:
            cells = []
            for s in summaries:
                w = s.get("wait_by_reason_h", {})
                tot = sum(w.values())
                v = w.get(k, 0.0)
                cells.append((f"{v:,.2f}" if v < 10 else f"{v:,.0f}") + f" ({v / tot:.0%})" if tot > 0 else "-")
            md.append(f"| {k} | " + " | ".join(cells) + " |")
    md += ["", "![utilization](utilization.png)", "", "![JCT CDF](jct_cdf.png)", "", "![queue](queue.png)", ""]
    p = d / "report.md"
    p.write_text("\n".join(md))
    files.append(p)
    return files


def plot(d: Path, results: Sequence[SimResult]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        t = (r.timeline_t - r.timeline_t[0]) / 3600.0 if len(r.timeline_t) else r.timeline_t
        ax.step(t, r.timeline_busy / max(r.capacity, 1), where="post", label=r.policy, lw=0.8)
    ax.set_xlabel("hours")
    ax.set_ylabel("allocated / devices")
    ax.set_ylim(0, 1.05)
    ax.set_title("Utilization over time")
    ax.legend()
    fig.tight_layout()
    out.append(d / "utilization.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        done = r.state == SUCCEEDED
        jct = np.sort(r.finish[done] - r.workload.submit[done])
        if len(jct):
            ax.plot(np.maximum(jct, 1.0), np.arange(1, len(jct) + 1) / len(jct), label=r.policy, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("JCT (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT CDF")
    ax.legend()
    fig.tight_layout()
    out.append(d / "jct_cdf.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        t = (r.timeline_t - r.timeline_t[0]) / 3600.0 if len(r.timeline_t) else r.timeline_t
        ax.step(t, r.timeline_pending, where="post", label=r.policy, lw=0.8)
    ax.set_xlabel("hours")
    ax.set_ylabel("pending jobs")
    ax.set_title("Queue length")
    ax.legend()
    fig.tight_layout()
    out.append(d / "queue.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    return out
