"""Twin versus live: the same trace, cluster and policy through `suanli sim`'s engine and through the live control
plane on virtual nodes (`suanli up --virtual` in a subprocess, `suanli replay` through the API), side by side.

Prints avg JCT, avg queueing, makespan and utilization of both and their differences, then the per-job
differences of queueing delay (live start - twin start, both from the job's own submission), against the live
side's clock granularity: one reconcile tick (0.1 s of wall = 0.1 x speed virtual seconds) plus the submission's
own latency. Jobs whose start differs by more than that are listed (the first few) with their twin and live times.

    .venv/bin/python bench/twin_vs_live.py [--trace PATH] [--jobs 300] [--cluster 8x8xBR100] [--speed 100] [--json]

Both sides get identical jobs: the trace's first --jobs rows, durations capped (--cap-duration), arrivals rescaled
to --load, runtime estimates = durations (the oracle both sides use), accelerator-model constraints dropped (the
replayed cluster has one model), no failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_scale import DEFAULT_TRACE, Server
from suanli.cli.replay import job_rows, run_replay, summarize, trace_specs
from suanli.control.executors.virtual import virtual_cluster
from suanli.sim.engine import SUCCEEDED, SimConfig, Simulation
from suanli.sim.metrics import summarize as sim_summarize
from suanli.sim.run import make_workload
from suanli.sim.traces import read_trace

TICK_S = 0.1  # the controller's default reconcile period under `suanli up`


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--cluster", default="8x8xBR100")
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--cap-duration", type=float, default=21_600.0)
    ap.add_argument("--speed", type=float, default=None, help="default: arrivals span about two wall minutes")
    ap.add_argument("--policy", default="fifo")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    cl = virtual_cluster(a.cluster)
    if Path(a.trace).exists():
        w = read_trace(a.trace, limit=a.jobs)
        if a.cap_duration:
            w.duration = np.minimum(w.duration, a.cap_duration)
        w = w.scaled_to_load(a.load, cl.n_devices).fix_estimates(0.0, 0)
        name = a.trace
    else:
        w, name = make_workload(None, cl, jobs=a.jobs, load=a.load, seed=0), "synthetic"
    w.models[:] = -1  # any model: as the replay drops the trace's model names
    w.tenant[:] = 0
    items = trace_specs(w)
    if a.speed is None:
        a.speed = max(1.0, round(items[-1][0] / 120.0))

    twin = Simulation(cl, w, SimConfig(policy=a.policy)).run()
    ts = sim_summarize(twin)

    tmp = Path(tempfile.mkdtemp(prefix="suanli-tvl-"))
    a.faults, a.db = None, None
    srv = Server(tmp / "data", a)
    srv.start()
    try:
        tok = (tmp / "data" / "admin.token").read_text().strip()
        r = asyncio.run(run_replay(srv.url, tok, items, timeout_s=3600, concurrency=8, speed=a.speed))
    finally:
        srv.stop()
    rows = job_rows(r, items)
    ls = summarize(r, rows)
    ends = [x["end_wall"] for x in rows if "end_wall" in x]
    subs = [x["submit_wall"] for x in rows if "submit_wall" in x]
    busy = sum(x.get("device_s", 0.0) for x in rows)
    live_util = busy / (cl.n_devices * ls["makespan_s"]) if ls["makespan_s"] > 0 else 0.0

    # per job: queueing delay live vs twin (each from its own submission)
    gran = TICK_S * a.speed
    subs_lat = sorted(r.api_lat_s.get("submit", [0.0]))
    sub_p99 = subs_lat[int(0.99 * (len(subs_lat) - 1))] * a.speed
    diffs, worst = [], []
    done = twin.state == SUCCEEDED
    for i, x in enumerate(rows):
        if "queue_s" not in x or not done[i]:
            continue
        tq = float(twin.first_start[i] - w.submit[i])
        d = x["queue_s"] - tq
        diffs.append(d)
        worst.append((abs(d), i, tq, x["queue_s"]))
    diffs_a = np.abs(np.array(diffs)) if diffs else np.zeros(1)
    bound = gran + sub_p99
    within = float((diffs_a <= bound).mean())
    worst.sort(reverse=True)

    def pair(k: str, tv: float, lv: float) -> dict[str, Any]:
        return {"twin": round(tv, 2), "live": round(lv, 2), "diff": round(lv - tv, 2),
                "diff_pct": round(100 * (lv - tv) / tv, 2) if tv else None}

    out = {
        "trace": name, "jobs": len(items), "cluster": a.cluster, "devices": cl.n_devices, "policy": a.policy,
        "speed": a.speed, "granularity_s": gran, "submit_latency_p99_virtual_s": round(sub_p99, 2),
        "twin_completed": ts["completed"], "live": {k: ls[k] for k in ("accepted", "finished", "failed", "lost")},
        "avg_jct_s": pair("avg_jct_s", ts["avg_jct_s"], ls["avg_jct_s"]),
        "avg_queue_s": pair("avg_queue_s", ts["avg_queue_s"], ls["avg_queue_s"]),
        "makespan_s": pair("makespan_s", ts["makespan_s"], ls["makespan_s"]),
        "utilization": pair("utilization", ts["utilization"], live_util),
        "start_diff_s": {"p50": round(float(np.percentile(diffs_a, 50)), 2),
                         "p99": round(float(np.percentile(diffs_a, 99)), 2), "max": round(float(diffs_a.max()), 2),
                         "within_granularity": round(within, 4), "bound_s": round(bound, 2)},
        "worst": [{"job": i, "twin_queue_s": round(tq, 1), "live_queue_s": round(lq, 1)} for _, i, tq, lq in worst[:5]],
        "live_wall_s": round(r.wall_s, 1), "live_span_wall_s": round((max(ends) - min(subs)), 1) if ends else None,
    }
    if a.json:
        print(json.dumps(out))
        return 0
    print(f"twin vs live: {name}, {len(items)} jobs, {a.cluster} ({cl.n_devices} devices), {a.policy}, "
          f"live at x{a.speed:g} (granularity {gran:g} s virtual + submit p99 {sub_p99:.1f} s)")
    print(f"  {'':14s} {'twin':>12s} {'live':>12s} {'diff':>10s} {'diff %':>8s}")
    for k in ("avg_jct_s", "avg_queue_s", "makespan_s", "utilization"):
        p = out[k]
        print(f"  {k:14s} {p['twin']:12,.2f} {p['live']:12,.2f} {p['diff']:10,.2f} {p['diff_pct'] or 0:8.2f}")
    sd = out["start_diff_s"]
    print(f"  per-job |live - twin| queueing: p50 {sd['p50']} s, p99 {sd['p99']} s, max {sd['max']} s; "
          f"{100 * within:.1f}% within the granularity bound {bound:.1f} s")
    print(f"  completed: twin {ts['completed']}, live {ls['finished']} (lost {ls['lost']})")
    for x in out["worst"]:
        print(f"    job {x['job']}: twin queued {x['twin_queue_s']} s, live {x['live_queue_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
