"""``suanli replay``: submit a trace's jobs through the public API at their arrival times, wait for them, report.

Arrival times are on the server's clock: the server says its speed (``/healthz`` -> ``virtual.speed``; 1 for a
real fleet), and a job that arrives ``t`` trace seconds after the first is submitted ``t / speed`` wall seconds
after it. Times in the report are in the server's (virtual) seconds, as ``suanli sim`` reports them, so the two can
be compared. Submissions run concurrently (bounded, asyncio + httpx), traffic only to the given server.

Each job is the trace row as a job spec: its devices (count, share, per node), CPU and memory, priority, kind,
gang, preemptibility, the runtime estimate (``expected_runtime``, an oracle when the trace has none, as the twin
assumes) and ``simulate.duration`` = the trace's duration (a virtual fleet runs it for that long; a real one runs
``sleep DURATION``).

What the twin sees, the live run sees (both off with ``--no-models`` / ``--no-tenants``):

- **Accelerator models.** A job whose trace row names GPU models keeps the constraint, restricted to the models
  the server has (:func:`fit_models`); a job whose models the server has none of loses it (it would never run;
  the count is reported). ``suanli sim`` on the same cluster gets the same constraint from :func:`fit_models`.
- **Tenants and queues.** The trace's user / VC / cluster column (whatever the twin reads as the tenant) becomes
  the job's ``tenant`` and its ``queue``, both of that name (made API-safe by :func:`api_names`), as the twin
  gives each tenant its own queue; missing tenants and queues are created through the admin API first
  (:func:`ensure_tenants`, which needs an admin token).

The summary (``--json``) has exactly: submitted, accepted, finished (succeeded), failed (failed or cancelled),
lost (accepted but not terminal at the end, or missing from the store), avg_jct_s, avg_queue_s, makespan_s,
wall_s. ``--results FILE`` writes one JSON line per job.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from suanli.cli.client import DataDirOpt, JsonOpt, ServerOpt, TokenOpt
from suanli.cli.common import console, print_json
from suanli.errors import SuanliError

SUMMARY_KEYS = ("submitted", "accepted", "finished", "failed", "lost", "avg_jct_s", "avg_queue_s", "makespan_s",
                "wall_s")
LIVE_STATES = ("pending", "running", "requeued", "preempted")
TERMINAL = ("succeeded", "failed", "cancelled")
_API_KIND = {"finetune": "train", "eval": "batch"}  # the twin's kinds the API folds into its own


_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def api_names(names: list[str]) -> list[str]:
    """Trace tenant names as API names (letters, digits, '.', '_', '-', starting alphanumeric, <= 128), distinct
    (a clash after cleaning gets a ``-2``, ``-3`` suffix)."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in names:
        n = _BAD.sub("-", str(raw)).strip("-._")[:120] or "default"
        if not n[0].isalnum():
            n = "t" + n
        base, k = n, 2
        while n in seen:
            n, k = f"{base}-{k}", k + 1
        seen.add(n)
        out.append(n)
    return out


def fit_models(w: Any, have: set[str]) -> tuple[Any, int]:
    """The workload with each job's accelerator-model set restricted to the models in ``have`` (the server's); a
    job none of whose models is there loses its constraint. Returns (workload, jobs whose constraint was dropped).
    Models compare by catalog key (``h100`` and ``H100`` are one)."""
    import numpy as np

    from suanli.fleet.model import canonical_model

    have_c = {canonical_model(m): m for m in have}
    sets: list[tuple[str, ...]] = []
    remap = np.full(len(w.model_sets) + 1, -1, dtype=np.int32)  # old index (+1: -1 -> slot 0) -> new
    for k, ms in enumerate(w.model_sets):
        keep = tuple(dict.fromkeys(have_c[c] for c in (canonical_model(m) for m in ms) if c in have_c))
        if keep:
            if keep not in sets:
                sets.append(keep)
            remap[k + 1] = sets.index(keep)
    out = w.take(slice(None))
    old = np.asarray(w.models, dtype=np.int64)
    out.models = remap[old + 1].astype(w.models.dtype)
    out.model_sets = sets
    return out, int(((old >= 0) & (out.models < 0)).sum())


