"""``suanli services``, ``suanli service NAME``, ``suanli scale NAME --min --max`` (and ``suanli submit`` of a file
with ``kind: service``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from suanli.cli.client import Client, DataDirOpt, JsonOpt, ServerOpt, TokenOpt, _ts
from suanli.cli.common import console, print_json
from suanli.errors import SuanliError


def create_service(text: str, source: str, c: Client, as_json: bool) -> None:
    from suanli.specfile import parse_yaml
    from suanli.workload.service import ServiceSpec

    parse_yaml(text, ServiceSpec, source)  # file:line: field errors before anything is sent
    s = c.call("POST", "/v1/services", content=text.encode(), headers={"Content-Type": "application/yaml"})
    if as_json:
        print_json(s)
        return
    console.print(f"created service [bold]{s['name']}[/] (model {s['model']}, replicas {s['min']}-{s['max']}, "
                  f"starting {s['desired']}); requests: {c.server}/v1/services/{s['name']}/v1/... or "
                  f"{c.server}/v1/chat/completions with model {s['model']!r}", highlight=False)
    if s.get("plan"):
        p = s["plan"]
        console.print(f"  sized by the planner: {p['chips_per_replica']} x {p['accelerator']} per replica, "
                      f"{p['replicas']} replica(s) for the target QPS", highlight=False)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.0f}"


def services(server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
             as_json: bool = JsonOpt) -> None:
    """List services: replicas (ready/desired, min-max), load, requests/s and latency."""
    c = Client(server, token, data_dir)
    items = c.call("GET", "/v1/services")
    if as_json:
        print_json(items)
        return
    t = Table(box=None)
    for col in ("NAME", "TENANT", "MODEL", "READY", "DESIRED", "MIN-MAX", "ONGOING", "REQ/S", "P50 MS", "P99 MS"):
        t.add_column(col)
    for s in items:
        live: dict[str, Any] = s.get("live") or {}
        t.add_row(s["name"], s["tenant"], s["model"], str(live.get("ready", "-")), str(s["desired"]),
                  f"{s['min']}-{s['max']}", str(live.get("ongoing", "-")),
                  f"{live['requests_per_s_1m']:.2f}" if live.get("requests_per_s_1m") is not None else "-",
                  _ms(live.get("latency_p50_s")), _ms(live.get("latency_p99_s")))
    console.print(t)


def service(name: str = typer.Argument(..., help="service name"),
            delete: bool = typer.Option(False, "--delete", help="delete the service (its replicas are stopped)"),
            server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
            as_json: bool = JsonOpt) -> None:
    """One service: its replicas (job, port, state, ready, in flight), load, latency and autoscaler events."""
    c = Client(server, token, data_dir)
    if delete:
        s = c.call("DELETE", f"/v1/services/{name}")
        if as_json:
            print_json(s)
        else:
            console.print(f"deleted service {s['name']}; its replicas are being stopped")
        return
    s = c.call("GET", f"/v1/services/{name}")
    if as_json:
        print_json(s)
        return
    live: dict[str, Any] = s.get("live") or {}
    console.print(f"[bold]{s['name']}[/] (tenant {s['tenant']}, model {s['model']}, generation {s['generation']}): "
                  f"{live.get('ready', 0)} ready of {s['desired']} desired, bounds {s['min']}-{s['max']}",
                  highlight=False)
    if live:
        console.print(f"  load {live['load']:.1f} requests in flight ({live['waiting_for_replica']} waiting for a "
                      f"replica); {live['requests']} requests, {live['errors']} errors, {live['retries']} retried "
                      f"on another replica; last minute {live['requests_per_s_1m']:.2f} req/s, latency p50 "
                      f"{_ms(live['latency_p50_s'])} ms p99 {_ms(live['latency_p99_s'])} ms, first byte p50 "
                      f"{_ms(live['ttfb_p50_s'])} ms", highlight=False)
        a = live.get("autoscaler")
        if a:
            console.print(f"  autoscaler: {a['reason']}" + (" [bold red](panic)[/]" if a["panicking"] else ""),
                          highlight=False)
        t = Table(box=None)
        for col in ("REPLICA", "JOB", "PORT", "GEN", "STATE", "READY", "IN FLIGHT", "SERVED", "ENGINE RUN/WAIT"):
            t.add_column(col)
        for r in live.get("replicas", []):
            eng = "-" if r["engine_running"] is None else f"{r['engine_running']:g}/{r['engine_waiting'] or 0:g}"
            st = r["state"] + (" (stopping)" if r["stopping"] else "")
            t.add_row(str(r["replica"]), str(r["job_id"]), str(r["port"]), str(r["generation"]), st,
                      "yes" if r["ready"] else "no", str(r["outstanding"]), str(r["served"]), eng)
        console.print(t)
        for e in live.get("events", [])[-8:]:
            console.print(f"  {_ts(e['at'])}  {e['message']}", highlight=False)


def scale(name: str = typer.Argument(..., help="service name"),
          min_: int = typer.Option(None, "--min", min=0, help="fewest replicas (0: scale to zero when idle)"),
          max_: int = typer.Option(None, "--max", min=1, help="most replicas"),
          server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
          as_json: bool = JsonOpt) -> None:
    """Change a service's replica bounds."""
    if min_ is None and max_ is None:
        raise SuanliError("give --min, --max or both")
    body = {k: v for k, v in (("min", min_), ("max", max_)) if v is not None}
    s = Client(server, token, data_dir).call("PATCH", f"/v1/services/{name}", json=body)
    if as_json:
        print_json(s)
    else:
        console.print(f"service {s['name']}: replicas {s['min']}-{s['max']}, desired {s['desired']}")


def register(app: typer.Typer) -> None:
    for fn in (services, service, scale):
        app.command(fn.__name__)(fn)
