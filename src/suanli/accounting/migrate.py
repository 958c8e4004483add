"""``suanli plan migrate``: the work of an accounting report re-planned on other chip types (issue 14).

The report's useful chip-hours per (LLM, job kind, accelerator model) are the work - its mix, from the usage
records (``usage.json``'s ``mix`` rows: the jobs' ``llm`` and kind). On a target chip type each part takes
``useful x speed(source) / speed(target)`` chip-hours, where speed is the planner's per-chip figure
(:func:`suanli.perf.api.relative_speed`): the per-chip throughput of that LLM (serving for services, training for the
rest), else - for work without an LLM the catalog knows - the ratio of BF16 dense peaks (a rough guide: confidence
low). ``--llm`` (with ``--kind``) overrides: all the work is that model. Allocated chip-hours keep the report's goodput
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
    """(useful chip-hours by model, allocated chip-hours by model, window seconds or None) from a report (see
    :func:`read_mix`)."""
    mix, window = read_mix(path)
    return (*by_model(mix), window)


def by_model(mix: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """(useful chip-hours by model, allocated chip-hours by model) summed over a mix's rows."""
    useful: dict[str, float] = {}
    alloc: dict[str, float] = {}
    for g in mix:
        useful[g["model"]] = useful.get(g["model"], 0.0) + g["useful"]
        alloc[g["model"]] = alloc.get(g["model"], 0.0) + g["alloc"]
    return useful, alloc


def read_mix(path: str | Path) -> tuple[list[dict[str, Any]], float | None]:
    """The work of a report as ``[{llm, kind, model, useful, alloc}]`` (chip-hours; ``llm`` None: not named) and
    the window in seconds (or None): the ``mix`` rows of ``suanli report --out``'s ``usage.json`` (by LLM, kind and
    accelerator model), else its ``by_model`` rows (``suanli sim --out``: no LLM), or a JSON list of rows with a
    ``model`` key (``suanli report --by llm,model --json``)."""
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
        rows = (data.get("mix") or data.get("by_model")
                or (data.get("rows") if "model" in (data.get("by") or []) else None))
    else:
        rows = data
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r.get("model") for r in rows):
        raise SuanliError(f"--from-report: {p} has no rows by accelerator model (use the usage.json of "
                          "'suanli report --out' or 'suanli sim --out', or 'suanli report --by model --json')")
    out: dict[tuple[str | None, str, str], dict[str, Any]] = {}
    for r in rows:
        try:
            m = resolve_accelerator(str(r["model"]))
        except Exception:
            raise SuanliError(f"--from-report: unknown accelerator model {r['model']!r} in {p}") from None
        u, a = r.get("useful_chip_hours"), r.get("chip_hours")
        if not isinstance(u, int | float) or not isinstance(a, int | float) or u < 0 or a < 0:
            raise SuanliError(f"--from-report: row for {r['model']} lacks numeric chip_hours/useful_chip_hours")
        llm = r.get("llm") or None
        kind = "serve" if r.get("kind") == "serve" else "train"
        g = out.setdefault((llm, kind, m), {"llm": llm, "kind": kind, "model": m, "useful": 0.0, "alloc": 0.0})
        g["useful"] += float(u)
        g["alloc"] += float(a)
    return list(out.values()), window


def _confidence(llm: str | None, kind: str, acc: str) -> str:
    if llm is None:
        return "low"
    from suanli.perf.api import plan_serve, plan_train

    try:
        est = plan_train(llm, [acc], 1e12)[0] if kind == "train" else plan_serve(llm, [acc])[0]
    except Exception:  # a model that cannot be planned on this chip: the row says unknown anyway
        return "low"
    return str(est.confidence)


def _speeds(accs: list[str], llm: str | None, kind: str) -> tuple[dict[str, float | None], str | None, str | None]:
    """(speeds, the LLM they are for or None for BF16 peaks, a note) - an LLM the catalog does not know falls back
    to the peaks, with a note."""
    from suanli.perf.api import relative_speed

    if llm is not None:
        try:
            return relative_speed(accs, llm, kind), llm, None  # type: ignore[arg-type]
        except Exception as e:  # not in the catalog, or the planner cannot place it: say so, use the peaks
            return relative_speed(accs), None, f"{llm}: {str(e).splitlines()[0][:80]}; BF16 peak ratio used"
    return relative_speed(accs), None, None


_RANK = {"low": 0, "medium": 1, "high": 2, "calibrated": 3}


