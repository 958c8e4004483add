"""The accounting report: rows per tenant / queue / model / node / job from aggregated usage, in table, CSV,
Markdown or JSON, with plots.

A row (``--format json`` prints a list of them): the grouping key(s), then

| key | meaning |
|---|---|
| ``chip_hours`` | allocated chip-hours (a fractional device counts as its share) |
| ``useful_chip_hours`` | chip-hours whose work was kept (succeeded, preempted, node-lost before its checkpoint) |
| ``lost_chip_hours`` | the rest; ``lost_by_cause``: per outcome (failed, node-lost, cancelled, ...) |
| ``goodput`` | useful / allocated |
| ``utilisation`` | allocated / (registered devices x window), for ``--by model``/``node`` and the total (else null) |
| ``energy_kwh`` | facility energy (board energy measured or modelled, times the pool's PUE); null if unknown |
| ``energy_measured_share`` | share of the chip-hours whose energy was measured |
| ``usd`` | amortised price + energy at the tariff + node-hour overheads; null where a price is unknown |
| ``usd_per_useful_chip_hour`` | ``usd / useful_chip_hours`` |
| ``tokens`` | tokens served through the gateway (prompt + completion, as the engines reported them); null: none |
| ``prompt_tokens``, ``completion_tokens`` | the two parts |
| ``usd_per_million_tokens`` | the dollars of the row's service replicas (kind ``serve``) per million tokens |
| ``records`` | usage records summed |
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from suanli.accounting.pricing import Accounting
from suanli.errors import SuanliError

GROUPS = ("tenant", "queue", "model", "node", "llm", "kind", "job")
FORMATS = ("table", "csv", "markdown", "json")
CAUSES = ("failed", "node-lost", "cancelled", "aborted", "lost", "spawn-failed")
COLUMNS = ("chip_hours", "useful_chip_hours", "lost_chip_hours", "goodput", "utilisation", "energy_kwh",
           "energy_measured_share", "usd", "usd_per_useful_chip_hour", "serve_usd", "tokens", "prompt_tokens",
           "completion_tokens",
           "usd_per_million_tokens", "records")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None, *, name: str = "--since") -> float:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` before now, or an ISO date/time (UTC unless it says) -> epoch s."""
    now = time.time() if now is None else now
    m = _SINCE.match(str(text))
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        d = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise SuanliError(f"{name}: {text!r} is not a duration (30d, 12h) or an ISO date") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def parse_by(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``tenant``, ``model,node``... -> the grouping keys (empty: one total row)."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    keys = tuple(p.strip().lower() for p in parts if p.strip())
    bad = [k for k in keys if k not in GROUPS]
    if bad:
        raise SuanliError(f"--by: unknown grouping {bad[0]!r} ({', '.join(GROUPS[:-1])} or {GROUPS[-1]})")
    if len(set(keys)) != len(keys):
        raise SuanliError(f"--by: {text!r} names a grouping twice")
    return keys


def check_format(fmt: str) -> str:
    f = fmt.strip().lower()
    if f not in FORMATS:
        raise SuanliError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return f


def build_rows(cells: Iterable[Mapping[str, Any]], by: Sequence[str], acct: Accounting, *,
               window_s: float | None = None, inventory: Mapping[tuple[str, str], int] | None = None,
               tokens: Mapping[tuple[Any, ...], Mapping[str, int]] | None = None) -> list[dict[str, Any]]:
    """Report rows from usage cells (sums per grouping keys, model, node and outcome: ``Store.usage_cells`` or the
    twin's). Energy and cost are computed per (node, model) cell, then summed; an unknown part leaves the row's
    sum unknown. ``inventory``: devices per (node, model) for utilisation; ``tokens``: tokens served per key
    ({prompt_tokens, completion_tokens}); a key with tokens and no record gets a row of its own."""
    # per key: [chip_s, useful, lost, lost_by, kwh or None, usd or None, unmeasured, records, serve usd or None,
    #           serve chip_s]
    acc: dict[tuple[Any, ...], list[Any]] = {}
    names: dict[int, str] = {}
    cols = tuple("job_id" if k == "job" else k for k in by)
    has_job = "job" in by
    cost = acct.cost
    for c in cells:
        k = tuple(c[x] for x in cols)
        if has_job:
            names[c["job_id"]] = str(c.get("job_name") or "")
        r = acc.get(k)
        if r is None:
            r = acc[k] = [0.0, 0.0, 0.0, {}, 0.0, 0.0, 0.0, 0, 0.0, 0.0]
        chip_s = c["chip_s"] or 0.0
        unmeasured = c["unmeasured_chip_s"] or 0.0
        lost = c["lost_chip_s"] or 0.0
        r[0] += chip_s
        r[1] += c["useful_chip_s"] or 0.0
        if lost > 0:
            r[2] += lost
            cause = str(c["outcome"])
            r[3][cause] = r[3].get(cause, 0.0) + lost
        r[6] += unmeasured
        r[7] += c.get("records") or 0
        kwh, usd = cost(c["node"], c["model"], chip_s, unmeasured, c["energy_j"] or 0.0)
        r[4] = None if kwh is None or r[4] is None else r[4] + kwh
        r[5] = None if usd is None or r[5] is None else r[5] + usd
        if c.get("kind") == "serve":
            r[8] = None if usd is None or r[8] is None else r[8] + usd
            r[9] += chip_s
    for k in tokens or {}:
        if k not in acc:
            acc[k] = [0.0, 0.0, 0.0, {}, 0.0, 0.0, 0.0, 0, 0.0, 0.0]
    util_ok = window_s is not None and window_s > 0 and inventory is not None and set(by) <= {"model", "node"}
    devs_of: dict[tuple[Any, ...], int] = {}
    if util_ok:
        assert inventory is not None
        for (node, model), n in inventory.items():
            dk = tuple(model if name == "model" else node for name in by)
            devs_of[dk] = devs_of.get(dk, 0) + n
    rows = []
    for k, r in sorted(acc.items(), key=lambda kv: tuple("" if x is None else x for x in kv[0])):
        util = None
        if util_ok:
            assert window_s is not None
            devs = devs_of.get(k, 0)
            util = r[0] / (devs * window_s) if devs else None
        rows.append(make_row(by, k, names, *r, tokens=(tokens or {}).get(k), utilisation=util))
    return rows


def make_row(by: Sequence[str], k: Sequence[Any], names: Mapping[int, str], chip_s: float, useful_s: float,
             lost_s: float, lost_by: Mapping[str, float], kwh: float | None, usd: float | None, unmeasured: float,
             records: int, serve_usd: float | None, serve_chip_s: float, *,
             tokens: Mapping[str, int] | None = None, utilisation: float | None = None) -> dict[str, Any]:
    """One report row from its sums (seconds; ``usd``/``kwh`` None: unknown)."""
    row: dict[str, Any] = {}
    for name, v in zip(by, k, strict=True):
        row[name] = v
        if name == "job":
            row["job_name"] = names.get(int(v), "")
    h = chip_s / 3600.0
    useful = useful_s / 3600.0
    tok = ptok = ctok = None
    if tokens is not None:
        ptok, ctok = int(tokens.get("prompt_tokens", 0)), int(tokens.get("completion_tokens", 0))
        tok = ptok + ctok
    row.update({
        "chip_hours": h, "useful_chip_hours": useful, "lost_chip_hours": lost_s / 3600.0,
        "lost_by_cause": {c: v / 3600.0 for c, v in sorted(lost_by.items()) if v > 0},
        "goodput": useful / h if h > 0 else None, "utilisation": utilisation,
        "energy_kwh": kwh,
        "energy_measured_share": 1.0 - unmeasured / chip_s if chip_s > 0 else None,
        "usd": usd, "usd_per_useful_chip_hour": usd / useful if usd is not None and useful > 0 else None,
        "serve_usd": serve_usd if serve_chip_s > 0 else 0.0 if serve_usd is not None else None,
        "tokens": tok, "prompt_tokens": ptok, "completion_tokens": ctok,
        "usd_per_million_tokens": (serve_usd / tok * 1e6 if serve_usd is not None and serve_chip_s > 0 and tok
                                   else None),
        "records": records,
    })
    return row


def job_rows(store: Any, since: float, until: float, acct: Accounting, *, tenant: str | None = None,
             tokens: Mapping[tuple[Any, ...], Mapping[str, int]] | None = None) -> list[dict[str, Any]]:
    """``--by job`` rows, priced in the database (``Store.usage_by_job``): one row per job, the same figures as
    ``build_rows`` over the job's cells (a test compares them), built straight from the database's tuples."""
    prices = acct.price_rows(store.usage_pairs())
    tariff = acct.settings.usd_per_kwh
    cols, data = store.usage_by_job(since, until, prices, tenant=tenant)
    want = ("job_id", "job_name", "tenant", "queue", "kind", "llm", "records", "chip_s",
            *(f"lost_{c}" for c in CAUSES), "unmeasured_chip_s", "energy_j", "kwh", "kwh_known", "usd", "usd_known")
    if tuple(cols) != want:
        raise AssertionError(f"usage_by_job columns {cols} are not {want}")
    c0, c1, c2, c3, c4, c5 = CAUSES
    toks = tokens or {}
    rows = []
    append = rows.append
    for (jid, name, _t, _q, kind, _l, records, chip_s, l0, l1, l2, l3, l4, l5, unmeasured, _e, kwh, kwh_known, usd,
         usd_known) in data:  # a tight loop: 250,000 jobs for a million records
        chip_s = chip_s or 0.0
        lost_by = {}
        if l0:
            lost_by[c0] = l0 / 3600.0
        if l1:
            lost_by[c1] = l1 / 3600.0
        if l2:
            lost_by[c2] = l2 / 3600.0
        if l3:
            lost_by[c3] = l3 / 3600.0
        if l4:
            lost_by[c4] = l4 / 3600.0
        if l5:
            lost_by[c5] = l5 / 3600.0
        lost_s = (l0 or 0.0) + (l1 or 0.0) + (l2 or 0.0) + (l3 or 0.0) + (l4 or 0.0) + (l5 or 0.0)
        if kwh_known < records:
            kwh = usd = None
        else:
            kwh = kwh or 0.0
            usd = None if usd_known < records else (usd or 0.0) + kwh * tariff
        h = chip_s / 3600.0
        useful = h - lost_s / 3600.0
        serve = kind == "serve" and chip_s > 0
        ptok = ctok = tok = None
        if toks:
            t = toks.get((jid,))
            if t is not None:
                ptok, ctok = int(t.get("prompt_tokens", 0)), int(t.get("completion_tokens", 0))
                tok = ptok + ctok
        append({
            "job": jid, "job_name": name or "", "chip_hours": h, "useful_chip_hours": useful,
            "lost_chip_hours": lost_s / 3600.0, "lost_by_cause": lost_by,
            "goodput": useful / h if h > 0 else None, "utilisation": None, "energy_kwh": kwh,
            "energy_measured_share": 1.0 - (unmeasured or 0.0) / chip_s if chip_s > 0 else None,
            "usd": usd, "usd_per_useful_chip_hour": usd / useful if usd is not None and useful > 0 else None,
            "serve_usd": usd if serve else 0.0, "tokens": tok, "prompt_tokens": ptok, "completion_tokens": ctok,
            "usd_per_million_tokens": usd / tok * 1e6 if serve and usd is not None and tok else None,
            "records": records})
    seen = {r["job"] for r in rows} if toks else set()
    extra = [k for k in toks if k[0] not in seen]
    for k in sorted(extra):
        rows.append(make_row(("job",), k, {}, 0.0, 0.0, 0.0, {}, 0.0, 0.0, 0.0, 0, 0.0, 0.0, tokens=toks[k]))
    if extra:
        rows.sort(key=lambda r: r["job"])
    return rows


def total_row(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of report rows (unknown energy or cost in one of them: unknown)."""
    h = sum(r["chip_hours"] for r in rows)
    useful = sum(r["useful_chip_hours"] for r in rows)
    lost_by: dict[str, float] = {}
    for r in rows:
        for c, v in r["lost_by_cause"].items():
            lost_by[c] = lost_by.get(c, 0.0) + v
    kwh = None if any(r["energy_kwh"] is None for r in rows) else sum(r["energy_kwh"] for r in rows)
    usd = None if any(r["usd"] is None for r in rows) else sum(r["usd"] for r in rows)
    meas = sum((r["energy_measured_share"] or 0.0) * r["chip_hours"] for r in rows)
    toks = [r for r in rows if r.get("tokens") is not None]
    ptok = sum(r["prompt_tokens"] for r in toks) if toks else None
    ctok = sum(r["completion_tokens"] for r in toks) if toks else None
    tok = None if ptok is None or ctok is None else ptok + ctok
    serve_usd = None if any(r.get("serve_usd", 0.0) is None for r in rows) else sum(r.get("serve_usd") or 0.0
                                                                                  for r in rows)
    return {"chip_hours": h, "useful_chip_hours": useful, "lost_chip_hours": sum(r["lost_chip_hours"] for r in rows),
            "lost_by_cause": dict(sorted(lost_by.items())), "goodput": useful / h if h > 0 else None,
            "utilisation": None, "energy_kwh": kwh, "energy_measured_share": meas / h if h > 0 else None,
            "usd": usd, "usd_per_useful_chip_hour": usd / useful if usd is not None and useful > 0 else None,
            "serve_usd": serve_usd, "tokens": tok, "prompt_tokens": ptok, "completion_tokens": ctok,
            "usd_per_million_tokens": serve_usd / tok * 1e6 if serve_usd and tok else None,
            "records": sum(r["records"] for r in rows)}


# -- formats -------------------------------------------------------------------------------------------------
def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "lost_by_cause"}
    for c in CAUSES:
        out[f"lost_{c.replace('-', '_')}_chip_hours"] = row.get("lost_by_cause", {}).get(c, 0.0)
    return out


def _fmt(v: Any, key: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if key in ("goodput", "utilisation", "energy_measured_share"):
            return f"{100 * v:.1f}%"
        if key.startswith("usd"):
            return f"{v:,.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"
        return f"{v:,.2f}"
    return str(v)


TABLE_COLS = ("chip_hours", "useful_chip_hours", "lost_chip_hours", "goodput", "utilisation", "energy_kwh",
              "usd", "usd_per_useful_chip_hour", "tokens", "usd_per_million_tokens")


def top(rows: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    """The ``n`` rows with the most chip-hours (all for None or 0), in that order."""
    if not n or len(rows) <= n:
        return rows
    import heapq

    return heapq.nlargest(n, rows, key=lambda r: r["chip_hours"])


def render(rows: Sequence[Mapping[str, Any]], by: Sequence[str], fmt: str) -> str:
    """The report as text: ``json`` (a list of rows), ``csv`` (flat: one column per lost cause), ``markdown`` or
    ``table`` (the main columns)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2) + "\n"
    keys = [*by, *(["job_name"] if "job" in by else [])]
    if fmt == "csv":  # one list per row (250,000 rows for --by job over a million records)
        buf = io.StringIO()
        first = _flat(rows[0]) if rows else _flat({k: None for k in COLUMNS})
        plain = [c for c in first if c not in keys and not (c.startswith("lost_") and c.endswith("_chip_hours")
                                                            and c != "lost_chip_hours")]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys + plain + [f"lost_{c.replace('-', '_')}_chip_hours" for c in CAUSES])
        cols = keys + plain
        for r in rows:
            lb = r.get("lost_by_cause") or {}
            w.writerow([*("" if (v := r.get(k)) is None else v for k in cols), *(lb.get(c, 0.0) for c in CAUSES)])
        return buf.getvalue()
    cols = keys + list(TABLE_COLS)
    body = [[_fmt(r.get(c), c) for c in cols] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(x.rjust(w) if i >= len(keys) else x.ljust(w) for i, (x, w) in
                        enumerate(zip(b, widths, strict=True))) for b in body]
    return "\n".join(lines) + "\n"