def trace_specs(w: Any, *, keep_models: bool = False, tenants: bool = False,
                name: str = "replay") -> list[tuple[float, dict[str, Any]]]:
    """(arrival offset in trace seconds, job spec) per job of a :class:`~suanli.sim.workload.Workload`;
    ``keep_models``: carry the model sets (fit them to the server first, :func:`fit_models`); ``tenants``: the
    trace's tenant as the job's tenant and queue (:func:`api_names`)."""
    from suanli.sim.workload import KINDS

    if len(w) == 0:
        return []
    t0 = float(w.submit[0])
    tnames = api_names(list(w.tenants)) if tenants else []
    out: list[tuple[float, dict[str, Any]]] = []
    for i in range(len(w)):
        cnt, milli, pn = int(w.count[i]), int(w.milli[i]), int(w.per_node[i])
        dur = max(0.0, float(w.duration[i]))
        res: dict[str, Any] = {"cpu": round(int(w.cpu_milli[i]) / 1000.0, 3),
                               "memory": f"{max(0, int(w.mem_mib[i]))}Mi"}
        if cnt == 1 and milli < 1000:
            res["accelerators"], res["milli"] = 1, milli
        else:
            res["accelerators"] = cnt
        if pn > 0 and cnt:
            res["per_node"] = min(pn, cnt)
        ms = int(w.models[i])
        if keep_models and ms >= 0:
            res["model"] = list(w.model_sets[ms])
        est = float(w.estimate[i])
        kind = KINDS[int(w.kind[i])]
        spec: dict[str, Any] = {
            "name": f"{name}-{i}", "priority": max(-1000, min(1000, int(w.priority[i]))),
            "kind": _API_KIND.get(kind, kind),
            "resources": res, "preemptible": bool(w.preemptible[i]), "command": ["sleep", f"{dur:g}"],
            "simulate": {"duration": dur},
        }
        if tenants:
            spec["tenant"] = spec["queue"] = tnames[int(w.tenant[i])]
        if cnt > 1:
            spec["gang"] = bool(w.gang[i])
        if est == est and math.isfinite(est):
            spec["expected_runtime"] = max(0.0, est)
        out.append((float(w.submit[i]) - t0, spec))
    return out


def server_fleet(server: str, token: str) -> tuple[set[str], int]:
    """(accelerator models, devices) of the server's nodes that are up, paging ``/v1/nodes``."""
    import httpx

    models: set[str] = set()
    devices = 0
    after: str | None = None
    with httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while True:
            params: dict[str, Any] = {"limit": 5000, "status": "up"}
            if after:
                params["after"] = after
            resp = c.get("/v1/nodes", params=params)
            if resp.status_code != 200:
                raise SuanliError(f"{server}: GET /v1/nodes: {resp.status_code} {resp.text[:200]}")
            page = resp.json()
            for n in page:
                if n["accelerator"] and n["devices"]:
                    models.add(n["accelerator"])
                    devices += int(n["devices"])
            if len(page) < 5000:
                return models, devices
            after = page[-1]["name"]


def ensure_tenants(server: str, token: str, names: list[str]) -> list[str]:
    """Create the tenants and the queues of these names that the server lacks (admin API); returns those created."""
    import httpx

    made: list[str] = []
    with httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for kind, path in (("tenant", "/v1/tenants"), ("queue", "/v1/queues")):
            resp = c.get(path)
            if resp.status_code != 200:
                raise SuanliError(f"{server}: GET {path}: {resp.status_code} {resp.text[:200]}"
                                  + (" (creating the trace's tenants needs an admin token; or --no-tenants)"
                                     if resp.status_code in (401, 403) else ""))
            have = {x["name"] for x in resp.json()}
            for n in names:
                if n in have:
                    continue
                r = c.post(path, json={"name": n})
                if r.status_code not in (201, 409):  # 409: made meanwhile
                    raise SuanliError(f"{server}: POST {path} {n!r}: {r.status_code} {r.text[:200]}"
                                      + (" (creating the trace's tenants needs an admin token; or --no-tenants)"
                                         if r.status_code in (401, 403) else ""))
                made.append(f"{kind} {n}")
    return made