def migrate(useful: Mapping[str, float], alloc: Mapping[str, float], targets: Sequence[str], *,
            window_s: float | None = None, llm: str | None = None, kind: str = "train",
            acct: Accounting | None = None, mix: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per chip type - the sources as they ran (``role: source``), then each target re-planned.

    ``mix`` (:func:`read_mix`): the work per (LLM, kind, model), each part at its own LLM's speeds; without it (or
    with ``llm``, which overrides) all of ``useful`` is ``llm``'s ``kind`` work (no ``llm``: BF16 peak ratio).
    Target rows carry ``mix``: their useful chip-hours per LLM ("" : none named)."""
    if kind not in ("train", "serve"):
        raise SuanliError(f"--kind: {kind!r} is neither train nor serve")
    acct = acct or Accounting()
    tgts = [resolve_accelerator(t.strip()) for t in targets if t.strip()]
    if not tgts:
        raise SuanliError("--to: name at least one accelerator")
    if mix is None or llm is not None:
        mix = [{"llm": llm, "kind": kind, "model": m, "useful": u, "alloc": alloc.get(m, u)}
               for m, u in useful.items()]
    window = window_s if window_s and window_s > 0 else DEFAULT_WINDOW_S
    util = acct.settings.utilisation
    total_useful = sum(useful.values())
    total_alloc = sum(alloc.values())
    goodput = total_useful / total_alloc if total_alloc > 0 else 1.0
    # per (llm, kind) group: the work in units of its fastest known chip, then per target
    groups: dict[tuple[str | None, str], dict[str, float]] = {}
    for g in mix:
        d = groups.setdefault((g["llm"], g["kind"]), {})
        d[g["model"]] = d.get(g["model"], 0.0) + float(g["useful"])
    per_target: dict[str, float | None] = dict.fromkeys(tgts, 0.0)
    by_llm: dict[str, dict[str, float]] = {t: {} for t in tgts}
    reasons: dict[str, str] = {}
    notes: list[str] = []
    conf: dict[str, str] = {}
    src_speed: dict[str, float | None] = {}
    for (g_llm, g_kind), parts in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        speed, used, note = _speeds(sorted({*parts, *tgts}), g_llm, g_kind)
        if note:
            notes.append(note)
        if len(groups) == 1:
            src_speed = speed
        work = None
        if all(speed.get(m) for m in parts):
            work = sum(u * float(speed[m] or 0.0) for m, u in parts.items())
        for a in {*parts, *tgts}:  # a chip's confidence: the least of the parts it runs or would run
            c = _confidence(used, g_kind, a)
            conf[a] = c if a not in conf or _RANK.get(c, 0) < _RANK.get(conf[a], 0) else conf[a]
        for t in tgts:
            s = speed.get(t)
            if work is None:
                unknown = [m for m in parts if not speed.get(m)]
                reasons[t] = f"speed of {', '.join(unknown)} unknown to the planner"
                per_target[t] = None
            elif not s:
                reasons[t] = f"speed of {t} unknown to the planner" + (f" for {used}" if used else "")
                per_target[t] = None
            elif per_target[t] is not None:
                per_target[t] = float(per_target[t] or 0.0) + work / s
                by_llm[t][g_llm or ""] = by_llm[t].get(g_llm or "", 0.0) + work / s

    def row(acc: str, role: str, useful_h: float | None, alloc_h: float | None, reason: str | None,
            confidence: str) -> dict[str, Any]:
        kwh = usd = None
        if alloc_h is not None:
            kwh, usd = acct.cost("", acc, alloc_h * 3600.0, alloc_h * 3600.0, 0.0)
        chips = math.ceil(alloc_h * 3600.0 / (window * util)) if alloc_h is not None else None
        return {"accelerator": acc, "role": role, "speed": src_speed.get(acc), "useful_chip_hours": useful_h,
                "chip_hours": alloc_h, "chips_needed": chips, "days": window / 86400.0 if chips else None,
                "energy_kwh": kwh, "usd": usd,
                "usd_per_useful_chip_hour": usd / useful_h if usd is not None and useful_h else None,
                "confidence": confidence, "reason": reason}

    out = [row(m, "source", useful[m], alloc[m], None, conf.get(m, "low")) for m in sorted(useful)]
    for t in tgts:
        u = per_target[t]
        r = row(t, "target", u, None if u is None else (u / goodput if goodput > 0 else u), reasons.get(t),
                conf.get(t, "low"))
        r["mix"] = by_llm[t] if u is not None else None
        r["notes"] = notes
        out.append(r)
    return out
