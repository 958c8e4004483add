"""Usage records: the chip-time of every ended attempt, per node, with its outcome and how much of it was useful.

One record per (attempt, node) with chips on it, written by the store in the same transaction that ends the
attempt (``Store.finish_attempt``, ``Store.spawn_failed``, ``Store.requeue_lost``): an attempt is ended once, so it
is counted once, whatever crashes in between (the unique key ``(attempt_id, node)`` makes a second insert fail
the transaction rather than count twice).

Useful and lost work, per outcome (the same rules as the digital twin, ``sim/engine.py``):

| outcome | useful | lost (cause) |
|---|---|---|
| ``succeeded`` | all | - |
| ``preempted``, ``stopped`` | all (the job keeps its progress: it checkpoints when asked to stop) | - |
| ``node-lost`` | all but the lost part | the device-seconds since the last checkpoint (``lost_device_s``), else all |
| ``failed``, ``cancelled``, ``aborted``, ``lost``, ``spawn-failed`` | - | all |

Chips are devices, a fractional share counted as its fraction (``milli / 1000``). CPU-only attempts hold no chips
and have no record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from suanli.control.types import AttemptOutcome

#: outcomes whose chip-time counts as useful work (node-lost: all but its lost part)
USEFUL = frozenset({AttemptOutcome.SUCCEEDED, AttemptOutcome.PREEMPTED, AttemptOutcome.STOPPED,
                    AttemptOutcome.NODE_LOST})


def chips_per_node(placement: Mapping[str, Any] | str) -> list[tuple[str, str, float]]:
    """(node, accelerator model, chips) for every node of a placement that holds chips."""
    pl = json.loads(placement) if isinstance(placement, str) else placement
    milli = int(pl.get("milli", 1000))
    model = str(pl.get("model") or "")
    out = []
    for node, loc in zip(pl.get("nodes", []), pl.get("local", []), strict=False):
        chips = len(loc) * milli / 1000.0
        if chips > 0:
            out.append((str(node), model, chips))
    return out


def records(*, attempt_id: int, job_id: int, job: Mapping[str, Any], placement: Mapping[str, Any] | str,
            started_at: float, ended_at: float, outcome: AttemptOutcome | str,
            lost_device_s: float | None = None, energy_j: Mapping[str, float | None] | None = None
            ) -> list[dict[str, Any]]:
    """The usage rows of one ended attempt. ``job``: its ``name``, ``tenant``, ``queue``, ``kind`` and ``llm``;
    ``energy_j``: measured board energy per node (joules) where the executor could read it."""
    outcome = AttemptOutcome(outcome)
    dur = max(0.0, float(ended_at) - float(started_at))
    per = chips_per_node(placement)
    total_chips = sum(c for _, _, c in per)
    rows = []
    for node, model, chips in per:
        chip_s = chips * dur
        if outcome == AttemptOutcome.NODE_LOST and lost_device_s is not None and total_chips > 0:
            lost = min(chip_s, max(0.0, float(lost_device_s)) * chips / total_chips)
        elif outcome in USEFUL and outcome != AttemptOutcome.NODE_LOST:
            lost = 0.0
        else:
            lost = chip_s
        e = (energy_j or {}).get(node)
        rows.append({
            "attempt_id": attempt_id, "job_id": job_id, "job_name": str(job.get("name") or ""),
            "tenant": str(job.get("tenant") or ""), "queue": str(job.get("queue") or ""),
            "kind": str(job.get("kind") or ""), "node": node, "model": model, "chips": chips,
            "started_at": float(started_at), "ended_at": float(ended_at), "chip_s": chip_s,
            "useful_chip_s": chip_s - lost, "lost_chip_s": lost, "outcome": outcome,
            "energy_j": None if e is None else float(e), "llm": str(job.get("llm") or ""),
        })
    return rows


def energy_counters(ex: Any, placement: Mapping[str, Any]) -> dict[str, list[float]] | None:
    """The energy counters (mJ) of the attempt's devices, per node, where the executor reads all of that node's
    (stored in the placement as ``energy_mj0`` when the attempt starts); None when none can be read."""
    out: dict[str, list[float]] = {}
    model = str(placement.get("model") or "")
    for node, loc in zip(placement.get("nodes", []), placement.get("local", []), strict=False):
        if not loc:
            continue
        try:
            vals = ex.energy_mj(node, model, list(loc))
        except Exception:  # a counter that cannot be read is not measured, never an error
            continue
        if vals and all(v is not None for v in vals):
            out[str(node)] = [float(v) for v in vals]
    return out or None


def energy_used(ex: Any, placement: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Measured board energy (J) per node since the attempt started: the counters now minus ``energy_mj0``, for
    the nodes whose counters were read at both ends and did not go backwards (a driver reload resets them)."""
    if not placement or not placement.get("energy_mj0"):
        return None
    now = energy_counters(ex, placement) or {}
    out = {}
    for node, start in dict(placement["energy_mj0"]).items():
        end = now.get(node)
        if end is None or len(end) != len(start) or any(e < b for e, b in zip(end, start, strict=True)):
            continue
        out[node] = sum(e - b for e, b in zip(end, start, strict=True)) / 1000.0
    return out or None


def accounting_from_dir(data_dir: Any) -> Any:
    """The accounting settings of a control plane: ``<data>/fleet.yaml`` (a fleet file with ``accounting`` and
    per-pool ``pue``/``price_usd``/``node_hour_usd``) when there is one, else the defaults."""
    from pathlib import Path

    from suanli.accounting.pricing import Accounting

    f = Path(data_dir) / "fleet.yaml" if data_dir is not None else None
    return Accounting.from_file(f) if f is not None and f.is_file() else Accounting()