@dataclass
class Replay:
    """The state of one replay (also what the benchmarks read)."""

    speed: float = 1.0
    submitted: int = 0
    accepted: dict[int, int] = field(default_factory=dict)  # trace index -> job id
    errors: dict[int, str] = field(default_factory=dict)  # trace index -> why the API refused it
    submit_lat_s: list[float] = field(default_factory=list)
    api_lat_s: dict[str, list[float]] = field(default_factory=dict)  # "submit" / "get" / "list" -> seconds
    lag_s: list[float] = field(default_factory=list)  # how late each submission left (driver behind schedule)
    jobs: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # job id -> final record (None: missing)
    ambiguous: dict[int, str] = field(default_factory=dict)  # sent, but the answer was lost (server restarting)
    duplicates: int = 0  # trace jobs found stored more than once (a retried submission that had been committed)
    wall_s: float = 0.0
    t0_wall: float = 0.0  # wall time (time.time) at which trace time 0 was due: the origin of the virtual timeline
    timed_out: bool = False

    def lat(self, kind: str, dt: float) -> None:
        self.api_lat_s.setdefault(kind, []).append(dt)


async def _call(c: Any, r: Replay, kind: str, method: str, path: str, *, deadline: float = math.inf,
                **kw: Any) -> Any:
    """One request; while the server is unreachable (a restart) it is tried again until ``deadline``: always when
    the connection failed (nothing was sent), and for GETs (idempotent) on any transport error."""
    import httpx

    while True:
        t = time.perf_counter()
        try:
            resp = await c.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        except httpx.TransportError:
            if method != "GET" or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        if resp.status_code >= 500 and method == "GET" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            continue
        r.lat(kind, time.perf_counter() - t)
        return resp


async def run_replay(server: str, token: str, items: list[tuple[float, dict[str, Any]]], *, timeout_s: float = 3600,
                     concurrency: int = 32, poll_s: float = 1.0, speed: float | None = None,
                     progress: Any = None, fetch: bool = True) -> Replay:
    """Submit ``items`` at their arrival offsets (on the server's clock), wait until all are terminal or
    ``timeout_s`` (wall) passed, then read every accepted job back (``fetch``)."""
    import httpx

    r = Replay()
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                 timeout=60, limits=limits) as c:
        if speed is None:
            try:
                h = (await c.get("/healthz")).json()
            except (httpx.HTTPError, ValueError) as e:
                raise SuanliError(f"cannot reach {server}: {e}") from None
            speed = float(((h.get("virtual") or {}).get("speed")) or 1.0)
        r.speed = speed
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()
        r.t0_wall = time.time()
        end = t0 + timeout_s

        async def submit(i: int, spec: dict[str, Any]) -> None:
            async with sem:
                r.submitted += 1
                try:
                    resp = await _call(c, r, "submit", "POST", "/v1/jobs", json=spec, deadline=end)
                except httpx.HTTPError as e:
                    r.ambiguous[i] = f"transport: {type(e).__name__}: {e}"
                    return
                if resp.status_code == 201:
                    r.accepted[i] = int(resp.json()["id"])
                else:
                    try:
                        r.errors[i] = f"{resp.status_code}: {resp.json().get('detail')}"
                    except ValueError:
                        r.errors[i] = f"{resp.status_code}: {resp.text[:200]}"
                if progress is not None:
                    progress("submitted", r.submitted, len(items))

        tasks: list[asyncio.Task[None]] = []
        for i, (at, spec) in enumerate(items):
            due = t0 + at / speed
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            r.lag_s.append(max(0.0, time.monotonic() - due))
            tasks.append(asyncio.create_task(submit(i, spec)))
            if len(tasks) >= 4096:
                await asyncio.gather(*[t for t in tasks if not t.done()])
                tasks = []
        await asyncio.gather(*tasks)

        if r.ambiguous:  # the answer was lost: was it stored? (names are unique per trace job)
            await _resolve_ambiguous(c, r, items, end)
        ours = set(r.accepted.values())
        while True:  # wait until none of ours is live
            live: set[int] = set()
            after: int | None = None
            while True:
                params: dict[str, Any] = {"state": list(LIVE_STATES), "limit": 1000}
                if after:
                    params["after"] = after
                resp = await _call(c, r, "list", "GET", "/v1/jobs", params=params, deadline=end)
                page = resp.json()
                live.update(j["id"] for j in page["items"])
                after = page["next"]
                if not after:
                    break
            left = len(ours & live)
            if progress is not None:
                progress("finished", len(ours) - left, len(ours))
            if left == 0:
                break
            if time.monotonic() >= end:
                r.timed_out = True
                break
            await asyncio.sleep(poll_s)
        r.wall_s = time.monotonic() - t0

    if fetch:
        await fetch_jobs(server, token, r, concurrency=concurrency, progress=progress)
    return r


