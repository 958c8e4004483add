"""``suanli plan migrate``: the work of an accounting report re-planned on other chip types (issue 14).

The report's useful chip-hours per accelerator model are the work. On a target chip type the same work takes
``useful x speed(source) / speed(target)`` chip-hours, where speed is the planner's per-chip figure
(:func:`suanli.perf.api.relative_speed`): the per-chip throughput of ``llm`` when it is given (training or serving),
else the ratio of BF16 dense peaks (a rough guide: confidence low). Allocated chip-hours keep the report's goodput
(the same share of work lost to failures and cancellations). Chips needed: to do it within the report's window at
the accounting utilisation. Energy and dollars: :class:`suanli.accounting.pricing.Accounting` on the target chip
(TDP x utilisation x PUE; catalog price or the fleet file's) - unknown figures stay unknown (``None``), never zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suanli.accounting.pricing import Accounting
from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import SuanliError

DEFAULT_WINDOW_S = 30 * 86400.0


def read_report(path: str | Path) -> tuple[dict[str, float], dict[str, float], float | None]:
    """(useful chip-hours by model, allocated chip-hours by model, window seconds or None) from a report: the
    ``usage.json`` of ``suanli report --out`` / ``suanli sim --out`` (its ``by_model`` rows), or the JSON list of
    ``suanli report --by model --json``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise SuanliError(f"--from-report: no such file: {p}") from None
    except (OSError, ValueError) as e:
        raise SuanliError(f"--from-report: {p} is not a JSON report ({e})") from None
    window = None
    if isinstance(data, dict):
        ctx = data.get("context") or {}
        since, until = ctx.get("since"), ctx.get("until")
        if isinstance(since, int | float) and isinstance(until, int | float) and until > since:
            window = float(until - since)
        rows = data.get("by_model") or (data.get("rows") if data.get("by") == ["model"] else None)
    else:
        rows = data
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r.get("model") for r in rows):
        raise SuanliError(f"--from-report: {p} has no rows by accelerator model (use the usage.json of "
                          "'suanli report --out' or 'suanli sim --out', or 'suanli report --by model --json')")
    useful: dict[str, float] = {}
    alloc: dict[str, float] = {}
    for r in rows:
        try:
            m = resolve_accelerator(str(r["model"]))
        except Exception:
            raise SuanliError(f"--from-report: unknown accelerator model {r['model']!r} in {p}") from None
        u, a = r.get("useful_chip_hours"), r.get("chip_hours")
        if not isinstance(u, int | float) or not isinstance(a, int | float) or u < 0 or a < 0:
            raise SuanliError(f"--from-report: row for {r['model']} lacks numeric chip_hours/useful_chip_hours")
        useful[m] = useful.get(m, 0.0) + float(u)
        alloc[m] = alloc.get(m, 0.0) + float(a)
    return useful, alloc, window


def _confidence(llm: str | None, kind: str, acc: str) -> str:
    if llm is None:
        return "low"
    from suanli.perf.api import plan_serve, plan_train

    try:
        est = plan_train(llm, [acc], 1e12)[0] if kind == "train" else plan_serve(llm, [acc])[0]
    except Exception:  # a model that cannot be planned on this chip: the row says unknown anyway
        return "low"
    return str(est.confidence)


def migrate(useful: Mapping[str, float], alloc: Mapping[str, float], targets: Sequence[str], *,
            window_s: float | None = None, llm: str | None = None, kind: str = "train",
            acct: Accounting | None = None) -> list[dict[str, Any]]:
    """One row per chip type - the sources as they ran (``role: source``), then each target re-planned."""
    from suanli.perf.api import relative_speed

    if kind not in ("train", "serve"):
        raise SuanliError(f"--kind: {kind!r} is neither train nor serve")
    acct = acct or Accounting()
    tgts = [resolve_accelerator(t.strip()) for t in targets if t.strip()]
    if not tgts:
        raise SuanliError("--to: name at least one accelerator")
    window = window_s if window_s and window_s > 0 else DEFAULT_WINDOW_S
    util = acct.settings.utilisation
    speed = relative_speed(sorted({*useful, *tgts}), llm, kind)  # type: ignore[arg-type]
    total_useful = sum(useful.values())
    total_alloc = sum(alloc.values())
    goodput = total_useful / total_alloc if total_alloc > 0 else 1.0
    # the work in units of the fastest known chip; a source of unknown speed leaves every target unknown
    work = None
    if all(speed.get(m) for m in useful):
        work = sum(u * float(speed[m] or 0.0) for m, u in useful.items())

    def row(acc: str, role: str, useful_h: float | None, alloc_h: float | None, reason: str | None) -> dict[str, Any]:
        kwh = usd = None
        if alloc_h is not None:
            kwh, usd = acct.cost("", acc, alloc_h * 3600.0, alloc_h * 3600.0, 0.0)
        chips = math.ceil(alloc_h * 3600.0 / (window * util)) if alloc_h is not None else None
        return {"accelerator": acc, "role": role, "speed": speed.get(acc), "useful_chip_hours": useful_h,
                "chip_hours": alloc_h, "chips_needed": chips, "days": window / 86400.0 if chips else None,
                "energy_kwh": kwh, "usd": usd,
                "usd_per_useful_chip_hour": usd / useful_h if usd is not None and useful_h else None,
                "confidence": _confidence(llm, kind, acc), "reason": reason}

    out = [row(m, "source", useful[m], alloc[m], None) for m in sorted(useful)]
    for t in tgts:
        s = speed.get(t)
        if work is None:
            unknown = [m for m in useful if not speed.get(m)]
            out.append(row(t, "target", None, None, f"speed of {', '.join(unknown)} unknown to the planner"))
        elif not s:
            out.append(row(t, "target", None, None, f"speed of {t} unknown to the planner"
                           + (f" for {llm}" if llm else "")))
        else:
            u = work / s
            out.append(row(t, "target", u, u / goodput if goodput > 0 else u, None))
    return out
