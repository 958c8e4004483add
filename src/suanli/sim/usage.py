"""The twin's accounting report: usage cells from a simulation's attempts, in the shape ``Store.usage_cells`` gives
the live report, so ``suanli sim --out`` writes the same rows and columns as ``suanli report`` (issue 14).

A simulated attempt is one run of a job on its placement, split per node: chips on the node (a fractional device
as its share) x run time. Useful work: all of it for a completed or preempted attempt (a preemption checkpoints);
for an attempt killed by a failure (``node-lost``) the run since its last checkpoint is lost, the rest useful - as
the engine counts ``lost_chip_hours``. The twin measures no power: energy is modelled (TDP x utilisation x PUE).
Tenants are the trace's; the twin's queue of a job is its tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from suanli.accounting.pricing import Accounting
from suanli.accounting.report import GROUPS, build_rows, total_row, write_outputs
from suanli.sim.engine import ATTEMPT_OUTCOMES, SimResult
from suanli.sim.workload import KINDS


def usage_cells(r: SimResult, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Sums per (``keys``, model, node, outcome) of the run's attempts: ``records``, ``chip_s``, ``useful_chip_s``,
    ``lost_chip_s``, ``unmeasured_chip_s`` (all of it: nothing is measured) and ``energy_j`` (0)."""
    if r.attempts is None:
        raise ValueError("the simulation kept no attempts: run it with SimConfig(usage=True)")
    bad = [k for k in keys if k not in GROUPS]
    if bad:
        raise ValueError(f"unknown grouping {bad[0]!r}; choose from {', '.join(GROUPS)}")
    w, c = r.workload, r.cluster
    node_names = [n.name for n in c.nodes]
    node_model = [c.models[m] if m >= 0 else "" for m in c.node_model.tolist()]
    tenant = w.tenant
    cells: dict[tuple[Any, ...], dict[str, Any]] = {}
    for jid, start, end, outcome, lost_s, pl in r.attempts:
        dt = end - start
        ten = w.tenants[int(tenant[jid])]
        out = ATTEMPT_OUTCOMES[outcome]
        kind = KINDS[int(w.kind[jid])]
        share = pl.milli / 1000.0
        for n, devs in zip(pl.nodes, pl.devices, strict=True):
            chips = len(devs) * share
            node, model = node_names[n], node_model[n]
            vals = {"tenant": ten, "queue": ten, "model": model, "node": node, "job": jid, "kind": kind,
                    "llm": ""}  # the twin's job types are not LLMs
            k = (*(vals[x] for x in keys), model, node, out, kind)
            cell = cells.get(k)
            if cell is None:
                cell = cells[k] = {**{x: vals[x] for x in keys if x != "job"}, "model": model, "node": node,
                                   "outcome": out, "kind": kind, "records": 0, "chip_s": 0.0, "useful_chip_s": 0.0,
                                   "lost_chip_s": 0.0, "unmeasured_chip_s": 0.0, "energy_j": 0.0}
                if "job" in keys:
                    cell["job_id"] = jid
                    cell["job_name"] = f"job-{jid}"
            chip_s = chips * dt
            lost = chips * lost_s
            cell["records"] += 1
            cell["chip_s"] += chip_s
            cell["useful_chip_s"] += chip_s - lost
            cell["lost_chip_s"] += lost
            cell["unmeasured_chip_s"] += chip_s
    return list(cells.values())


def inventory(r: SimResult) -> dict[tuple[str, str], int]:
    """(node, model) -> devices: the denominator of utilisation."""
    c = r.cluster
    return {(n.name, c.models[m]): int(d) for n, m, d in zip(c.nodes, c.node_model.tolist(), c.node_devices.tolist(),
                                                              strict=True) if m >= 0}


def usage_series(r: SimResult, buckets: int = 50) -> list[dict[str, Any]]:
    """Chip-seconds per (tenant, model, bucket of attempt end time): the report's usage-over-time plot."""
    if r.attempts is None:
        raise ValueError("the simulation kept no attempts: run it with SimConfig(usage=True)")
    w, c = r.workload, r.cluster
    step = max(1.0, (r.t_end - r.t_start) / max(1, buckets))
    acc: dict[tuple[str, str, float], float] = {}
    for jid, start, end, _, _, pl in r.attempts:
        k = (w.tenants[int(w.tenant[jid])], c.models[int(c.node_model[pl.nodes[0]])] if pl.nodes else "",
             r.t_start + ((end - r.t_start) // step) * step)
        acc[k] = acc.get(k, 0.0) + pl.n_devices * pl.milli / 1000.0 * (end - start)
    return [{"tenant": t, "model": m, "at": at, "chip_s": v} for (t, m, at), v in sorted(acc.items())]


def report_rows(r: SimResult, by: Sequence[str], acct: Accounting | None = None) -> list[dict[str, Any]]:
    """The accounting report's rows for this run, grouped by ``by`` (empty: one total row), over the run's window
    (first accepted arrival to last completion)."""
    acct = acct or Accounting()
    window = max(0.0, r.t_end - r.t_start)
    return build_rows(usage_cells(r, by), by, acct, window_s=window, inventory=inventory(r))


def write_usage(out: str | Path, r: SimResult, acct: Accounting | None = None,
                by: Sequence[str] = ("tenant",)) -> list[Path]:
    """``usage.json``/``.csv``/``.md`` and the plots of the accounting report for one run into ``out``."""
    acct = acct or Accounting()
    rows = report_rows(r, by, acct)
    by_model = report_rows(r, ("model",), acct)
    total = total_row(rows) if rows else None
    ctx = {"source": "twin", "policy": r.policy, "workload": r.workload.name, "cluster": r.cluster.name,
           "since": r.t_start, "until": r.t_end, "total": total}
    return write_outputs(out, rows, by, series=usage_series(r), by_model=by_model, context=ctx)