async def fetch_jobs(server: str, token: str, r: Replay, *, concurrency: int = 32, progress: Any = None) -> None:
    """Read every accepted job back (state, attempts) into ``r.jobs``."""
    import httpx

    ours = sorted(set(r.accepted.values()))
    sem = asyncio.Semaphore(concurrency)
    end = time.monotonic() + 1800
    async with httpx.AsyncClient(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) as c:
        async def get(jid: int) -> None:
            async with sem:
                resp = await _call(c, r, "get", "GET", f"/v1/jobs/{jid}", deadline=end)
                r.jobs[jid] = resp.json() if resp.status_code == 200 else None
                if progress is not None:
                    progress("fetched", len(r.jobs), len(ours))

        await asyncio.gather(*(get(j) for j in ours))


async def _resolve_ambiguous(c: Any, r: Replay, items: list[tuple[float, dict[str, Any]]], end: float) -> None:
    by_name = {items[i][1]["name"]: i for i in r.ambiguous}
    seen: dict[str, list[int]] = {}
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = (await _call(c, r, "list", "GET", "/v1/jobs", params=params, deadline=end)).json()
        for j in page["items"]:
            if j["name"] in by_name:
                seen.setdefault(j["name"], []).append(int(j["id"]))
        after = page["next"]
        if not after:
            break
    for name, ids in seen.items():
        i = by_name[name]
        r.accepted[i] = min(ids)
        r.duplicates += len(ids) - 1
        del r.ambiguous[i]
    for i, why in r.ambiguous.items():
        r.errors[i] = f"not stored ({why})"


