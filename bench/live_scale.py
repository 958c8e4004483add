"""The live control plane at fleet size: `suanli up --virtual` in a subprocess (real controller, store, API and
scheduler; simulated processes), a trace replayed through the API at a rate that keeps the fleet ~90% busy.

Reports: every accepted job terminal or not (lost), scheduling pass p50/p99 (the controller's
``suanli_scheduling_latency_seconds`` histogram, interpolated within buckets), API p50/p99 per kind as a user's
client measured them while the replay ran (``--probe-rate`` a second: submit a small job / get / list) and per route
as the server measured them, the replay driver's own submit times, submissions/s, controller RSS over
time, and the store consistency check at the end. Soak mode (``--kill-every S``): the controller is SIGKILLed every
S seconds and restarted on the same data directory; the replay rides through the restarts.

    .venv/bin/python bench/live_scale.py --cluster 1250x8xBR100 --jobs 20000 --speed 400 [--json]
    .venv/bin/python bench/live_scale.py --cluster 12500x8xBR100 --jobs 20000 ...           # 100,000 chips
    .venv/bin/python bench/live_scale.py --jobs 20000 --faults 0.001 --kill-every 180 --minutes 30   # soak

Traffic stays on 127.0.0.1. The trace (default: Philly, from ../shared/traces) is rescaled to ``--load`` of the
cluster; without it a synthetic mix is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from suanli.cli.replay import fetch_jobs, job_rows, run_replay, summarize, trace_specs
from suanli.control.check import check_store
from suanli.control.db import job_attempts, make_engine, sqlite_url
from suanli.control.executors.virtual import virtual_cluster
from suanli.sim.run import make_workload
from suanli.sim.traces import read_trace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "philly" / "philly.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def hist_quantiles(text: str, name: str, qs: tuple[float, ...], labels: str = "") -> dict[float, float] | None:
    """Quantiles of a Prometheus histogram (linear within the bucket, as histogram_quantile does); ``labels``
    like 'method="GET",route="/v1/jobs"' select one series (label order does not matter)."""
    want_l = set(re.findall(r'(\w+)="([^"]*)"', labels))
    b = []
    for lab, v in re.findall(rf"^{re.escape(name)}_bucket{{(.*)}} (\S+)$", text, re.M):  # route labels hold braces
        kv = dict(re.findall(r'(\w+)="([^"]*)"', lab))
        le = kv.pop("le", None)
        if le is None or set(kv.items()) != want_l:
            continue
        b.append((float("inf") if le == "+Inf" else float(le), float(v)))
    b.sort()
    if not b or b[-1][1] == 0:
        return None
    total = b[-1][1]
    out = {}
    for q in qs:
        want = q * total
        lo_le, lo_n = 0.0, 0.0
        for le, n in b:
            if n >= want:
                if le == float("inf"):
                    out[q] = lo_le
                else:
                    out[q] = lo_le + (le - lo_le) * ((want - lo_n) / (n - lo_n) if n > lo_n else 1.0)
                break
            lo_le, lo_n = le, n
    return out


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class Server:
    """`suanli up --virtual` as a subprocess (restartable on the same port and data directory)."""

    def __init__(self, data: Path, args: argparse.Namespace) -> None:
        self.data, self.port = data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "suanli.cli.main", "up", "--virtual", args.cluster, "--speed",
                    str(args.speed), "--data-dir", str(data), "--port", str(self.port), "--policy", args.policy]
        if args.faults:
            self.cmd += ["--faults", str(args.faults)]
        if args.db:
            self.cmd += ["--db", args.db]
        self.p: subprocess.Popen[bytes] | None = None
        self.log = open(data.parent / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.restarts = 0
        self.ready_s: list[float] = []
        self.kill_at: list[float] = []  # monotonic times of the SIGKILLs
        self.error: str | None = None  # why a restart failed (soak)

    def start(self, timeout: float = 600) -> None:
        t0 = time.monotonic()
        self.p = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log, cwd=ROOT)
        while time.monotonic() - t0 < timeout:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).json().get("controller") == "ready":
                    self.ready_s.append(time.monotonic() - t0)
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if self.p.poll() is not None:
                raise SystemExit(f"server exited ({self.p.returncode}); see {self.data.parent / 'server.log'}")
            time.sleep(0.1)
        raise SystemExit("server not ready in time")

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()
            self.kill_at.append(time.monotonic())

    def stop(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def work_audit(engine: Any) -> dict[str, Any]:
    """What the virtual processes did, attempt by attempt (their records: [vstart, vend, code, base, work, ...]):
    attempts by outcome, jobs that succeeded more than once, and attempts that began with less work done than an
    earlier attempt of the job had begun with (the job's kept progress went backwards: work run twice). A node loss
    may lose the work since the last checkpoint, never what an attempt started from.
    """
    import sqlalchemy as sa

    by_outcome: Counter[str] = Counter()
    oks: Counter[int] = Counter()
    redone: list[str] = []
    base_of: dict[int, float] = {}  # job -> the work its latest spawned attempt began at
    with engine.connect() as c:
        q = sa.select(job_attempts.c.job_id, job_attempts.c.n, job_attempts.c.outcome, job_attempts.c.procs) \
            .order_by(job_attempts.c.job_id, job_attempts.c.n)
        for row in c.execute(q):
            out = str(row.outcome) if row.outcome is not None else "open"
            by_outcome[out] += 1
            oks[row.job_id] += out == "succeeded"
            if not row.procs:  # never spawned (lost / aborted / spawn-failed): ran nothing
                continue
            base = float(row.procs[0][3])
            prev = base_of.get(row.job_id)
            if prev is not None and base < prev - 1.0:  # one virtual second of slack (float rounding)
                redone.append(f"job {row.job_id} attempt {row.n} began at {base:.0f}s of work, an earlier one at "
                              f"{prev:.0f}s")
            base_of[row.job_id] = max(base, prev or 0.0)
    return {"attempts_by_outcome": dict(by_outcome), "jobs_succeeded_twice": sum(n > 1 for n in oks.values()),
            "attempts_redoing_kept_work": len(redone), "first_redone": redone[:5]}


def soak_verdict(s: dict[str, Any], r: Any, chk: Any, audit: dict[str, Any], srv: Server) -> dict[str, Any]:
    """Lost: accepted but not terminal (or missing); run twice: stored twice, attempts overlapping in time,
    succeeded twice, or work redone that had been kept; the store check's verdict."""
    overlap = sum("ran twice" in p for p in chk.problems)
    twice = r.duplicates + overlap + audit["jobs_succeeded_twice"] + audit["attempts_redoing_kept_work"]
    ok = s["lost"] == 0 and twice == 0 and chk.ok and not r.timed_out and srv.error is None
    return {"ok": ok, "lost": s["lost"], "run_twice": twice, "stored_twice": r.duplicates,
            "overlapping_attempts": overlap, "succeeded_twice": audit["jobs_succeeded_twice"],
            "redid_kept_work": audit["attempts_redoing_kept_work"], "store_consistent": chk.ok,
            "store_problems": chk.problem_count, "timed_out": r.timed_out, "restart_failed": srv.error,
            "not_stored": len(r.errors)}


# -- the load part: what the bars need -------------------------------------------------------------------
def running_jobs(url: str) -> int:
    """The controller's running jobs (``suanli_running_jobs``; -1 when /metrics does not answer): beside RSS, what
    the memory holds per job while it runs, as against what the store holds."""
    try:
        m = re.search(r"^suanli_running_jobs (\S+)$", httpx.get(url + "/metrics", timeout=5).text, re.M)
        return int(float(m.group(1))) if m else -1
    except httpx.HTTPError:
        return -1


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def probe_api(url: str, token: str, stop: asyncio.Event, lat: dict[str, list[float]], rate: float) -> None:
    """While the replay runs: ``rate`` times a second, submit one small job (``POST /v1/jobs``: one CPU-only job that
    runs a virtual second), list the newest page of jobs (``GET /v1/jobs``, 100 a page, as `suanli jobs` asks) and
    read one job (``GET /v1/jobs/{id}``, a random id among those stored), timing each as a client sees it: what a
    user waits for while the replay loads the server. Its own connection: it does not queue behind the replay's
    submissions (whose own times, ``--concurrency`` in flight, are reported apart: in a burst that outruns the server
    they measure the driver's own queue, in-flight / throughput by Little's law)."""
    import random

    rng = random.Random(0)
    top = 0
    n = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while not stop.is_set():
            t_next = time.monotonic() + 1.0 / rate
            try:
                n += 1
                t = time.perf_counter()
                resp = await c.post("/v1/jobs", json={"name": f"probe-{n}", "command": ["true"],
                                                      "resources": {"cpu": 0.1, "memory": "64Mi"},
                                                      "simulate": {"duration": 1}})
                if resp.status_code == 201:
                    lat.setdefault("submit", []).append(time.perf_counter() - t)
                t = time.perf_counter()
                resp = await c.get("/v1/jobs", params={"limit": 100})
                if resp.status_code == 200:
                    lat.setdefault("list", []).append(time.perf_counter() - t)
                    items = resp.json()["items"]
                    top = max([top, *(int(j["id"]) for j in items)])
                if top:
                    t = time.perf_counter()
                    resp = await c.get(f"/v1/jobs/{rng.randint(1, top)}")
                    if resp.status_code == 200:
                        lat.setdefault("get", []).append(time.perf_counter() - t)
            except httpx.HTTPError:
                pass  # a restarting server (soak): nothing to time
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, t_next - time.monotonic()))


