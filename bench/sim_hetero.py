"""Heterogeneity-aware allocation (``gavel``) against the heterogeneity-agnostic las and fifo, in the twin.

Cluster as Gavel's simulations: 36 V100 + 36 P100 + 36 K80 (4 per node here). Job stream generated with Gavel's
method (``suanli.sim.hetero``: uniform job types with their measured V100/P100/K80 throughputs, Philly-like GPU
counts and durations, Poisson arrivals) at ``--rates`` jobs per hour, ``--seeds`` streams each. Prints avg JCT and
makespan per policy and the ratios to gavel (> 1: gavel is better).

    python bench/sim_hetero.py [--jobs 600] [--rates 1.5,2.5] [--seeds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=600)
    ap.add_argument("--rates", default="1.5,2.5", help="arrival rates, jobs per hour")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--policies", default="gavel,las,fifo")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from suanli.fleet.model import build_cluster, generate_nodes
    from suanli.sim.hetero import gavel_workload
    from suanli.sim.run import run_policies

    nodes = []
    for m in ("V100-16GB", "P100", "K80"):
        nodes += generate_nodes(36, m, 4)
    cluster = build_cluster("36xV100+36xP100+36xK80", nodes)
    pols = a.policies.split(",")
    out: dict[str, object] = {"cluster": cluster.name, "jobs": a.jobs, "seeds": a.seeds, "rates": []}
    t0 = time.perf_counter()
    for rate in (float(x) for x in a.rates.split(",")):
        acc: dict[str, dict[str, list[float]]] = {p: {"avg_jct_s": [], "makespan_s": [], "wall_s": []} for p in pols}
        for seed in range(a.seeds):
            w = gavel_workload(a.jobs, rate, seed=seed)
            for s, _ in run_policies(cluster, w, pols, seed=seed):
                for k in acc[s["policy"]]:
                    acc[s["policy"]][k].append(float(s[k]))
        row: dict[str, object] = {"jobs_per_hour": rate}
        for p in pols:
            row[p] = {k: float(np.mean(v)) for k, v in acc[p].items()}
        g = acc.get("gavel")
        if g:
            row["ratio_to_gavel"] = {p: {k: float(np.mean(np.array(acc[p][k]) / np.array(g[k])))
                                         for k in ("avg_jct_s", "makespan_s")} for p in pols if p != "gavel"}
        out["rates"].append(row)  # type: ignore[union-attr]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{cluster.name}, {a.jobs} Gavel-generated jobs x {a.seeds} seeds per rate ({out['wall_s']} s)")
    for row in out["rates"]:  # type: ignore[attr-defined]
        print(f"  {row['jobs_per_hour']:g} jobs/h:")
        for p in pols:
            r = row[p]
            extra = ""
            if p != "gavel" and "ratio_to_gavel" in row:
                q = row["ratio_to_gavel"][p]
                extra = f"   JCT x{q['avg_jct_s']:.2f}, makespan x{q['makespan_s']:.2f} of gavel's"
            print(f"    {p:6} avg JCT {r['avg_jct_s'] / 3600:7.1f} h  makespan {r['makespan_s'] / 3600:7.1f} h"
                  f"{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
