"""What the ``suanli sim`` command and the benchmarks share: build the cluster and the workload, run policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import SuanliError
from suanli.fleet import load_cluster
from suanli.fleet.model import Cluster, build_cluster, generate_nodes
from suanli.sched import POLICIES
from suanli.sim.engine import FailureConfig, SimConfig, SimResult, Simulation
from suanli.sim.metrics import summarize
from suanli.sim.synthetic import synthetic
from suanli.sim.traces import parse_when, read_trace
from suanli.sim.workload import Workload


class SimError(SuanliError):
    """Bad simulator input (policy, sizes...)."""


def make_cluster(path: str | Path | None = None, chips: int = 1024, model: str = "H100", per_node: int = 8,
                 nodes_per_rack: int = 4) -> Cluster:
    """From a YAML cluster file / node-list CSV, or ``chips`` chips of ``model``, ``per_node`` per node."""
    if path is not None:
        return load_cluster(path)
    if chips <= 0 or per_node <= 0:
        raise SimError(f"--chips ({chips}) and --per-node ({per_node}) must be positive")
    models = [resolve_accelerator(m.strip()) for m in model.split(",") if m.strip()]
    if not models:
        raise SimError("--model: name at least one accelerator model")
    nodes = []
    share = chips // len(models)
    for i, m in enumerate(models):
        k = share + (chips - share * len(models) if i == len(models) - 1 else 0)
        if k > 0:
            nodes += generate_nodes(k, m, per_node, nodes_per_rack=nodes_per_rack)
    return build_cluster(f"{chips}x{'+'.join(models)}", nodes)


def read_partition_sizes(path: str | Path) -> dict[str, int]:
    """A ``partition,nodes`` CSV: nodes per partition."""
    import csv

    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise SimError(f"{p}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SimError(f"{p}: not a CSV file ({e})") from None
    if not {"partition", "nodes"} <= header:
        raise SimError(f"{p}:1: need the header partition,nodes")
    out: dict[str, int] = {}
    for i, r in enumerate(rows, start=2):
        name = (r.get("partition") or "").strip()
        try:
            k = int((r.get("nodes") or "").strip())
        except ValueError:
            raise SimError(f"{p}:{i}: nodes must be a whole number, got {r.get('nodes')!r}") from None
        if not name or k < 1:
            raise SimError(f"{p}:{i}: need a partition name and at least 1 node")
        if name in out:
            raise SimError(f"{p}:{i}: partition {name!r} listed twice")
        out[name] = k
    if not out:
        raise SimError(f"{p}: no partitions listed")
    return out


def split_by_demand(w: Workload, nodes: int, per_node: int) -> dict[str, int]:
    """Nodes per partition in proportion to each partition's device-seconds in the trace (largest remainders), at
    least enough for its largest job."""
    if not w.partitions:
        raise SimError("the trace names no partitions (use --partition-by COLUMN)")
    ds = np.bincount(w.partition[w.partition >= 0], weights=(w.duration * w.count)[w.partition >= 0],
                     minlength=len(w.partitions))
    big = np.zeros(len(w.partitions), dtype=np.int64)
    np.maximum.at(big, w.partition[w.partition >= 0], w.count[w.partition >= 0].astype(np.int64))
    need = np.maximum(1, -(-big // max(per_node, 1)))
    if need.sum() > nodes:
        raise SimError(f"{nodes} nodes cannot give each of the {len(w.partitions)} partitions room for its "
                       f"largest job ({int(need.sum())} nodes needed); raise --chips or give --partitions FILE")
    share = ds / ds.sum() * nodes if ds.sum() > 0 else np.full(len(ds), nodes / len(ds))
    k = np.floor(share).astype(np.int64)
    for i in np.argsort(-(share - k), kind="stable")[: nodes - int(k.sum())]:
        k[i] += 1
    k = np.maximum(k, need)
    while k.sum() > nodes:  # the minimums took nodes: give them back from the partitions above their minimum
        i = int(np.argmax(np.where(k > need, k - need, -1)))
        k[i] -= 1
    return {name: int(x) for name, x in zip(w.partitions, k.tolist(), strict=True)}


def partitioned_cluster(sizes: dict[str, int], model: str, per_node: int, nodes_per_rack: int = 4) -> Cluster:
    """One pool of ``model`` nodes per partition (``sizes``: nodes each)."""
    from suanli.fleet.model import NodeSpec

    key = resolve_accelerator(model.split(",")[0].strip())
    if "," in model:
        raise SimError("--partitions: name one accelerator model (all nodes alike)")
    nodes: list[NodeSpec] = []
    for name, k in sizes.items():
        for nd in generate_nodes(k * per_node, key, per_node, nodes_per_rack=nodes_per_rack, prefix=name):
            nodes.append(replace(nd, partitions=(name,)))
    return build_cluster(f"{sum(sizes.values()) * per_node}x{key} in {len(sizes)} partitions", nodes)


def make_workload(trace: str | Path | None, cluster: Cluster, *, fmt: str = "auto", strict: bool = False,
                  limit: int | None = None, jobs: int = 10_000, load: float | None = None, seed: int = 0,
                  estimate_noise: float = 0.0, window: tuple[str | None, str | None] = (None, None),
                  partition_by: str | None = None, estimate_column: str | None = None,
                  estimates: str | Path | None = None) -> Workload:
    """A trace (arrivals rescaled to ``load`` if given) or the synthetic mix at ``load`` (default 0.9).

    ``window``: ``--from``/``--to`` bounds (see :func:`suanli.sim.traces.parse_when`). Runtime estimates for
    backfill and SJF come from ``estimate_column`` or the ``estimates`` side file when given; jobs without one (and
    every job otherwise) get the real duration (x lognormal noise ``estimate_noise``) - an oracle, as in most
    published simulator comparisons.
    """
    cap = cluster.n_devices
    if trace is None:
        w = synthetic(jobs, cap, load=load if load is not None else 0.9, seed=seed,
                      node_size=max(1, cluster.max_devices_per_node))
    else:
        lo, hi = (parse_when(x) if x is not None else None for x in window)
        if lo is not None and hi is not None and hi <= lo:
            raise SimError(f"--to ({window[1]}) must be after --from ({window[0]})")
        w = read_trace(trace, fmt, strict=strict, limit=limit, start=lo, end=hi, partition_by=partition_by,
                       estimate_column=estimate_column, estimates=estimates)
        if w.untimed:
            raise SimError(f"{trace}: the trace has no arrival or run times (an openb multigpu pod list?); it can "
                           "only be replayed with --placement-replay")
        if not len(w):
            raise SimError(f"{trace}: no jobs left (check --from/--to and --limit)")
        if load is not None:
            w = w.scaled_to_load(load, cap)
    return w.fix_estimates(estimate_noise, seed)


def check_policies(policies: Sequence[str]) -> list[str]:
    out = [p.strip() for p in policies if p.strip()]
    for p in out:
        if p not in POLICIES:
            raise SimError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    if not out:
        raise SimError("no policy given")
    return out


def run_policies(cluster: Cluster, workload: Workload, policies: Sequence[str], *, seed: int = 0,
                 failures: FailureConfig | None = None, sched_kwargs: dict[str, Any] | None = None,
                 progress: Callable[[str, int, int], None] | None = None, usage: bool = False
                 ) -> list[tuple[dict[str, Any], SimResult]]:
    """Every policy on the identical job stream (same workload object, same failure seed). ``usage``: keep the
    attempts for the accounting report (``suanli.sim.usage``)."""
    out = []
    for p in check_policies(policies):
        cfg = SimConfig(policy=p, seed=seed, failures=failures or FailureConfig(),
                        sched_kwargs=dict(sched_kwargs or {}), usage=usage)
        cb = (lambda d, n, _p=p: progress(_p, d, n)) if progress is not None else None
        r = Simulation(cluster, workload, cfg).run(cb)
        out.append((summarize(r), r))
    base = next((s for s, _ in out if s["policy"] == "fifo"), None)
    if base is not None:
        for s, _ in out:
            s["vs_fifo"] = {k: (s[k] / base[k] if base[k] else None) for k in ("avg_jct_s", "p99_jct_s",
                                                                                "avg_queue_s", "makespan_s")}
    return out
