"""``suanli sim``: the digital twin - replay a trace (or the synthetic LLM-era mix) through the scheduler."""

from __future__ import annotations

import functools
import gc
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from suanli.cli.common import console, err_console, print_json

PROGRESS_MIN_JOBS = 20_000


def _lean(f: Callable[..., None]) -> Callable[..., None]:
    """Run the command without the cyclic garbage collector (it runs once and exits; imports and trace reading make
    many objects and no garbage cycles worth collecting: ~0.05 s) and without BLAS threads (numpy's OpenBLAS starts
    one per core on import, ~0.1 s of CPU; the simulator does no linear algebra). A caller's settings win: the
    variable is only set when unset, and the collector is turned back on afterwards if it was on."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> None:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        enabled = gc.isenabled()
        gc.disable()
        try:
            f(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return run


@_lean
def sim(
    trace: Annotated[Path | None, typer.Option("--trace", help="Trace file; omit for the synthetic LLM-era mix.")]
    = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, philly, itp, openb, kalos-converted, helios, acme, pai.")]
    = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="Fail on a malformed row (default: skip and count).")]
    = False,
    cluster: Annotated[Path | None, typer.Option("--cluster", help="Cluster YAML or node-list CSV.")] = None,
    chips: Annotated[int, typer.Option("--chips", help="Generated cluster: number of chips.")] = 1024,
    accelerator: Annotated[str, typer.Option("--accelerator", "--model", help="Generated cluster: accelerator "
                                             "model(s), comma-separated (--model: the older name).")] = "H100",
    per_node: Annotated[int, typer.Option("--per-node", help="Generated cluster: chips per node.")] = 8,
    policy: Annotated[str, typer.Option("--policy", help="fifo, backfill, sjf, las, fair, gavel (LP + rounds) or "
                                        "gavel-events.")] = "fifo",
    compare: Annotated[str | None, typer.Option("--compare", help="Comma-separated policies on the same stream.")]
    = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", help="Synthetic workload: number of jobs.")] = 10_000,
    load: Annotated[float | None, typer.Option("--load", help="Offered load: rescale trace arrivals to it "
                                                             "(synthetic default 0.9).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N jobs of the trace.")] = None,
    t_from: Annotated[str | None, typer.Option("--from", help="Only jobs submitted from this time: a date(-time), "
                                               "UTC unless it says, or seconds as the trace counts them.")] = None,
    t_to: Annotated[str | None, typer.Option("--to", help="... and before this time.")] = None,
    estimate_column: Annotated[str | None, typer.Option("--estimate-column", help="Runtime estimates (s) for "
                                                        "sjf/backfill from this trace column.")] = None,
    partition_by: Annotated[str | None, typer.Option("--partition-by", help="Trace column naming each job's "
                                                     "partition (vc: the virtual cluster).")] = None,
    partitions: Annotated[Path | None, typer.Option("--partitions", help="CSV partition,nodes: nodes per "
                                                    "partition (default: split --chips by each one's demand).")]
    = None,
    estimates: Annotated[Path | None, typer.Option("--estimates", help="Runtime estimates from a side CSV: "
                                                   "estimate plus job_id or row (0-based data row).")] = None,
    estimate_noise: Annotated[float, typer.Option("--estimate-noise", help="Lognormal sigma on runtime "
                                                                          "estimates (default: exact).")] = 0.0,
    failures: Annotated[bool, typer.Option("--failures", help="Inject device/node failures (Llama 3 rate).")]
    = False,
    failure_rate: Annotated[float | None, typer.Option("--failure-rate", help="Failures per device-hour.")] = None,
    checkpoint: Annotated[float, typer.Option("--checkpoint", help="Checkpoint interval, seconds.")] = 1800.0,
    las_promote: Annotated[float | None, typer.Option(
        "--las-promote", help="las starvation guard: a job waiting this many times its run since its last promotion "
                              "goes back to the top queue (0: off; default 32, sched.core.LAS_PROMOTE).")] = None,
    packer: Annotated[str, typer.Option("--packer", help="Fractional packer: best-fit, fgd, random.")] = "best-fit",
    gavel_objective: Annotated[str, typer.Option("--gavel-objective", help="gavel: max-min (heterogeneity-aware "
                                                 "max-min fairness) or finish-time (Themis' rho).")] = "max-min",
    gavel_round: Annotated[float, typer.Option("--gavel-round", help="gavel: round length, seconds.")] = 360.0,
    out: Annotated[Path | None, typer.Option("--out", help="Write report.json, report.md and PNG plots here.")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (one object; a list with --compare).")]
    = False,
    placement_replay: Annotated[bool, typer.Option("--placement-replay", help="FGD-style inflation replay of a "
                                                                             "pod list on a node list.")] = False,
    seeds: Annotated[int, typer.Option("--seeds", help="Placement replay: number of seeds.")] = 10,
    packers: Annotated[str, typer.Option("--packers", help="Placement replay: packers to compare.")]
    = "random,best-fit,fgd",
    inflation: Annotated[float, typer.Option("--inflation", help="Placement replay: arrived GPU / capacity.")]
    = 1.3,
) -> None:
    """Simulate the scheduler on a trace or the synthetic mix; compare policies; replay placements."""
    from suanli.sched.core import make_packer
    from suanli.sim.engine import FailureConfig
    from suanli.sim.run import (
        SimError,
        check_policies,
        make_cluster,
        make_workload,
        partitioned_cluster,
        read_partition_sizes,
        run_policies,
        split_by_demand,
    )

    if placement_replay:
        _replay(trace, cluster, seeds, packers, inflation, json_out)
        return
    policies = check_policies(compare.split(",") if compare else [policy])
    make_packer(packer)  # validate the name before the run
    if las_promote is not None and not (las_promote >= 0 and math.isfinite(las_promote)):
        raise SimError(f"--las-promote must be a non-negative number (0: off), not {las_promote:g}")
    if checkpoint <= 0:
        raise SimError(f"--checkpoint must be positive (got {checkpoint:g}); use a large value for 'never'")
    if partitions is not None and not partition_by:
        raise SimError("--partitions needs --partition-by COLUMN (which trace column names the partition)")
    if partition_by and trace is None:
        raise SimError("--partition-by needs --trace")
    if partitions is not None and cluster is not None:
        raise SimError("give --partitions FILE or --cluster FILE (whose pools name their partitions), not both")
    wkw: dict[str, Any] = dict(fmt=fmt, strict=strict, limit=limit, jobs=jobs, load=load, seed=seed,
                               estimate_noise=estimate_noise, window=(t_from, t_to), estimate_column=estimate_column,
                               estimates=estimates, partition_by=partition_by)
    if partitions is not None:
        cl = partitioned_cluster(read_partition_sizes(partitions), accelerator, per_node)
        w = make_workload(trace, cl, **wkw)
    elif partition_by and cluster is None:  # nodes split by each partition's demand in the trace
        w = make_workload(trace, make_cluster(None, chips, accelerator, per_node), **wkw)
        cl = partitioned_cluster(split_by_demand(w, max(1, chips // per_node), per_node), accelerator, per_node)
    else:
        cl = make_cluster(cluster, chips, accelerator, per_node)
        w = make_workload(trace, cl, **wkw)
    fc = FailureConfig(enabled=failures, checkpoint_s=checkpoint, seed=seed)
    if failure_rate is not None:
        if failure_rate < 0 or not math.isfinite(failure_rate):
            raise SimError("--failure-rate must be a non-negative number")
        fc.rate_per_device_hour = failure_rate
    for msg in w.messages[:5]:
        err_console.print(f"[yellow]warning:[/] {msg}", highlight=False)
    if w.skipped > 5:
        err_console.print(f"[yellow]warning:[/] {w.skipped:,} malformed rows skipped in all", highlight=False)

    skw: dict[str, Any] = {"packer": packer}
    if "gavel" in policies:
        from suanli.sched.gavel import OBJECTIVES

        if gavel_objective not in OBJECTIVES:
            raise SimError(f"--gavel-objective must be one of {', '.join(OBJECTIVES)}, not {gavel_objective!r}")
        if not (math.isfinite(gavel_round) and gavel_round > 0):
            raise SimError(f"--gavel-round must be a positive number of seconds, not {gavel_round:g}")
        skw["policy_options"] = {"gavel": {"objective": gavel_objective, "round_s": gavel_round}}
    if las_promote is not None:
        skw["las_promote"] = las_promote
    show = len(w) >= PROGRESS_MIN_JOBS and err_console.is_terminal  # a bar nobody sees costs a refresh thread
    if show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                        TimeElapsedColumn(), console=err_console, transient=True)
        tasks: dict[str, Any] = {}

        def cb(p: str, done: int, total: int) -> None:
            if p not in tasks:
                tasks[p] = prog.add_task(f"sim {p}", total=total)
            prog.update(tasks[p], completed=done)

        with prog:
            runs = run_policies(cl, w, policies, seed=seed, failures=fc, sched_kwargs=skw,
                                progress=cb, usage=out is not None)
    else:
        runs = run_policies(cl, w, policies, seed=seed, failures=fc, sched_kwargs=skw, usage=out is not None)
    summaries = [s for s, _ in runs]
    for s in summaries:
        if s["policy"] == "gavel":  # which LP the run used
            s["gavel_objective"], s["gavel_round_s"] = gavel_objective, gavel_round
    if out is not None:
        from suanli.sim.report import write_report

        ctx = {"workload": w.name, "cluster": f"{cl.name}: {cl.n_devices:,} devices, {cl.n_nodes:,} nodes",
               "jobs": len(w), "seed": seed, "failures": failures, "skipped_rows": w.skipped}
        write_report(out, summaries, [r for _, r in runs], ctx)
        # the accounting report of each run, with the columns of `suanli report` (usage-POLICY/usage.json ...)
        from suanli.accounting.pricing import Accounting
        from suanli.sim.usage import write_usage

        yaml_file = cluster is not None and cluster.suffix.lower() in (".yaml", ".yml")
        acct = Accounting.from_file(cluster) if yaml_file else Accounting()
        for _, r in runs:
            write_usage(out / f"usage-{r.policy}", r, acct)
    if json_out:
        print_json(summaries if compare else summaries[0])
        return
    _table(summaries, w.name, cl)
    if out is not None:
        console.print(f"report written to {out}/report.md", highlight=False)


def _table(summaries: list[dict[str, Any]], wname: str, cl: Any) -> None:
    from suanli.sim.report import ROWS, fmt, notes

    s0 = summaries[0]
    from rich.table import Table  # only for the table output (--json needs none)

    t = Table(title=f"{wname} on {cl.name} ({cl.n_devices:,} devices) - offered load {s0['load']:.2f}")
    t.add_column("metric")
    for s in summaries:
        t.add_column(s["policy"], justify="right")
    for label, key, how in ROWS:
        t.add_row(label, *[fmt(s.get(key), how) for s in summaries])
    if len(summaries) > 1 and "vs_fifo" in s0:
        t.add_row("avg JCT / fifo", *[f"{s['vs_fifo']['avg_jct_s']:.2f}" if s["vs_fifo"]["avg_jct_s"] else "-"
                                      for s in summaries])
    console.print(t)
    for n in notes(s0):
        console.print(f"[yellow]note:[/] {n}", highlight=False)


def _replay(trace: Path | None, cluster: Path | None, seeds: int, packers: str, inflation: float,
            json_out: bool) -> None:
    from suanli.sim.replay import placement_replay
    from suanli.sim.run import SimError

    if trace is None or cluster is None:
        raise SimError("--placement-replay needs --trace PODS.csv and --cluster NODES.csv")
    if seeds < 1:
        raise SimError("--seeds must be at least 1")
    res = placement_replay(trace, cluster, packers=[p.strip() for p in packers.split(",") if p.strip()],
                           seeds=seeds, inflation=inflation)
    if json_out:
        print_json(res)
        return
    from rich.table import Table

    t = Table(title=f"Placement replay: {trace.name} on {cluster.name}, {inflation:.0%} arrived, {seeds} seeds")
    t.add_column("packer")
    t.add_column("allocation ratio", justify="right")
    t.add_column("min", justify="right")
    t.add_column("max", justify="right")
    t.add_column("wall", justify="right")
    for r in res:
        t.add_row(r["policy"], f"{100 * r['alloc_ratio']:.2f}%", f"{100 * r['min']:.2f}%", f"{100 * r['max']:.2f}%",
                  f"{r['wall_s']:.1f} s")
    console.print(t)
