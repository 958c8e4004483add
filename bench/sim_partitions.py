"""Philly with its virtual clusters as partitions, in one run per policy (the setup of per-VC simulators).

The trace's virtual clusters (``cluster`` column) become partitions (``--partition-by vc``). The 11 VCs with more
than 100 jobs get nodes in proportion to their GPU-time in the trace (``--chips`` in all, 8 GPUs a node, at least
enough for each VC's largest job), written as a ``partition,nodes`` file; the 4 VCs of a handful of jobs have no
nodes, so their jobs are rejected (counted). Prints per policy: avg JCT and queueing (all jobs and per VC), wall
time of the simulation, and whether a busy VC ever delayed another (fifo: checked by replaying each VC alone).

    python bench/sim_partitions.py [--chips 2816] [--policies fifo,backfill,sjf,las] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHILLY = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "philly" / "philly.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=2816)
    ap.add_argument("--policies", default="fifo,backfill,sjf,las")
    ap.add_argument("--min-jobs", type=int, default=100, help="VCs with fewer jobs get no nodes")
    ap.add_argument("--check-isolation", action="store_true", help="fifo: replay each VC alone and compare")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not PHILLY.is_file():
        print(f"skip: Philly trace not found at {PHILLY}", file=sys.stderr)
        return 0
    from suanli.sim.run import make_workload, partitioned_cluster, run_policies, split_by_demand
    from suanli.sim.traces import read_trace

    w0 = read_trace(PHILLY, partition_by="vc")
    counts = np.bincount(w0.partition, minlength=len(w0.partitions))
    big = [i for i, k in enumerate(counts) if k > a.min_jobs]
    sub = w0.take(np.isin(w0.partition, big))
    sizes = split_by_demand(sub, a.chips // 8, 8)
    sizes = {k: v for k, v in sizes.items() if counts[w0.partitions.index(k)] > a.min_jobs}
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "partitions.csv"
        pf.write_text("partition,nodes\n" + "".join(f"{k},{v}\n" for k, v in sizes.items()))
        cl = partitioned_cluster(sizes, "V100", 8)
        t0 = time.perf_counter()
        w = make_workload(PHILLY, cl, partition_by="vc")
        read_s = time.perf_counter() - t0
    out: dict[str, object] = {"trace": str(PHILLY), "jobs": len(w), "vcs": len(sizes), "nodes": sizes,
                              "read_s": round(read_s, 2), "runs": []}
    results = []
    for pol in a.policies.split(","):
        load = os.getloadavg()[0]
        c0 = time.process_time()
        (s, r), = run_policies(cl, w, [pol])
        results.append((s, r, time.process_time() - c0, load))
    for s, r, cpu, load in results:
        row = {k: s[k] for k in ("policy", "completed", "rejected", "avg_jct_s", "avg_queue_s", "makespan_s",
                                 "utilization", "wall_s")}
        row["cpu_s"] = round(cpu, 2)  # CPU time of the run (wall time swings with a shared machine's load)
        row["load_1m"] = round(load, 2)  # when the run started
        row["partitions"] = {k: {x: v[x] for x in ("jobs", "devices", "avg_jct_s", "avg_queue_s", "utilization")}
                             for k, v in s["partitions"].items() if v["devices"]}
        if a.check_isolation and s["policy"] == "fifo":
            worst = 0.0
            for name, k in sizes.items():
                i = w.partitions.index(name)
                alone_w = w.take(w.partition == i)
                alone_c = partitioned_cluster({name: k}, "V100", 8)
                ra = run_policies(alone_c, alone_w, ["fifo"])[0][1]
                worst = max(worst, float(np.nanmax(np.abs(r.first_start[w.partition == i] - ra.first_start))))
            row["isolation_max_start_diff_s"] = worst
        out["runs"].append(row)  # type: ignore[union-attr]
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"Philly, {len(sizes)} VCs as partitions, {sum(sizes.values()) * 8:,} V100s; {len(w):,} jobs "
          f"(read {read_s:.2f} s)")
    print(f"{'policy':10} {'avg JCT h':>10} {'avg queue h':>12} {'rejected':>9} {'wall s':>7} {'CPU s':>7} {'load':>5}")
    for row in out["runs"]:  # type: ignore[attr-defined]
        print(f"{row['policy']:10} {row['avg_jct_s'] / 3600:10.2f} {row['avg_queue_s'] / 3600:12.2f} "
              f"{row['rejected']:9,} {row['wall_s']:7.1f} {row['cpu_s']:7.1f} {row['load_1m']:5.1f}")
        if "isolation_max_start_diff_s" in row:
            print(f"  fifo: largest start-time difference against each VC alone: "
                  f"{row['isolation_max_start_diff_s']:.3g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
