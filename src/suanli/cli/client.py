"""The CLI client of the REST API: submit, jobs, job, logs, cancel, nodes, queues, tenants, tokens.

Server and token: ``--server``/``--token``, else ``SUANLI_SERVER``/``SUANLI_TOKEN``, else the local admin credentials
that ``suanli up`` wrote into ``./.suanli/`` (or ``--data-dir``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from suanli.cli.common import console, err_console, print_json
from suanli.errors import SuanliError

ServerOpt = typer.Option(None, "--server", help="API URL (env SUANLI_SERVER; default from ./.suanli/)")
TokenOpt = typer.Option(None, "--token", help="bearer token (env SUANLI_TOKEN; default: ./.suanli/admin.token)")
DataDirOpt = typer.Option(Path(".suanli"), "--data-dir", help="where `suanli up` keeps its files")
JsonOpt = typer.Option(False, "--json", help="JSON output")


class Client:
    def __init__(self, server: str | None, token: str | None, data_dir: Path = Path(".suanli")) -> None:
        server = server or os.environ.get("SUANLI_SERVER") or None
        token = token or os.environ.get("SUANLI_TOKEN") or None
        ca: str | None = os.environ.get("SUANLI_CA_CERT") or None  # a private CA or self-signed certificate
        if server is None:
            f = data_dir / "server.json"
            try:
                info = json.loads(f.read_text())
                server = info["url"]
            except (OSError, ValueError, KeyError, TypeError):
                raise SuanliError(f"no server: pass --server, set SUANLI_SERVER, or run `suanli up` here "
                                  f"(looked for {f})") from None
            ca = ca or info.get("ca")
        if token is None:
            f = data_dir / "admin.token"
            try:
                token = f.read_text().strip()
            except OSError:
                raise SuanliError(f"no token: pass --token, set SUANLI_TOKEN, or run `suanli up` here "
                                  f"(looked for {f})") from None
        self.server = server.rstrip("/")
        verify: Any = True
        if ca:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                raise SuanliError(f"CA certificate {ca}: {e}") from None
        self.http = httpx.Client(base_url=self.server, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 verify=verify)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise SuanliError(f"cannot reach {self.server}: {e}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise SuanliError(f"{r.status_code}: {detail}")
        if "json" in r.headers.get("content-type", ""):
            return r.json()
        return r.text


def _ts(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M:%S")


_STATE_STYLE = {"running": "green", "succeeded": "bold green", "failed": "red", "cancelled": "dim",
                "pending": "yellow", "requeued": "yellow", "preempted": "magenta"}


def _jobs_table(items: list[dict[str, Any]]) -> Table:
    t = Table(box=None)
    for c in ("ID", "NAME", "TENANT", "QUEUE", "PRI", "STATE", "TRIES", "EXIT", "SUBMITTED", "REASON"):
        t.add_column(c)
    for j in items:
        st = j["state"]
        # as squeue: why a waiting job waits (the scheduler's code); why an ended one ended
        reason = j.get("reason") or ""
        t.add_row(str(j["id"]), escape(j["name"]), j["tenant"], j["queue"], str(j["priority"]),
                  f"[{_STATE_STYLE.get(st, '')}]{st}[/]", str(j["attempts"]),
                  "" if j["exit_code"] is None else str(j["exit_code"]), _ts(j["submit_time"]), escape(reason))
    return t


def submit(file: Path = typer.Argument(..., help="job file (YAML or JSON)"), server: str = ServerOpt,
           token: str = TokenOpt, data_dir: Path = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Submit a job file (a file with `kind: service` creates a service)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SuanliError(f"{file}: cannot read: {e}") from None
    from suanli.specfile import load_bounded, parse_yaml
    from suanli.workload.spec import JobSpec

    data, _ = load_bounded(text, str(file))
    if isinstance(data, dict) and data.get("kind") == "service":
        from suanli.cli.services import create_service

        create_service(text, str(file), Client(server, token, data_dir), as_json)
        return
    parse_yaml(text, JobSpec, str(file))  # file:line: field errors before anything is sent
    c = Client(server, token, data_dir)
    j = c.call("POST", "/v1/jobs", content=text.encode(), headers={"Content-Type": "application/yaml"})
    if as_json:
        print_json(j)
    else:
        console.print(f"submitted job [bold]{j['id']}[/] ({j['name']}) to queue {j['queue']}")


def jobs(state: list[str] = typer.Option(None, "--state", "-s", help="filter (repeatable)"),
         queue: str = typer.Option(None, "--queue", "-q"), tenant: str = typer.Option(None, "--tenant", "-t"),
         limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000), after: int = typer.Option(None, "--after"),
         server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
         as_json: bool = JsonOpt) -> None:
    """List jobs, newest first."""
    c = Client(server, token, data_dir)
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    if queue:
        params["queue"] = queue
    if tenant:
        params["tenant"] = tenant
    if after:
        params["after"] = after
    out = c.call("GET", "/v1/jobs", params=params)
    if as_json:
        print_json(out)
        return
    console.print(_jobs_table(out["items"]))
    if out["next"]:
        console.print(f"[dim]more: --after {out['next']}[/]")


def job(job_id: int = typer.Argument(..., min=1), server: str = ServerOpt, token: str = TokenOpt,
        data_dir: Path = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """One job: its state, attempts and events."""
    c = Client(server, token, data_dir)
    j = c.call("GET", f"/v1/jobs/{job_id}")
    ev = c.call("GET", f"/v1/jobs/{job_id}/events")
    if as_json:
        print_json({**j, "events": ev})
        return
    console.print(_jobs_table([j]))
    if j.get("reason_detail"):
        console.print(f"waiting: {escape(j['reason_detail'])}")
    spec = j["spec"]
    console.print(f"command: {' '.join(spec['command'])}   resources: {spec['resources']}")
    for a in j.get("attempt_list", []):
        pl = a["placement"]
        console.print(f"attempt {a['n']}: {_ts(a['started_at'])} -> {_ts(a['ended_at'])} {a['outcome'] or 'running'}"
                      f" exit={a['exit_code']} devices={pl['model'] or 'cpu'} {pl['local']}")
    t = Table(box=None, title="events")
    for col in ("AT", "KIND", "MESSAGE"):
        t.add_column(col)
    for e in ev:
        t.add_row(_ts(e["at"]), e["kind"], e["message"])
    console.print(t)


def logs(job_id: int = typer.Argument(..., min=1), follow: bool = typer.Option(False, "--follow", "-f"),
         tail: int = typer.Option(0, "--tail", min=0, help="last N lines (0: all)"),
         attempt: int = typer.Option(None, "--attempt", min=1), rank: int = typer.Option(0, "--rank", min=0),
         server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt) -> None:
    """A job's output (stdout+stderr of rank 0 of the latest attempt by default); -f follows it."""
    c = Client(server, token, data_dir)
    params: dict[str, Any] = {"tail": tail, "rank": rank, "follow": follow}
    if attempt:
        params["attempt"] = attempt
    if not follow:
        sys.stdout.write(c.call("GET", f"/v1/jobs/{job_id}/logs", params=params))
        return
    try:
        with c.http.stream("GET", f"/v1/jobs/{job_id}/logs", params=params, timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                raise SuanliError(f"{r.status_code}: {r.json().get('detail')}")
            for chunk in r.iter_bytes():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    except httpx.HTTPError as e:
        raise SuanliError(f"cannot reach {c.server}: {e}") from None
    except KeyboardInterrupt:
        pass


def cancel(job_id: int = typer.Argument(..., min=1), wait: bool = typer.Option(False, "--wait", "-w"),
           server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
           as_json: bool = JsonOpt) -> None:
    """Cancel a job (its processes are stopped)."""
    c = Client(server, token, data_dir)
    j = c.call("POST", f"/v1/jobs/{job_id}/cancel")
    while wait and j["state"] not in ("cancelled", "succeeded", "failed"):
        time.sleep(0.2)
        j = c.call("GET", f"/v1/jobs/{job_id}")
    if as_json:
        print_json(j)
    else:
        console.print(f"job {job_id}: cancel requested (state {j['state']})")


def nodes(drain: str = typer.Option(None, "--drain", help="drain this node (admin)"),
          undrain: str = typer.Option(None, "--undrain", help="undrain this node (admin)"),
          limit: int = typer.Option(200, "--limit", "-n", min=1, max=10_000, help="at most this many nodes"),
          after: str = typer.Option(None, "--after", help="page: nodes named after this one"),
          status: str = typer.Option(None, "--status", help="filter: up or lost"),
          accelerator: str = typer.Option(None, "--accelerator", help="filter: this model"),
          unhealthy: bool = typer.Option(False, "--unhealthy", help="list the unhealthy devices (with reasons)"),
          update: str = typer.Option(None, "--update", help="change this node's partitions (admin): with "
                                     "--partition, --no-partitions or --reset-partitions"),
          partition: list[str] = typer.Option(None, "--partition", help="--update: a partition the node belongs to "
                                              "from now on (repeatable, or comma-separated); replaces the ones it "
                                              "reports until --reset-partitions"),
          no_partitions: bool = typer.Option(False, "--no-partitions", help="--update: in no partition"),
          reset_partitions: bool = typer.Option(False, "--reset-partitions", help="--update: clear the admin's "
                                                "partitions; the node's own (suanli up --partition, Ray label "
                                                "suanli.io/partitions, fleet file) apply again"),
          server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
          as_json: bool = JsonOpt) -> None:
    """Nodes (a page of them: --limit, --after) and, with --unhealthy, the devices that are down and why.
    --update NODE sets its partitions (admin)."""
    how = sum((bool(partition), no_partitions, reset_partitions))
    if update is None and how:
        raise SuanliError("--partition, --no-partitions and --reset-partitions go with --update NODE")
    if update is not None and how != 1:
        raise SuanliError("--update NODE: give one of --partition NAME, --no-partitions or --reset-partitions")
    body: dict[str, Any] | None = None
    if update is not None:
        from suanli.control.executors.base import parse_partitions

        parts = None if reset_partitions else list(parse_partitions(partition or ()))
        if parts == [] and not no_partitions:
            raise SuanliError("--partition: no partition name given (--no-partitions puts the node in none)")
        body = {"partitions": parts}
    c = Client(server, token, data_dir)
    if drain:
        c.call("POST", f"/v1/nodes/{drain}/drain")
    if undrain:
        c.call("POST", f"/v1/nodes/{undrain}/undrain")
    if update is not None:
        c.call("PATCH", f"/v1/nodes/{update}", json=body)
    params: dict[str, Any] = {"limit": limit + 1}
    for k, v in (("after", after), ("status", status), ("accelerator", accelerator)):
        if v:
            params[k] = v
    ns = c.call("GET", "/v1/nodes", params=params)
    more = len(ns) > limit
    ns = ns[:limit]
    bad = c.call("GET", "/v1/devices", params={"health": "unhealthy", "limit": 10_000}) if unhealthy or as_json else []
    if as_json:
        print_json({"nodes": ns, "unhealthy_devices": bad, "next": ns[-1]["name"] if more and ns else None})
        return
    down: dict[str, int] = {}
    for d in c.call("GET", "/v1/devices", params={"health": "unhealthy", "limit": 10_000}):
        down[d["node"]] = down.get(d["node"], 0) + 1
    t = Table(box=None)
    for col in ("NODE", "ACCELERATOR", "DEVICES", "DOWN", "CPUS", "MEMORY", "SOURCE", "STATUS", "DRAINED",
                "PARTITIONS"):
        t.add_column(col)
    for n in ns:
        src = "virtual" if n["name"].startswith("virt-") else ("declared" if n["declared"] else "discovered")
        st = n.get("status", "up")
        parts = escape(",".join(n.get("partitions") or []) or "-")
        if n.get("partitions_override") is not None:
            parts += " [dim](admin)[/]"
        t.add_row(escape(n["name"]), n["accelerator"] or "-", str(n["devices"]), str(down.get(n["name"], "")) or "",
                  f"{n['cpu_milli'] / 1000:g}", f"{n['memory_mib'] / 1024:.0f}Gi", src,
                  f"[red]{st}[/]" if st != "up" else st, "yes" if n["drained"] else "", parts)
    console.print(t)
    if more:
        console.print(f"[dim]more: --after {ns[-1]['name']}[/]")
    if unhealthy:
        u = Table(box=None)
        for col in ("NODE", "DEVICE", "MODEL", "REASON"):
            u.add_column(col)
        for d in bad:
            u.add_row(d["node"], str(d["local_index"]), d["model"], d.get("health_reason") or "")
        console.print(u if bad else "no unhealthy devices")


def queues(create: str = typer.Option(None, "--create", help="create a queue (admin)"),
           update: str = typer.Option(None, "--update", help="update a queue (admin)"),
           weight: float = typer.Option(None, "--weight"),
           quota: list[str] = typer.Option(None, "--quota", help="MODEL=N (repeatable)"),
           partition: list[str] = typer.Option(None, "--partition", help="a partition its jobs may use "
                                               "(repeatable; --partition '*' puts it back on any node)"),
           server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
           as_json: bool = JsonOpt) -> None:
    """Queues (weights, quotas per accelerator model, partitions)."""
    c = Client(server, token, data_dir)
    q: dict[str, int] | None = None
    if quota:
        q = {}
        for item in quota:
            k, _, v = item.partition("=")
            try:
                q[k] = int(v)
            except ValueError:
                raise SuanliError(f"--quota {item!r}: use MODEL=N") from None
    parts: list[str] | None = None
    if partition:
        parts = [] if partition == ["*"] else [x.strip() for p in partition for x in p.split(",") if x.strip()]
    if create:
        body: dict[str, Any] = {"name": create, "quota": q or {}}
        if weight is not None:
            body["weight"] = weight
        if parts:
            body["partitions"] = parts
        c.call("POST", "/v1/queues", json=body)
    if update:
        body = {k: v for k, v in (("weight", weight), ("quota", q), ("partitions", parts)) if v is not None}
        c.call("PATCH", f"/v1/queues/{update}", json=body)
    if parts:  # a partition no node is in: the queue's jobs are refused (or wait) until an admin puts one there
        have = {p for n in c.call("GET", "/v1/nodes", params={"limit": 10_000}) for p in n.get("partitions") or ()}
        for p in dict.fromkeys(parts):
            if p not in have:
                err_console.print(f"[bold yellow]warning:[/] no node is in partition {escape(p)}: jobs of queue "
                                  f"{escape(create or update)} that may use only it can never run until one is "
                                  f"(suanli nodes --update NODE --partition {escape(p)})", highlight=False)
    out = c.call("GET", "/v1/queues")
    if as_json:
        print_json(out)
        return
    t = Table(box=None)
    for col in ("QUEUE", "WEIGHT", "QUOTA", "BORROW", "PARTITIONS"):
        t.add_column(col)
    for x in out:
        t.add_row(x["name"], f"{x['weight']:g}", ", ".join(f"{k}={v}" for k, v in x["quota"].items()) or "-",
                  "yes" if x["borrow"] else "no", ",".join(x.get("partitions") or []) or "any")
    console.print(t)


def tenants(create: str = typer.Option(None, "--create", help="create a tenant and print its token (admin)"),
            server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
            as_json: bool = JsonOpt) -> None:
    """Tenants (admin)."""
    c = Client(server, token, data_dir)
    created = c.call("POST", "/v1/tenants", json={"name": create}) if create else None
    out = c.call("GET", "/v1/tenants")
    if as_json:
        print_json({"tenants": out, "created": created} if created else out)
        return
    if created:
        console.print(f"tenant {created['name']} created; its token (shown once): [bold]{created['token']}[/]")
    t = Table(box=None)
    t.add_column("TENANT")
    t.add_column("CREATED")
    for x in out:
        t.add_row(x["name"], _ts(x["created_at"]))
    console.print(t)


def tokens(tenant: str = typer.Option(None, "--tenant", "-t", help="only this tenant's tokens"),
           revoke: int = typer.Option(None, "--revoke", min=1, help="revoke the token with this id"),
           rotate: str = typer.Option(None, "--rotate", help="revoke every token of this tenant and print a new one"),
           server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt,
           as_json: bool = JsonOpt) -> None:
    """Tokens (admin): list them (never their value), revoke one, or rotate a tenant's. The local admin token is
    rotated with `suanli up --rotate-admin-token`."""
    c = Client(server, token, data_dir)
    if revoke is not None and rotate is not None:
        raise SuanliError("--revoke and --rotate: one at a time")
    if revoke is not None:
        out = c.call("DELETE", f"/v1/tokens/{revoke}")
        if as_json:
            print_json(out)
        else:
            console.print(f"token {out['id']} ({out['tenant'] or 'admin'}, {out['label']}) revoked")
        return
    if rotate is not None:
        out = c.call("POST", f"/v1/tenants/{rotate}/tokens/rotate")
        if as_json:
            print_json(out)
        else:
            console.print(f"every token of tenant {out['tenant']} revoked; the new one (shown once): "
                          f"[bold]{out['token']}[/]")
        return
    items = c.call("GET", "/v1/tokens", params={"tenant": tenant} if tenant else None)
    if as_json:
        print_json(items)
        return
    t = Table(box=None)
    for col in ("ID", "TENANT", "LABEL", "CREATED"):
        t.add_column(col)
    for x in items:
        t.add_row(str(x["id"]), "(admin)" if x["admin"] else x["tenant"], x["label"], _ts(x["created_at"]))
    console.print(t)


def register(app: typer.Typer) -> None:
    for fn in (submit, jobs, job, logs, cancel, nodes, queues, tenants, tokens):
        app.command(fn.__name__)(fn)
