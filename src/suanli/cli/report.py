"""``suanli report``: what the fleet delivered, to whom, at what energy and cost (from the usage records)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from suanli.accounting.report import COLUMNS, check_format, parse_by, parse_since, render, top, write_outputs
from suanli.cli.client import Client, DataDirOpt, ServerOpt, TokenOpt
from suanli.cli.common import console, err_console
from suanli.errors import SuanliError

SERIES_STEP_S = {True: 86400.0, False: 3600.0}  # day buckets over more than 3 days, else hours


def keep_keys(row: dict[str, Any], by: tuple[str, ...]) -> dict[str, Any]:
    """A row with its grouping key(s) and the report's columns only (the API fills absent keys with null)."""
    keys = [*by, *(["job_name"] if "job" in by else [])]
    return {**{k: row.get(k) for k in keys}, **{k: row.get(k) for k in ("lost_by_cause", *COLUMNS)}}


def report(
    since: Annotated[str, typer.Option("--since", help="window start: 30d, 12h, 2w, 90m or an ISO date")] = "30d",
    until: Annotated[str | None, typer.Option("--until", help="window end (as --since); default now")] = None,
    by: Annotated[str, typer.Option("--by", help="tenant, queue, model, node, llm, kind or job (comma-separated "
                                    "for several; empty: one total row)")] = "tenant",
    fmt: Annotated[str, typer.Option("--format", help="table, csv, markdown or json")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="same as --format json: a list of rows")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write usage.json/csv/md and plots (usage over "
                                             "time by tenant, cost by model) here")] = None,
    top_n: Annotated[int | None, typer.Option("--top", min=0, help="only the N rows with the most chip-hours (0: "
                                              "all); default: all, but 100 for a table or markdown by job")] = None,
    db: Annotated[str | None, typer.Option("--db", help="read this store directly (sqlite:///PATH or "
                                           "postgresql://...) instead of asking the server")] = None,
    fleet: Annotated[Path | None, typer.Option("--fleet", help="with --db: fleet file with the accounting "
                                               "settings (PUE per pool, prices, tariff)")] = None,
    server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Chip-hours, goodput, lost work by cause, energy and cost per tenant, queue, model, node or job."""
    now = time.time()
    t0 = parse_since(since, now)
    t1 = parse_since(until, now, name="--until") if until else now
    if t1 < t0:
        raise SuanliError("--until: before --since")
    keys = parse_by(by)
    fmt = "json" if as_json else check_format(fmt)
    if fleet is not None and db is None:
        raise SuanliError("--fleet: only with --db (the server prices with <data-dir>/fleet.yaml)")
    step = SERIES_STEP_S[t1 - t0 > 3 * 86400] if out is not None else None
    if db is not None:
        from suanli.accounting.pricing import Accounting
        from suanli.control.store import Store
        from suanli.control.usage import make_report

        acct = Accounting.from_file(fleet)
        try:
            store = Store.open(db, migrate=False)
        except Exception as e:  # a bad URL or an unreachable server: one line
            raise SuanliError(f"--db: {e}") from None
        try:
            rep = make_report(store, since=t0, until=t1, by=keys, acct=acct, series_step_s=step)
        except Exception as e:
            raise SuanliError(f"--db: cannot read usage: {str(e).splitlines()[0]}") from None
        finally:
            store.close()
    else:
        params: dict[str, Any] = {"since": _iso(t0), "until": _iso(t1), "by": ",".join(keys)}
        if step:
            params["series_step_s"] = step
        rep = Client(server, token, data_dir).call("GET", "/v1/report", params=params)
    # rows from the store by job have the keys already (250,000 copies cost); the API's have every key
    rows = rep["rows"] if db is not None and keys == ("job",) else [keep_keys(r, keys) for r in rep["rows"]]
    n = top_n if top_n is not None else 100 if "job" in keys and fmt in ("table", "markdown") else None
    shown = top(rows, n)
    sys.stdout.write(render(shown, keys, fmt))
    if len(shown) < len(rows):
        err_console.print(f"the {len(shown)} of {len(rows):,} rows with the most chip-hours (--top 0, or --format csv "
                          "or json, for all; --out writes all)", highlight=False, style="dim")
    if out is not None:
        ctx = {"since": t0, "until": t1, "source": "store" if db else "api", "total": keep_keys(rep["total"], ())}
        write_outputs(out, rows, keys, series=rep.get("series") or [],
                      by_model=[keep_keys(r, ("model",)) for r in rep.get("by_model") or []],
                      mix=[keep_keys(r, ("llm", "kind", "model")) for r in rep.get("mix") or []], context=ctx)
        console.print(f"report written to {out}/ (usage.json, usage.csv, usage.md, usage_by_tenant.png, "
                      "cost_by_model.png)", highlight=False, style="dim")


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()
