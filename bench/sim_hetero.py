"""Gavel's LP policy (``gavel``, both objectives) against the heterogeneity-agnostic fifo and las, in the twin.

Cluster as Gavel's simulations: 36 V100 + 36 P100 + 36 K80 (4 per node here). Job stream generated with Gavel's
method (``suanli.sim.hetero``: job types drawn uniformly with their measured V100/P100/K80 throughputs, Philly-like
GPU counts (1/2/4/8) and durations, Poisson arrivals) at ``--rates`` jobs per hour, ``--seeds`` streams each; every
policy runs the identical stream. Prints per rate the mean over seeds of avg JCT and makespan, the ratios
policy / gavel (per seed, then averaged; > 1: gavel better), and the wall and CPU time of each run.

    python bench/sim_hetero.py [--jobs 400] [--rates 1,2,3,4] [--seeds 3] [--round 360] [--json]

Rough offered load of the stream: ~1.9 GPUs x ~16.9 V100-hours (~32 V100 GPU-hours) per job against ~69
V100-equivalents (36 V100 + 36 P100 at 0.59 + 36 K80 at 0.31 of a V100, the mean over job types): saturation near
2.1 jobs/h when every job runs at the mean speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--rates", default="1,2,3,4", help="arrival rates, jobs per hour")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--baselines", default="fifo,las", help="heterogeneity-agnostic policies (also: gavel-events)")
    ap.add_argument("--objectives", default="max-min,finish-time", help="gavel objectives")
    ap.add_argument("--round", type=float, default=360.0, help="gavel round, seconds (Gavel: 6 min)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from suanli.fleet.model import build_cluster, generate_nodes
    from suanli.sim.engine import SimConfig, Simulation
    from suanli.sim.hetero import gavel_workload
    from suanli.sim.metrics import summarize

    nodes = []
    for m in ("V100-16GB", "P100", "K80"):
        nodes += generate_nodes(36, m, 4)
    cluster = build_cluster("36xV100+36xP100+36xK80", nodes)
    runs: list[tuple[str, str, dict[str, Any]]] = [(p, p, {}) for p in a.baselines.split(",") if p]
    runs += [(f"gavel:{o}", "gavel", {"gavel": {"objective": o, "round_s": a.round}})
             for o in a.objectives.split(",") if o]
    labels = [r[0] for r in runs]
    gavels = [lb for lb in labels if lb.startswith("gavel:")]
    out: dict[str, Any] = {"cluster": cluster.name, "jobs": a.jobs, "seeds": a.seeds, "round_s": a.round,
                           "load_average": os.getloadavg(), "rates": []}
    t0, c0 = time.perf_counter(), time.process_time()
    for rate in (float(x) for x in a.rates.split(",")):
        acc: dict[str, dict[str, list[float]]] = {lb: {k: [] for k in ("avg_jct_s", "makespan_s", "wall_s", "cpu_s",
                                                                      "utilization", "preemptions_per_job")}
                                                  for lb in labels}
        lp_runs: dict[str, list[int]] = {g: [] for g in gavels}
        for seed in range(a.seeds):
            w = gavel_workload(a.jobs, rate, seed=seed).fix_estimates()
            for label, pol, opts in runs:
                sim = Simulation(cluster, w, SimConfig(policy=pol, seed=seed, sched_kwargs={"policy_options": opts}))
                tw, tc = time.perf_counter(), time.process_time()
                r = sim.run()
                cpu = time.process_time() - tc
                s = summarize(r)
                s["wall_s"], s["cpu_s"] = time.perf_counter() - tw, cpu
                for k, v in acc[label].items():
                    v.append(float(s[k]))
                if label in lp_runs:
                    lp_runs[label].append(int(sim.sched.pol.lp_runs))
                if not a.json:
                    print(f"  rate {rate:g} seed {seed} {label:17} avg JCT {s['avg_jct_s'] / 3600:6.1f} h  makespan "
                          f"{s['makespan_s'] / 3600:6.1f} h  wall {s['wall_s']:5.1f} s  cpu {cpu:5.1f} s",
                          file=sys.stderr, flush=True)
        row: dict[str, Any] = {"jobs_per_hour": rate,
                               "policies": {lb: {k: float(np.mean(v)) for k, v in acc[lb].items()} for lb in labels},
                               "lp_runs": {g: float(np.mean(v)) for g, v in lp_runs.items()}, "ratio": {}}
        for g in gavels:
            row["ratio"][g] = {p: {k: float(np.mean(np.array(acc[p][k]) / np.array(acc[g][k])))
                                   for k in ("avg_jct_s", "makespan_s")} for p in labels if p not in gavels}
        out["rates"].append(row)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    out["load_average_end"] = os.getloadavg()
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{cluster.name}, {a.jobs} Gavel-generated jobs x {a.seeds} seeds per rate, rounds {a.round:g} s "
          f"({out['wall_s']} s wall, {out['cpu_s']} s CPU, load average {out['load_average'][0]:.1f} -> "
          f"{out['load_average_end'][0]:.1f})")
    base = [lb for lb in labels if lb not in gavels]
    for row in out["rates"]:
        print(f"  {row['jobs_per_hour']:g} jobs/h:")
        for lb in labels:
            r = row["policies"][lb]
            extra = f"  LP runs {row['lp_runs'][lb]:.0f}" if lb in gavels else ""
            print(f"    {lb:17} avg JCT {r['avg_jct_s'] / 3600:6.1f} h  makespan {r['makespan_s'] / 3600:6.1f} h  "
                  f"util {r['utilization']:.2f}  preempt/job {r['preemptions_per_job']:5.1f}  "
                  f"wall {r['wall_s']:5.1f} s  cpu {r['cpu_s']:5.1f} s{extra}")
        for g in gavels:
            q = row["ratio"][g]
            print(f"    x {g}: " + ", ".join(f"{p} JCT {q[p]['avg_jct_s']:.2f} makespan {q[p]['makespan_s']:.2f}"
                                           for p in base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