async def with_probes(replay: Any, url: str, token: str, rate: float, lat: dict[str, list[float]]) -> Any:
    """Run coroutine ``replay`` with :func:`probe_api` beside it (rate 0: without)."""
    stop = asyncio.Event()
    task = asyncio.create_task(probe_api(url, token, stop, lat, rate)) if rate > 0 else None
    try:
        return await replay
    finally:
        stop.set()
        if task is not None:
            await task


def ms(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "p50": round(pct(xs, 0.5) * 1e3, 1), "p99": round(pct(xs, 0.99) * 1e3, 1)}


def load_report(metrics: str, r: Any, subs: dict[str, Any], probe: dict[str, list[float]],
                usage: list[tuple[float, float, float, int, int]],
                wall_s: float, bench_cpu_s: float, loadavg: tuple[list[float], list[float]],
                concurrency: int = 16) -> dict[str, Any]:
    """The figures the issue's load bars need: pass p50/p99 (the controller's histograms), API p50/p99 per route
    (client side, while the replay ran; and server side), submissions/s, controller RSS and CPU over time."""
    def hq(name: str, labels: str = "") -> dict[str, float] | None:
        q = hist_quantiles(metrics, name, (0.5, 0.99), labels)
        return {"p50_ms": round(q[0.5] * 1e3, 2), "p99_ms": round(q[0.99] * 1e3, 2)} if q else None

    def count(name: str) -> int:
        m = re.search(rf"^{re.escape(name)}_count (\S+)$", metrics, re.M)
        return int(float(m.group(1))) if m else 0

    n_sub = len(r.api_lat_s.get("submit", []))
    window = subs["last"] - subs["first"] if subs["first"] is not None else None
    server = {f"{m} {rt}": hq("suanli_api_request_seconds", f'method="{m}",route="{rt}"')
              for m, rt in (("POST", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs"))}
    # RSS after warm-up: from the first sample with a quarter of the submissions in
    quarter = n_sub // 4
    warm = [x for x in usage if x[3] >= quarter] or usage
    return {
        "pass": {"n": count("suanli_scheduling_latency_seconds"), "decide": hq("suanli_scheduling_latency_seconds"),
                 "whole": hq("suanli_scheduling_pass_seconds")},
        "api_client_ms": {"submit": ms(probe.get("submit", [])), "get": ms(probe.get("get", [])),
                          "list": ms(probe.get("list", [])),
                          f"submit (replay driver, {concurrency} in flight)": ms(r.api_lat_s.get("submit", [])),
                          "list_live_1000 (replay's wait loop)": ms(r.api_lat_s.get("list", []))},
        "api_server_ms": server,
        "store_write": hq("suanli_store_write_seconds"), "tick_interval": hq("suanli_reconcile_interval_seconds"),
        "submissions": n_sub,
        "submissions_per_s": round(n_sub / window, 1) if window else None,
        "rss_mib_after_warmup": {"first": warm[0][1], "min": min(x[1] for x in warm), "max": max(x[1] for x in warm),
                                 "last": warm[-1][1]} if warm else None,
        "usage_series": usage,
        "wall_s": round(wall_s, 1), "server_cpu_s": usage[-1][2] if usage else None,
        "bench_cpu_s": round(bench_cpu_s, 1), "loadavg_start": loadavg[0], "loadavg_end": loadavg[1],
    }


def read_back_from_store(url: str, r: Any) -> None:
    """``--read-back store``: every accepted job's final record (state, times, attempts) into ``r.jobs`` straight
    from the database, as ``fetch_jobs`` reads them through the API (20,000 GETs took 2-3 minutes of a run on a
    loaded box; a missing job stays missing: counted lost)."""
    import sqlalchemy as sa

    from suanli.control.db import jobs as jobs_t

    ids = sorted(set(r.accepted.values()))
    eng = make_engine(url)
    try:
        with eng.connect() as c:
            for k in range(0, len(ids), 500):
                chunk = ids[k : k + 500]
                for j in c.execute(sa.select(jobs_t.c.id, jobs_t.c.state, jobs_t.c.attempts, jobs_t.c.exit_code,
                                             jobs_t.c.submit_time, jobs_t.c.updated_at).where(jobs_t.c.id.in_(chunk))):
                    r.jobs[int(j.id)] = {**dict(j._mapping), "attempt_list": []}
                for a in c.execute(sa.select(job_attempts.c.job_id, job_attempts.c.started_at, job_attempts.c.ended_at,
                                             job_attempts.c.placement).where(job_attempts.c.job_id.in_(chunk))
                                   .order_by(job_attempts.c.job_id, job_attempts.c.n)):
                    r.jobs[int(a.job_id)]["attempt_list"].append(dict(a._mapping))
    finally:
        eng.dispose()
    for i in ids:
        r.jobs.setdefault(i, None)


def print_load(rep: dict[str, Any], out: dict[str, Any]) -> None:
    p = rep["pass"]
    f = (lambda d: f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms" if d else "-")  # noqa: E731
    print(f"LOAD {out['cluster']} ({out['devices']} devices), {out['jobs']} jobs, speed x{out['speed']:g}, "
          f"policy {out['policy']}")
    print(f"  jobs: accepted {out.get('accepted')}, finished {out.get('finished')}, failed {out.get('failed')}, "
          f"lost {out.get('lost')}, duplicates {out.get('duplicates')}, timed out {out.get('timed_out')}")
    print(f"  scheduling pass ({p['n']} passes): decide {f(p['decide'])}; whole pass (decide + record + spawn) "
          f"{f(p['whole'])}")
    print(f"  submissions: {rep['submissions']} at {rep['submissions_per_s']} /s")
    for k, v in rep["api_client_ms"].items():
        print(f"  API client {k:36s} n {v['n']:6d}  p50 {v['p50']:8.1f} ms  p99 {v['p99']:8.1f} ms")
    for k, v in rep["api_server_ms"].items():
        print(f"  API server {k:36s} {f(v)}")
    print(f"  store write {f(rep['store_write'])}; reconcile interval {f(rep['tick_interval'])}")
    print(f"  wall {rep['wall_s']} s; CPU: server {rep['server_cpu_s']} s, bench {rep['bench_cpu_s']} s; "
          f"load average {rep['loadavg_start']} -> {rep['loadavg_end']}")
    print(f"  RSS after warm-up (MiB): {rep['rss_mib_after_warmup']}")
    print("      t (s)  submitted  running  RSS (MiB)  server CPU (s)   (running: the controller's jobs running)")
    us = rep["usage_series"]
    for t, m, c, n, run in us[:: max(1, len(us) // 12)] + ([us[-1]] if us and len(us) % max(1, len(us) // 12) != 1
                                                            else []):
        print(f"  {t:9.1f}  {n:9d}  {run:7d}  {m:9.1f}  {c:14.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", default="1250x8xBR100", help="virtual cluster (file or NODESxDEVICESxMODEL)")
    ap.add_argument("--trace", default=str(DEFAULT_TRACE), help="trace file ('synthetic': the synthetic mix)")
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--load", type=float, default=0.9, help="offered load the arrivals are rescaled to")
    ap.add_argument("--speed", type=float, default=None, help="virtual seconds per wall second (default: the "
                    "arrivals span --submit-minutes of wall time)")
    ap.add_argument("--submit-minutes", type=float, default=15.0, help="wall minutes the arrivals span (sets speed)")
    ap.add_argument("--cap-duration", type=float, default=86_400.0, help="cap job durations at this many seconds "
                    "before rescaling to --load (a few multi-week jobs would otherwise set the makespan; 0: no cap)")
    ap.add_argument("--policy", default="fifo")
    ap.add_argument("--faults", type=float, default=None, help="failures per device-hour (the twin's model)")
    ap.add_argument("--kill-every", type=float, default=None, help="soak: SIGKILL the controller every S seconds")
    ap.add_argument("--minutes", type=float, default=None, help="stop submitting after this many wall minutes")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="replay the trace this many times, one pass after the "
                    "other, on the same server (memory: RSS at the end of each pass; the other figures are the last "
                    "pass's)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="wall seconds to wait for all jobs")
    ap.add_argument("--db", default=None, help="database URL (default: SQLite in a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--probe-rate", type=float, default=5.0, help="load: GET /v1/jobs and GET /v1/jobs/{id} this "
                    "many times a second while the replay runs, timed by the client (0: none)")
    ap.add_argument("--read-back", choices=("api", "store"), default="api", help="how every accepted job's final "
                    "record is read at the end: GET /v1/jobs/{id} each, or one query of the database (load runs)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    cl = virtual_cluster(a.cluster)
    trace = None if a.trace == "synthetic" or not Path(a.trace).exists() else a.trace
    if trace is None:
        w = make_workload(None, cl, jobs=a.jobs, load=a.load, seed=0)
    else:
        w = read_trace(trace, limit=a.jobs)
        if a.cap_duration:
            w.duration = np.minimum(w.duration, a.cap_duration)
        w = w.scaled_to_load(a.load, cl.n_devices).fix_estimates(0.0, 0)
    items = trace_specs(w)
    if a.speed is None:
        a.speed = max(1.0, round(items[-1][0] / (a.submit_minutes * 60.0)))
    if a.minutes:
        items = [x for x in items if x[0] / a.speed <= a.minutes * 60]
    tmp = Path(tempfile.mkdtemp(prefix="suanli-live-"))
    srv = Server(tmp / "data", a)
    t_boot = time.monotonic()
    srv.start()
    boot_s = time.monotonic() - t_boot
    tok = (tmp / "data" / "admin.token").read_text().strip()
    rss: list[tuple[float, float]] = []
    usage: list[tuple[float, float, float, int, int]] = []  # (t, RSS MiB, server CPU s, submitted so far, running)
    probe_lat: dict[str, list[float]] = {}
    load0 = [round(x, 2) for x in os.getloadavg()]
    cpu_bench0 = time.process_time()
    done = threading.Event()
    t0 = time.monotonic()
    subs = {"n": 0, "first": None, "last": None}  # submissions answered so far, monotonic times of the first / last

    def sample() -> None:
        while not done.wait(5.0):
            if srv.p is not None:
                m = rss_mib(srv.p.pid)
                if m is not None:
                    rss.append((round(time.monotonic() - t0, 1), round(m, 1)))
                    c = cpu_s(srv.p.pid)
                    usage.append((round(time.monotonic() - t0, 1), round(m, 1), round(c or 0.0, 1), subs["n"],
                                  running_jobs(srv.url)))

    kill_until = t0 + (items[-1][0] / a.speed if items else 0.0)  # kill while jobs arrive; then let it drain

    def killer() -> None:
        while not done.wait(a.kill_every) and time.monotonic() < kill_until:
            srv.kill()  # every kill_every seconds of up time (a restart takes a while on a loaded box)
            srv.restarts += 1
            try:
                srv.start()
            except SystemExit as e:  # recorded in the verdict; the replay times out without a server
                srv.error = str(e)
                return
            if not a.json:
                print(f"  [{time.monotonic() - t0:7.1f}s] controller SIGKILLed and restarted ({srv.restarts}), "
                      f"ready in {srv.ready_s[-1]:.1f} s", flush=True)

    threads = [threading.Thread(target=sample, name="sampler", daemon=True)]
    if a.kill_every:
        threads.append(threading.Thread(target=killer, name="killer", daemon=True))
    for th in threads:
        th.start()
    progress_last = [0.0]

    def progress(what: str, n: int, total: int) -> None:
        if what == "submitted":  # called once per answered submission
            now = time.monotonic()
            subs["n"] = n
            subs["first"] = subs["first"] or now
            subs["last"] = now
        if a.json or time.monotonic() - progress_last[0] < 10:
            return
        progress_last[0] = time.monotonic()
        print(f"  [{time.monotonic() - t0:7.1f}s] {what} {n}/{total}  rss {rss[-1][1] if rss else 0:.0f} MiB",
              flush=True)

    passes: list[dict[str, Any]] = []
    try:
        for k in range(a.repeat):
            if k:  # the same trace again on the same server, once the previous pass is over (names kept apart)
                items = [(at, {**spec, "name": f"p{k}-{spec['name']}"}) for at, spec in items]
                probe_lat.clear()
                subs.update(n=0, first=None, last=None)
            t_pass = time.monotonic()
            r = asyncio.run(with_probes(run_replay(srv.url, tok, items, timeout_s=a.timeout,
                                                   concurrency=a.concurrency, speed=a.speed, progress=progress,
                                                   fetch=False),
                                        srv.url, tok, a.probe_rate, probe_lat))
            if a.repeat > 1:
                in_pass = [x for x in usage if x[0] >= t_pass - t0]
                passes.append({"pass": k + 1, "wall_s": round(r.wall_s, 1), "accepted": len(r.accepted),
                               "timed_out": r.timed_out,
                               "peak_running": max((x[4] for x in in_pass), default=None),
                               "rss_max_mib": max((x[1] for x in in_pass), default=None),
                               "rss_end_mib": in_pass[-1][1] if in_pass else None})
                if not a.json:
                    print(f"  pass {k + 1}/{a.repeat}: {passes[-1]}", flush=True)
    finally:
        done.set()
        for th in threads:
            th.join(timeout=1 if th.name != "killer" else 600)
    metrics = httpx.get(srv.url + "/metrics", timeout=30).text  # before the read-back adds its own GETs
    load_rep = load_report(metrics, r, subs, probe_lat, usage, time.monotonic() - t0, time.process_time() - cpu_bench0,
                           (load0, [round(x, 2) for x in os.getloadavg()]), a.concurrency)
    if a.read_back == "store":
        read_back_from_store(a.db or sqlite_url(tmp / "data" / "suanli.db"), r)
    else:
        asyncio.run(fetch_jobs(srv.url, tok, r, concurrency=a.concurrency, progress=progress))
    rows = job_rows(r, items)
    s = summarize(r, rows)
    srv.stop()
    url = a.db or sqlite_url(tmp / "data" / "suanli.db")
    eng = make_engine(url)
    chk = check_store(eng)
    audit = work_audit(eng)
    passq = hist_quantiles(metrics, "suanli_scheduling_latency_seconds", (0.5, 0.99)) or {}
    routes = {}
    for method, route in (("POST", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs")):
        q = hist_quantiles(metrics, "suanli_api_request_seconds", (0.5, 0.99), f'method="{method}",route="{route}"')
        if q:
            routes[f"{method} {route}"] = {"p50_ms": round(q[0.5] * 1e3, 2), "p99_ms": round(q[0.99] * 1e3, 2)}
    sub_lat = r.api_lat_s.get("submit", [])
    span = (items[-1][0] / a.speed) if items else 0.0
    warm = [m for t, m in rss if t >= min(120.0, r.wall_s / 4)]
    out: dict[str, Any] = {
        "cluster": a.cluster, "devices": cl.n_devices, "nodes": cl.n_nodes, "trace": trace or "synthetic",
        "jobs": len(items), "load": a.load, "speed": a.speed, "policy": a.policy, "faults": a.faults,
        "boot_s": round(boot_s, 1), **s,
        "duplicates": r.duplicates, "timed_out": r.timed_out,
        "refused": dict(Counter(e.split(":")[0] + ": " + e.split(":", 1)[-1].strip()[:60] for e in r.errors.values())
                        .most_common(5)),
        "submissions_per_s": round(len(sub_lat) / span, 1) if span else None,
        "submit_lag_p99_s": round(pct(r.lag_s, 0.99), 3),
        "pass_p50_ms": round(passq[0.5] * 1e3, 2) if passq else None,
        "pass_p99_ms": round(passq[0.99] * 1e3, 2) if passq else None,
        "client_api_ms": {k: {"n": len(v), "p50": round(pct(v, 0.5) * 1e3, 2), "p99": round(pct(v, 0.99) * 1e3, 2)}
                          for k, v in r.api_lat_s.items()},
        "server_api_ms": routes,
        "rss_mib": {"first": rss[0][1] if rss else None, "after_warmup_min": min(warm) if warm else None,
                    "after_warmup_max": max(warm) if warm else None, "last": rss[-1][1] if rss else None},
        "rss_series": rss[:: max(1, len(rss) // 40)],
        "passes": passes or None,
        "restarts": srv.restarts, "restart_ready_s": [round(x, 1) for x in srv.ready_s[1:]],
        "store_check": {"ok": chk.ok, "jobs": chk.jobs, "attempts": chk.attempts, "problems": chk.problem_count,
                        "first": chk.problems[:5], "by_state": chk.by_state},
        "work": audit,
        "kills_at_s": [round(k - t0, 1) for k in srv.kill_at],
        "data_dir": str(tmp) if a.keep else None,
        "load_bars": load_rep,
    }
    if not a.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    verdict = soak_verdict(s, r, chk, audit, srv)
    if a.kill_every or a.faults:
        out["soak_verdict"] = verdict
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if k not in ("rss_series", "soak_verdict", "load_bars"):
                print(f"{k:22s} {v}")
        print("controller RSS over time (MiB; * = first sample after a SIGKILL and restart)")
        kills = [k - t0 for k in srv.kill_at]
        for t, m in rss[:: max(1, len(rss) // 60)]:
            mark = "*" if any(0 <= t - k < 5.0 * max(1, len(rss) // 60) for k in kills) else " "
            print(f"  {t:8.1f} s {m:8.1f}{mark}")
        print_load(load_rep, out)
        if "soak_verdict" in out:
            v = verdict
            print(f"SOAK {'PASS' if v['ok'] else 'FAIL'}: {v['lost']} lost, {v['run_twice']} run twice "
                  f"({v['stored_twice']} stored twice, {v['overlapping_attempts']} overlapping attempts, "
                  f"{v['succeeded_twice']} succeeded twice, {v['redid_kept_work']} redid kept work), store "
                  f"{'consistent' if v['store_consistent'] else 'INCONSISTENT'} ({v['store_problems']} problems), "
                  f"{srv.restarts} SIGKILLs, {v['not_stored']} submissions not stored"
                  + (", TIMED OUT" if v["timed_out"] else "")
                  + (f", restart failed: {srv.error}" if srv.error else ""))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
