"""Simulator scale: a 1,000,000-job synthetic LLM-era run on 100,000 chips (bar: under 120 s wall).

Cluster: 12,500 nodes x 8 H100, 4 nodes per rack. Workload: the embedded synthetic mix (no files) at offered load
``--load`` (default 0.9), seed 0, policy fifo. Prints wall time, events/s and peak memory.

    python bench/sim_scale.py [--jobs 1000000] [--chips 100000] [--policy fifo] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

BAR_S = 120.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--chips", type=int, default=100_000)
    ap.add_argument("--policy", default="fifo")
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from suanli.sim import SimConfig, Simulation, summarize, synthetic
    from suanli.sim.run import make_cluster

    t0 = time.perf_counter()
    cluster = make_cluster(None, a.chips, "H100", 8)
    w = synthetic(a.jobs, a.chips, load=a.load, seed=a.seed).fix_estimates()
    setup = time.perf_counter() - t0
    r = Simulation(cluster, w, SimConfig(policy=a.policy, seed=a.seed)).run()
    s = summarize(r)
    s.pop("tenants")
    s["setup_s"] = round(setup, 2)
    s["events_per_s"] = round(s["events"] / s["wall_s"])
    s["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    s["bar_s"] = BAR_S if a.jobs >= 1_000_000 else None
    s["pass"] = s["bar_s"] is None or s["wall_s"] < BAR_S
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{a.jobs:,} synthetic jobs on {a.chips:,} chips, {a.policy}, offered load {s['load']:.2f}")
    print(f"  setup {setup:.1f} s, simulation {s['wall_s']:.1f} s wall ({s['events_per_s']:,} events/s, "
          f"{s['decide_calls']:,} decide calls), peak RSS {s['peak_rss_mb']:,} MB"
          + (f"; bar {BAR_S:.0f} s: {'pass' if s['pass'] else 'FAIL'}" if s["bar_s"] else ""))
    print(f"  completed {s['completed']:,}, avg JCT {s['avg_jct_s'] / 3600:.2f} h, p99 {s['p99_jct_s'] / 3600:.1f} h, "
          f"utilization {s['utilization']:.1%}, alloc ratio under contention {s['alloc_ratio']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
