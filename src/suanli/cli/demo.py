"""``suanli demo``: a scheduling run on a generated cluster and job mix (no files needed)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from suanli.cli.common import console, err_console, print_json
from suanli.errors import SuanliError

if TYPE_CHECKING:
    from suanli.fleet.model import Cluster

# numpy, the scheduler and the catalog are imported inside the command, so that `suanli up` and the other
# commands do not pay for them at start-up.
DEFAULT_MODELS = "H100,910B,BR100,H20"
POLICY_HELP = "Scheduling policy: fifo, backfill, sjf, las, fair."


def build_cluster_arg(cluster: str | None, chips: int, models: str, per_node: int) -> Cluster:
    from suanli.catalog.accelerators import resolve_accelerator
    from suanli.fleet import generate_cluster, load_cluster

    if cluster:
        return load_cluster(cluster)
    if chips <= 0:
        raise SuanliError("--chips must be positive")
    if per_node <= 0:
        raise SuanliError("--per-node must be positive")
    names = [resolve_accelerator(m.strip()) for m in models.split(",") if m.strip()]
    if not names:
        raise SuanliError("--accelerator needs at least one accelerator model")
    return generate_cluster(chips, names, per_node)


def demo(
    chips: Annotated[int, typer.Option(help="Chips in the generated cluster.")] = 4096,
    models: Annotated[str, typer.Option("--accelerator", "--models", "--model", help="Accelerator models, "
                                        "comma-separated (one pool each); --models/--model: older names.")]
    = DEFAULT_MODELS,
    per_node: Annotated[int, typer.Option(help="Accelerators per node.")] = 8,
    cluster: Annotated[str | None, typer.Option(help="Cluster YAML or node-list CSV instead of a generated one.")]
    = None,
    jobs: Annotated[int, typer.Option(help="Jobs in the generated mix (Philly size mix).")] = 5000,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "backfill",
    rounds: Annotated[int, typer.Option(help="Scheduling rounds; between rounds the earliest-ending jobs finish.")]
    = 12,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same decisions).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Schedule a generated job mix on a cluster, round by round, and show what the scheduler decided."""
    import numpy as np
    from rich.progress import Progress
    from rich.table import Table

    from suanli.sched import QueueConfig, Scheduler
    from suanli.workload.mix import sample_jobs

    if jobs <= 0 or rounds <= 0:
        raise SuanliError("--jobs and --rounds must be positive")
    c = build_cluster_arg(cluster, chips, models, per_node)
    queues = [QueueConfig("prod", weight=2.0, quota={"*": c.n_devices // 3}), QueueConfig("research"),
              QueueConfig("dev", weight=0.5), QueueConfig("batch")]
    sched = Scheduler(c, policy, queues=queues, seed=seed)
    state = sched.new_state()
    for j in sample_jobs(jobs, seed=seed, models=list(c.models)):
        state.submit(j)
    rows = []
    now = 0.0
    done = 0
    with Progress(console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task(f"scheduling ({policy})", total=rounds)
        for rnd in range(rounds):
            t0 = time.perf_counter()
            d = sched.decide(state, now)
            ms = (time.perf_counter() - t0) * 1000
            state.apply(d, now)
            used = c.n_devices - state.alloc.free_devices() - int((~state.alloc.node_up).sum())
            rows.append({"round": rnd + 1, "time_s": round(now, 1), "started": len(d.starts),
                         "preempted": len(d.preemptions), "running": len(state.running), "pending": len(state.pending),
                         "finished": done, "utilization": round(used / max(c.n_devices, 1), 4),
                         "pass_ms": round(ms, 2)})
            # advance the virtual clock to the end of the earliest-ending fifth of the running jobs
            ends = sorted(state.running.ends)
            if not ends:
                bar.advance(task)
                if not len(state.pending):
                    break
                continue
            cut = ends[max(0, len(ends) // 5 - 1)][0]
            now = max(now, cut)
            for end, _, jid in ends:
                if end > now:
                    break
                state.stop(jid, now)
                done += 1
            bar.advance(task)
    summary = {"cluster": c.summary(), "policy": policy, "jobs": jobs, "seed": seed, "rounds": rows,
               "placements": sum(r["started"] for r in rows),
               "mean_pass_ms": round(float(np.mean([r["pass_ms"] for r in rows])), 2)}
    if json_out:
        print_json(summary)
        return
    s = c.summary()
    console.print(f"[bold]cluster[/] {s['name']}: {s['devices']:,} chips ({s['dies']:,} dies) on {s['nodes']:,} nodes, "
                  f"{s['domains']:,} interconnect domains, {s['racks']:,} racks - {s['models']}")
    t = Table(title=f"policy {policy}: {jobs:,} jobs (Philly size mix), seed {seed}")
    for col in ("round", "virtual time s", "started", "preempted", "running", "pending", "finished", "utilization",
                "pass ms"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["round"]), f"{r['time_s']:,.0f}", f"{r['started']:,}", str(r["preempted"]),
                  f"{r['running']:,}", f"{r['pending']:,}", f"{r['finished']:,}", f"{r['utilization']:.1%}",
                  f"{r['pass_ms']:.1f}")
    console.print(t)
    console.print(f"{summary['placements']:,} placements; mean scheduling pass {summary['mean_pass_ms']} ms. "
                  "Try --policy fifo|backfill|sjf|las|fair, --chips 100000, or --cluster FILE.")