def job_rows(r: Replay, items: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per trace job: ids, state, and its times in server seconds (wall x speed)."""
    rows = []
    for i, (at, spec) in enumerate(items):
        row: dict[str, Any] = {"index": i, "arrival_s": at, "name": spec["name"]}
        jid = r.accepted.get(i)
        if jid is None:
            row.update(state="refused", error=r.errors.get(i))
            rows.append(row)
            continue
        j = r.jobs.get(jid)
        row["id"] = jid
        if j is None:
            row["state"] = "missing"
            rows.append(row)
            continue
        att = j.get("attempt_list") or []
        starts = [a["started_at"] for a in att if a.get("started_at") is not None]
        row.update(state=j["state"], attempts=j["attempts"], exit_code=j["exit_code"], submit_wall=j["submit_time"])
        if starts:
            row["queue_s"] = (min(starts) - j["submit_time"]) * r.speed
        if j["state"] in TERMINAL:
            row["end_wall"] = j["updated_at"]
            row["jct_s"] = (j["updated_at"] - j["submit_time"]) * r.speed
        busy = 0.0
        for a in att:
            if a.get("started_at") is None or a.get("ended_at") is None:
                continue
            pl = a.get("placement") or {}
            devs = sum(len(x) for x in pl.get("local", [])) * (pl.get("milli", 1000) / 1000.0)
            busy += (a["ended_at"] - a["started_at"]) * r.speed * devs
        row["device_s"] = busy
        rows.append(row)
    return rows


def summarize(r: Replay, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [x for x in rows if x.get("state") == "succeeded"]
    bad = [x for x in rows if x.get("state") in ("failed", "cancelled")]
    lost = [x for x in rows if "id" in x and x.get("state") not in TERMINAL]
    jct = [x["jct_s"] for x in ok]
    qd = [x["queue_s"] for x in ok if "queue_s" in x]
    subs = [x["submit_wall"] for x in rows if "submit_wall" in x]
    ends = [x["end_wall"] for x in rows if "end_wall" in x]
    makespan = (max(ends) - min(subs)) * r.speed if subs and ends else 0.0
    return {
        "submitted": r.submitted, "accepted": len(r.accepted), "finished": len(ok), "failed": len(bad),
        "lost": len(lost), "avg_jct_s": sum(jct) / len(jct) if jct else 0.0,
        "avg_queue_s": sum(qd) / len(qd) if qd else 0.0, "makespan_s": max(0.0, makespan), "wall_s": r.wall_s,
    }


def replay(
    trace: Path = typer.Option(..., "--trace", help="trace file (any format `suanli sim` reads)"),
    fmt: str = typer.Option("auto", "--format", help="trace format (default: detected)"),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="first N jobs of the trace"),
    timeout: float = typer.Option(3600.0, "--timeout", min=1.0, help="wall seconds to wait for the jobs to end"),
    cap_duration: str = typer.Option(None, "--cap-duration", help="cap each job's duration (seconds, or 90s / 6h "
                                     "/ 2d) before --load: a few multi-week jobs otherwise set the makespan"),
    models: bool = typer.Option(True, "--models/--no-models", help="carry the trace's accelerator-model "
                                "constraints, restricted to the models the server has (--no-models: drop them)"),
    tenants: bool = typer.Option(True, "--tenants/--no-tenants", help="submit each job as the trace's tenant "
                                 "(user / VC), into a queue of that name, creating both when missing (admin token); "
                                 "--no-tenants: everything as the default tenant and queue"),
    load: float = typer.Option(None, "--load", min=0.01, max=100.0, help="rescale the arrivals so that the trace "
                               "offers this load to the server's devices (e.g. 0.9); default: the trace's own times"),
    concurrency: int = typer.Option(32, "--concurrency", min=1, max=1024, help="submissions in flight"),
    results: Path = typer.Option(None, "--results", help="write one JSON line per job here"),
    server: str = ServerOpt, token: str = TokenOpt, data_dir: Path = DataDirOpt, as_json: bool = JsonOpt,
) -> None:
    """Replay a trace through the API at its arrival times (on the server's clock) and report JCT, queueing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from suanli.cli.client import Client
    from suanli.sim.traces import TraceError, read_trace

    try:
        w = read_trace(trace, fmt, limit=limit)
    except (TraceError, OSError, ValueError) as e:
        raise SuanliError(f"--trace: {e}") from None
    if cap_duration is not None:
        import numpy as np

        from suanli.workload.spec import parse_duration_s

        try:
            cap = float(parse_duration_s(cap_duration))
        except (ValueError, TypeError) as e:
            raise SuanliError(f"--cap-duration: {e}") from None
        if not cap > 0:
            raise SuanliError("--cap-duration: must be positive")
        w = w.take(slice(None))
        w.duration = np.minimum(w.duration, cap)
    cl = Client(server, token, data_dir)
    tok = cl.http.headers["Authorization"].split(" ", 1)[1]
    dropped = 0
    if load is not None or models:
        have, n_dev = server_fleet(cl.server, tok)
        if models:
            w, dropped = fit_models(w, have)
        if load is not None:
            if n_dev <= 0:
                raise SuanliError("--load: the server has no devices")
            w = w.scaled_to_load(load, n_dev)
    w = w.fix_estimates(0.0, 0)
    items = trace_specs(w, keep_models=models, tenants=tenants)
    if not items:
        raise SuanliError(f"--trace: {trace}: no jobs")
    made = ensure_tenants(cl.server, tok, sorted({s["tenant"] for _, s in items})) if tenants else []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=as_json, disable=as_json) as prog:
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = prog.add_task(what, total=total)
            prog.update(tasks[what], completed=done, total=total)

        r = asyncio.run(run_replay(cl.server, tok, items, timeout_s=timeout, concurrency=concurrency,
                                   progress=progress))
    rows = job_rows(r, items)
    s = summarize(r, rows)
    if results is not None:
        with open(results, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    if as_json:
        print_json(s)
        if r.errors:  # the summary's keys are fixed; say why some were refused on stderr
            import sys

            print(f"{len(r.errors)} refused, e.g. {next(iter(r.errors.values()))}", file=sys.stderr)
        return
    console.print(f"replayed {trace} ({len(items)} jobs) on {cl.server} at speed {r.speed:g}"
                  + (" [red](timed out)[/]" if r.timed_out else ""))
    for k in SUMMARY_KEYS:
        v = s[k]
        console.print(f"  {k:12s} {v:,.1f}" if isinstance(v, float) else f"  {k:12s} {v:,}")
    if made:
        console.print(f"  created {len(made)}: {', '.join(made[:6])}{' ...' if len(made) > 6 else ''}")
    if dropped:
        console.print(f"  [yellow]{dropped} jobs lost their model constraint[/] (the server has none of their models)")
    if r.errors:
        first = next(iter(r.errors.values()))
        console.print(f"  [yellow]{len(r.errors)} refused[/], e.g. {first}")