# -- reports and counters (reads) ---------------------------------------------------------------------------
def make_report(store: Any, *, since: float, until: float, by: tuple[str, ...], acct: Any = None,
                tenant: str | None = None, series_step_s: float | None = None) -> dict[str, Any]:
    """The accounting report of the usage records ending in [since, until] (``tenant``: only that tenant's):
    {since, until, by, rows, total, series?, by_model?, mix?}, with the tokens served through the gateway in the
    window. ``acct``: an ``accounting.pricing.Accounting`` (default: catalog prices, the planner's default PUE and
    tariff). ``--by job`` is priced in the database (one row per job; ``accounting.report.job_rows``)."""
    from suanli.accounting.pricing import Accounting
    from suanli.accounting.report import build_rows, job_rows, total_row

    acct = acct or Accounting()
    tokens = store.token_sums(since, until, by, tenant=tenant)
    inv = store.device_inventory() if tenant is None else None
    if by == ("job",):
        rows = job_rows(store, since, until, acct, tenant=tenant, tokens=tokens)
    else:
        cells = store.usage_cells(since, until, by, tenant=tenant)
        rows = build_rows(cells, by, acct, window_s=until - since, inventory=inv, tokens=tokens)
    total = total_row(rows)
    if inv is not None and until > since:
        devs = sum(inv.values())
        total["utilisation"] = total["chip_hours"] * 3600.0 / (devs * (until - since)) if devs else None
    out: dict[str, Any] = {"since": since, "until": until, "by": list(by), "rows": rows, "total": total}
    if series_step_s:
        out["series"] = store.usage_series(since, until, series_step_s, tenant=tenant)
        for name, keys in (("by_model", ("model",)), ("mix", ("llm", "kind", "model"))):
            out[name] = build_rows(store.usage_cells(since, until, keys, tenant=tenant), keys, acct,
                                   tokens=store.token_sums(since, until, keys, tenant=tenant))
    return out


class UsageCounters:
    """Prometheus counters from the usage records (exact across restarts: read from the store, cached a few
    seconds): ``suanli_usage_chip_seconds_total{tenant,model}``, ``suanli_usage_useful_chip_seconds_total``
    and ``suanli_usage_energy_joules_total{tenant,model}`` (facility energy: measured or modelled, times PUE);
    ``suanli_tokens_total{tenant,model,type}`` (tokens served through the gateway, ``model`` the served model,
    ``type`` prompt or completion; as flushed by the gateway, at most its flush interval behind)."""

    def __init__(self, metrics: Any, cache_s: float = 10.0) -> None:
        self.m = metrics
        self.cache_s = cache_s
        self._at = -1e18
        self._rows: list[tuple[str, str, float, float, float | None]] = []
        self._tokens: list[dict[str, Any]] = []

    def _read(self) -> list[tuple[str, str, float, float, float | None]]:
        import time

        from suanli.accounting.pricing import J_PER_KWH

        now = time.monotonic()
        if now - self._at < self.cache_s:
            return self._rows
        store = self.m.store
        acct = getattr(self.m, "accounting", None)
        if acct is None:
            from suanli.accounting.pricing import Accounting

            acct = Accounting()
        agg: dict[tuple[str, str], list[Any]] = {}
        for r in store.usage_totals() if store is not None else []:
            a = agg.setdefault((r["tenant"], r["model"]), [0.0, 0.0, 0.0])
            a[0] += float(r["chip_s"] or 0.0)
            a[1] += float(r["useful_chip_s"] or 0.0)
            kwh, _ = acct.cost(r["node"], r["model"], float(r["chip_s"] or 0.0),
                               float(r["unmeasured_chip_s"] or 0.0), float(r["energy_j"] or 0.0))
            if kwh is None or a[2] is None:
                a[2] = None
            else:
                a[2] += kwh * J_PER_KWH
        self._rows = [(t, m, v[0], v[1], v[2]) for (t, m), v in sorted(agg.items())]
        self._tokens = store.token_totals() if store is not None else []
        self._at = now
        return self._rows

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        rows = self._read()
        cs = CounterMetricFamily("suanli_usage_chip_seconds", "Chip-seconds of ended attempts (usage records)",
                                 labels=["tenant", "model"])
        us = CounterMetricFamily("suanli_usage_useful_chip_seconds", "Chip-seconds whose work was kept",
                                 labels=["tenant", "model"])
        en = CounterMetricFamily("suanli_usage_energy_joules", "Facility energy of ended attempts (measured or "
                                 "modelled board energy x PUE); absent where the TDP is unknown",
                                 labels=["tenant", "model"])
        for t, m, chip_s, useful, joules in rows:
            cs.add_metric([t, m], chip_s)
            us.add_metric([t, m], useful)
            if joules is not None:
                en.add_metric([t, m], joules)
        tk = CounterMetricFamily("suanli_tokens", "Tokens served through the gateway, as the engines reported "
                                 "them (model: the served model)", labels=["tenant", "model", "type"])
        for r in self._tokens:
            tk.add_metric([r["tenant"], r["model"], "prompt"], r["prompt_tokens"])
            tk.add_metric([r["tenant"], r["model"], "completion"], r["completion_tokens"])
        yield cs
        yield us
        yield en
        yield tk
