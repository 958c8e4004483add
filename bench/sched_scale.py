"""Scheduler speed at 100,000 chips: placements per second and scheduling-pass latency.

Cluster: 12,500 nodes x 8 chips, 4 accelerator models (H100, H200, 910B, BR100), 2 nodes per interconnect domain,
8 nodes per rack. Workload: 50,000 pending jobs whose sizes follow the Philly trace's job-size mix (read from
../shared/traces/philly/philly.csv when present, else the embedded copy of that mix); each accepts one or two
models. Before them, ``--preload`` (default 60%) of the chips are taken by running jobs of the same mix, so the
pending set exceeds what is free and the scheduler works under contention. Protocol: pass, apply, then let the
earliest-ending 2% of running jobs finish (virtual clock), repeat until
every job has started or the pass budget is spent. ``placements_per_s`` = jobs started / time inside ``decide``.

    python bench/sched_scale.py [--policies fifo,backfill,fair] [--chips 100000] [--jobs 50000] [--json]
    python bench/sched_scale.py --against a087e6b --reps 3     # this checkout against a git revision

Each run is its own process so that ``peak_rss_mb`` is its own. Times are CPU seconds of the process
(``time.process_time``) beside wall seconds: on a shared machine the wall clock swings with other work (2x was
seen) while CPU time moves much less. ``--reps`` repeats every run, interleaved (rep 1 of every side and policy,
then rep 2, sides in alternating order) and reports medians; ``--against REV`` runs the same protocol on the
sources of git revision ``REV`` (extracted to a temporary directory) in the same session and prints the ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHILLY = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "philly" / "philly.csv"


def size_mix() -> tuple[tuple[tuple[int, int], ...], str]:
    from suanli.workload.mix import PHILLY_SIZE_MIX, size_mix_from_counts

    if PHILLY.is_file():
        with PHILLY.open() as fh:
            counts = [int(r["num_gpus"]) for r in csv.DictReader(fh)]
        return size_mix_from_counts(counts), str(PHILLY)
    return PHILLY_SIZE_MIX, "embedded Philly size mix"


def run_one(policy: str, chips: int, n_jobs: int, max_passes: int, seed: int, preload: float) -> dict[str, object]:
    from suanli.fleet import generate_cluster
    from suanli.sched import QueueConfig, Scheduler
    from suanli.workload.mix import sample_jobs

    models = ["H100", "H200", "910B", "BR100"]
    t0 = time.perf_counter()
    cluster = generate_cluster(chips, models, 8, nodes_per_domain=2, nodes_per_rack=8)
    queues = [QueueConfig("prod", 2.0, {"*": chips // 4}), QueueConfig("research", 1.0, {"*": chips // 4}),
              QueueConfig("dev", 0.5), QueueConfig("batch", 1.0)]
    sched = Scheduler(cluster, policy, queues=queues, seed=seed)
    state = sched.new_state()
    sizes, src = size_mix()
    # background load: running jobs that occupy `preload` of the chips
    bg = sample_jobs(int(chips * preload / 1.5), seed=seed + 1, sizes=sizes, models=models, start_id=10**9)
    for j in bg:
        state.submit(j)
    state.apply(sched.decide(state, 0.0), 0.0)
    for j in list(state.pending.jobs):
        state.cancel_pending(j)
    busy = 1 - state.alloc.free_devices() / chips
    for j in sample_jobs(n_jobs, seed=seed, sizes=sizes, models=models):
        state.submit(j)
    setup_s = time.perf_counter() - t0
    pass_s: list[float] = []
    pass_cpu: list[float] = []
    apply_s = 0.0
    placed = 0
    now = 1.0
    for _ in range(max_passes):
        if not len(state.pending):
            break
        c = time.process_time()
        t = time.perf_counter()
        d = sched.decide(state, now)
        pass_s.append(time.perf_counter() - t)
        pass_cpu.append(time.process_time() - c)
        t = time.perf_counter()
        state.apply(d, now)
        placed += len(d.starts)
        ends = state.running.ends
        k = max(1, len(ends) // 50)
        if ends:
            now = max(now, ends[min(k, len(ends)) - 1][0])
            for _end, _, jid in list(ends[:k]):
                state.stop(jid, now)
        apply_s += time.perf_counter() - t
    arr = np.array(pass_s) * 1000
    cpu = np.array(pass_cpu) * 1000
    return {
        "policy": policy,
        "chips": cluster.n_devices,
        "nodes": cluster.n_nodes,
        "jobs": n_jobs,
        "size_mix_source": src,
        "preloaded_busy": round(busy, 3),
        "passes": len(pass_s),
        "placements": placed,
        "placements_per_s": round(placed / max(sum(pass_s), 1e-9), 1),
        "placements_per_cpu_s": round(placed / max(sum(pass_cpu), 1e-9), 1),
        "decide_cpu_s": round(sum(pass_cpu), 3),
        "pass_ms_p50": round(float(np.percentile(arr, 50)), 3),
        "pass_ms_p99": round(float(np.percentile(arr, 99)), 3),
        "first_pass_ms": round(float(arr[0]), 1),
        "first_pass_cpu_ms": round(float(cpu[0]), 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "apply_s": round(apply_s, 2),
        "setup_s": round(setup_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _sources(rev: str, into: str) -> str:
    """The ``src`` directory of git revision ``rev``, extracted under ``into``."""
    root = Path(__file__).resolve().parents[1]
    arch = subprocess.run(["git", "-C", str(root), "archive", rev, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", into], input=arch.stdout, check=True)
    return str(Path(into) / "src")


def _child(pol: str, a: argparse.Namespace, src: str | None) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--one", pol, "--chips", str(a.chips), "--jobs", str(a.jobs),
           "--max-passes", str(a.max_passes), "--seed", str(a.seed), "--preload", str(a.preload)]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def _median(runs: list[dict[str, object]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="fifo,backfill,fair")
    ap.add_argument("--chips", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--max-passes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preload", type=float, default=0.6, help="fraction of chips busy before the pending jobs")
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by policy")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of every run (interleaved; medians)")
    ap.add_argument("--against", help="git revision to run the same protocol on, in the same session")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.chips, a.jobs, a.max_passes, a.seed, a.preload)))
        return
    policies = a.policies.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        sides: dict[str, str | None] = {"this": None}
        if a.against:
            sides = {a.against: _sources(a.against, tmp), "this": None}
        runs: dict[str, dict[str, list[dict[str, object]]]] = {s: {p: [] for p in policies} for s in sides}
        for rep in range(a.reps):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]  # alternate who goes first
            for side in order:
                for pol in policies:
                    r = _child(pol, a, sides[side])
                    runs[side][pol].append(r)
                    if not a.json:
                        print(f"rep {rep + 1} {side:>10} {pol:9s} {r['placements']:>6} placements in {r['passes']} "
                              f"passes: {r['placements_per_cpu_s']:>9,.0f}/CPU-s ({r['placements_per_s']:>9,.0f}/s "
                              f"wall)  first pass {r['first_pass_cpu_ms']:.0f} ms CPU ({r['first_pass_ms']:.0f} "
                              f"wall)  p50 {r['pass_ms_p50']:.1f} ms  RSS {r['peak_rss_mb']:.0f} MB  load "
                              f"{r['load_avg_1m']}", flush=True)
    summary = {side: {pol: {"placements_per_cpu_s": _median(rs, "placements_per_cpu_s"),
                            "placements_per_s": _median(rs, "placements_per_s"),
                            "first_pass_cpu_ms": _median(rs, "first_pass_cpu_ms"),
                            "pass_ms_p50": _median(rs, "pass_ms_p50"),
                            "peak_rss_mb": _median(rs, "peak_rss_mb"), "reps": len(rs),
                            "runs": rs if a.json else None}
                      for pol, rs in by_pol.items()}
               for side, by_pol in runs.items()}
    if a.json:
        print(json.dumps(summary if a.against else summary["this"], indent=2))
        return
    print(f"cluster: {a.chips:,} chips; {a.jobs:,} pending jobs (size mix: "
          f"{runs['this'][policies[0]][0]['size_mix_source']}); target >= 5,000 placements/s; medians of "
          f"{a.reps} rep(s), CPU time")
    for pol in policies:
        line = f"{pol:9s}"
        for side in sides:
            m = summary[side][pol]
            line += (f"  {side}: {m['placements_per_cpu_s']:>9,.0f} placements/CPU-s, first pass "
                     f"{m['first_pass_cpu_ms']:.0f} ms CPU")
        if a.against:
            b, t = summary[a.against][pol], summary["this"][pol]
            line += f"  this/{a.against}: {t['placements_per_cpu_s'] / b['placements_per_cpu_s']:.3f}"
        print(line)


if __name__ == "__main__":
    main()