def write_outputs(out: str | Path, rows: Sequence[Mapping[str, Any]], by: Sequence[str], *,
                  series: Sequence[Mapping[str, Any]] = (), by_model: Sequence[Mapping[str, Any]] = (),
                  mix: Sequence[Mapping[str, Any]] = (), context: Mapping[str, Any] | None = None) -> list[Path]:
    """``usage.json`` ({context, by, rows, by_model, mix}), ``usage.csv``, ``usage.md`` and the plots
    (``usage_by_tenant.png``: chip-hours over time per tenant; ``cost_by_model.png``) into ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    p = d / "usage.json"
    p.write_text(json.dumps({"context": dict(context or {}), "by": list(by), "rows": list(rows),
                             "by_model": list(by_model), "mix": list(mix)}, indent=2, default=str) + "\n")
    files.append(p)
    for name, fmt in (("usage.csv", "csv"), ("usage.md", "markdown")):
        p = d / name
        p.write_text(render(rows, by, fmt))
        files.append(p)
    files += plot(d, series, by_model)
    return files


def plot(d: Path, series: Sequence[Mapping[str, Any]], by_model: Sequence[Mapping[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(8, 4))
    tenants = sorted({s["tenant"] for s in series})
    if tenants:
        times = sorted({s["at"] for s in series})
        idx = {t: i for i, t in enumerate(times)}
        xs = [datetime.fromtimestamp(t, UTC) for t in times]
        stack = []
        for t in tenants:
            ys = [0.0] * len(times)
            for s in series:
                if s["tenant"] == t:
                    ys[idx[s["at"]]] += s["chip_s"] / 3600.0
            stack.append(ys)
        ax.stackplot(xs, stack, labels=tenants, step="post")
        ax.legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
    ax.set_ylabel("chip-hours per bucket")
    ax.set_title("usage over time by tenant")
    p = d / "usage_by_tenant.png"
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)
    fig, ax = plt.subplots(figsize=(8, 4))
    models = [str(r.get("model")) for r in by_model]
    usd = [r["usd"] if r.get("usd") is not None else 0.0 for r in by_model]
    bars = ax.bar(models, usd, color=["C0" if r.get("usd") is not None else "lightgrey" for r in by_model])
    for b, r in zip(bars, by_model, strict=True):
        if r.get("usd") is None:
            ax.annotate("price unknown", (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("USD")
    ax.set_title("cost by accelerator model")
    p = d / "cost_by_model.png"
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)
    return files
