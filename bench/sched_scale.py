"""Scheduler speed at 100,000 chips: placements per second and scheduling-pass latency.

Cluster: 12,500 nodes x 8 chips, 4 accelerator models (H100, H200, 910B, BR100), 2 nodes per interconnect domain,
8 nodes per rack. Workload: 50,000 pending jobs whose sizes follow the Philly trace's job-size mix (read from
../shared/traces/philly/philly.csv when present, else the embedded copy of that mix); each accepts one or two
models. Before them, ``--preload`` (default 60%) of the chips are taken by running jobs of the same mix, so the
pending set exceeds what is free and the scheduler works under contention. Protocol: pass, apply, then let the
earliest-ending 2% of running jobs finish (virtual clock), repeat until
every job has started or the pass budget is spent. ``placements_per_s`` = jobs started / time inside ``decide``.

    python bench/sched_scale.py [--policies fifo,backfill,fair] [--chips 100000] [--jobs 50000] [--json]

Each policy runs in its own process so that ``peak_rss_mb`` is its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
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
    apply_s = 0.0
    placed = 0
    now = 1.0
    for _ in range(max_passes):
        if not len(state.pending):
            break
        t = time.perf_counter()
        d = sched.decide(state, now)
        pass_s.append(time.perf_counter() - t)
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
        "pass_ms_p50": round(float(np.percentile(arr, 50)), 3),
        "pass_ms_p99": round(float(np.percentile(arr, 99)), 3),
        "first_pass_ms": round(float(arr[0]), 1),
        "apply_s": round(apply_s, 2),
        "setup_s": round(setup_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="fifo,backfill,fair")
    ap.add_argument("--chips", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--max-passes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preload", type=float, default=0.6, help="fraction of chips busy before the pending jobs")
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by policy")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.chips, a.jobs, a.max_passes, a.seed, a.preload)))
        return
    results: dict[str, dict[str, object]] = {}
    for pol in a.policies.split(","):
        cmd = [sys.executable, __file__, "--one", pol, "--chips", str(a.chips), "--jobs", str(a.jobs),
               "--max-passes", str(a.max_passes), "--seed", str(a.seed), "--preload", str(a.preload)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[pol] = json.loads(out)
        if not a.json:
            r = results[pol]
            print(f"{pol:9s} {r['placements']:>6} placements in {r['passes']} passes: "
                  f"{r['placements_per_s']:>9,.0f} placements/s  pass p50 {r['pass_ms_p50']:.2f} ms  "
                  f"p99 {r['pass_ms_p99']:.1f} ms  first pass {r['first_pass_ms']:.0f} ms  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"cluster: {a.chips:,} chips; {a.jobs:,} pending jobs (size mix: "
              f"{next(iter(results.values()))['size_mix_source']}); target >= 5,000 placements/s")


if __name__ == "__main__":
    main()
