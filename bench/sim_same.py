"""Do two versions of the simulator give the same results? Runs fixed Philly setups for every policy and prints
each run's summary (every JSON figure of ``suanli sim --json`` but the wall time) plus a digest of the per-job
outcomes (first start, finish, time pending, preemptions, kills); ``--against REV`` runs the same in a copy of git
revision ``REV``'s sources and compares, figure by figure, with the CPU time of each side.

Setups (../shared/traces/philly/philly.csv; skips if missing):

- ``whole``: the whole trace on 2,816 GPUs (352 x 8), the pinned ``suanli sim`` run (nothing waits);
- ``contended``: ``--jobs`` jobs from job 40,000 on 256 GPUs (offered load ~3), every policy;
- ``failures``: the same slice with failures (10x the Llama 3 rate) and 1 h checkpoints;
- ``partitions``: ``--jobs`` jobs from job 40,000 with their virtual clusters as partitions on 704 V100s split
  by demand (``--partition-by vc``);
- ``batched``: ``--jobs`` jobs from job 20,000 with arrivals rounded down to the hour (many arrive together) and
  every third job at priority 1, on 256 GPUs (the engine's handling of jobs that arrive together).

    python bench/sim_same.py --against a087e6b [--policies fifo,backfill,sjf,las,fair] [--jobs 3000]
    python bench/sim_same.py --json          # this checkout's figures only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHILLY = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"
POLICIES = "fifo,backfill,sjf,las,fair"
# figures that measure the run, not its outcome
NOT_RESULTS = ("wall_s",)


def _digest(r: Any) -> str:
    h = hashlib.sha256()
    for a in (r.state, r.first_start, r.finish, r.pending_s, r.preemptions, r.failures, r.run_ds):
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run_here(policies: list[str], jobs: int, setups: list[str]) -> dict[str, Any]:
    from suanli.sim.engine import FailureConfig
    from suanli.sim.run import make_cluster, make_workload, partitioned_cluster, run_policies, split_by_demand

    out: dict[str, Any] = {}
    cpu: dict[str, float] = {}

    def go(name: str, cl: Any, w: Any, pols: list[str], **kw: Any) -> None:
        for p in pols:
            t = time.process_time()
            (s, r), = run_policies(cl, w, [p], **kw)
            cpu[f"{name}/{p}"] = time.process_time() - t
            for k in NOT_RESULTS:
                s.pop(k, None)
            s.pop("vs_fifo", None)
            s["per_job_digest"] = _digest(r)
            out[f"{name}/{p}"] = s

    if "whole" in setups:
        cl = make_cluster(None, 2816, "H100", 8)
        go("whole", cl, make_workload(PHILLY, cl), ["fifo"])
    small = make_cluster(None, 256, "H100", 8)
    w = make_workload(PHILLY, small)
    sl = w.take(slice(40_000, 40_000 + jobs))
    if "contended" in setups:
        go("contended", small, sl, policies)
    if "failures" in setups:
        fc = FailureConfig(enabled=True, rate_per_device_hour=10 * FailureConfig().rate_per_device_hour,
                           checkpoint_s=3600.0, seed=1)
        go("failures", small, sl, policies, failures=fc)
    if "batched" in setups:
        import numpy as np

        wb = w.take(slice(20_000, 20_000 + jobs))
        wb.submit = np.floor(wb.submit / 3600.0) * 3600.0
        wb.priority = (np.arange(len(wb)) % 3 == 0).astype(wb.priority.dtype)
        go("batched", small, wb, policies)
    if "partitions" in setups:
        wp = make_workload(PHILLY, small, partition_by="vc")
        wp = wp.take(slice(40_000, 40_000 + jobs))
        cl = partitioned_cluster(split_by_demand(wp, 88, 8), "V100", 8)
        go("partitions", cl, wp, policies)
    return {"results": out, "cpu_s": cpu}


def run_rev(rev: str, args: list[str]) -> dict[str, Any]:
    """This script's --json run on the sources of git revision ``rev`` (extracted to a temporary directory)."""
    with tempfile.TemporaryDirectory() as d:
        arch = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", d], input=arch.stdout, check=True)
        env = dict(os.environ, PYTHONPATH=str(Path(d) / "src"))
        cmd = [sys.executable, __file__, "--json", *args]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def compare(a: dict[str, Any], b: dict[str, Any], path: str = "") -> list[str]:
    """Differences between two summaries (exact: the same decisions give the same floats)."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        p = f"{path}.{k}" if path else k
        if k not in a or k not in b:
            diffs.append(f"{p}: only in {'after' if k not in a else 'before'}")
        elif isinstance(a[k], dict) and isinstance(b[k], dict):
            diffs += compare(a[k], b[k], p)
        elif a[k] != b[k] and not (a[k] != a[k] and b[k] != b[k]):  # NaN == NaN here
            diffs.append(f"{p}: {a[k]!r} -> {b[k]!r}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", help="git revision to compare with (its src/ in a temporary directory)")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--jobs", type=int, default=3000, help="jobs of the contended and partitioned slices")
    ap.add_argument("--setups", default="whole,contended,failures,partitions,batched")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not PHILLY.is_file():
        print(f"skip: Philly trace not found at {PHILLY}", file=sys.stderr)
        return 0
    args = ["--policies", a.policies, "--jobs", str(a.jobs), "--setups", a.setups]
    if a.against is None:
        here = run_here(a.policies.split(","), a.jobs, a.setups.split(","))
        print(json.dumps(here, indent=1 if a.json else 2))
        return 0
    before = run_rev(a.against, args)
    after = run_here(a.policies.split(","), a.jobs, a.setups.split(","))
    bad = 0
    for k in sorted(set(before["results"]) | set(after["results"])):
        diffs = compare(before["results"].get(k, {}), after["results"].get(k, {}))
        cb, ca = before["cpu_s"].get(k, float("nan")), after["cpu_s"].get(k, float("nan"))
        print(f"{k:24s} CPU {cb:7.2f} s -> {ca:7.2f} s  {'same' if not diffs else f'{len(diffs)} DIFFERENCES'}")
        for d in diffs[:12]:
            print(f"    {d}")
        bad += bool(diffs)
    print(f"{bad} run(s) differ" if bad else "all runs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
