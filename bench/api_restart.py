"""Restart with a big store: time from starting `suanli up` until the API answers (and until the controller has
rebuilt its scheduler state), with 100,000 jobs in the database.

The store is filled directly (group-committed submissions), then most jobs are marked finished, like a store
that has been running for a while: by default 70% succeeded, 5% failed, 5% cancelled, 20% still pending.

    .venv/bin/python bench/api_restart.py --jobs 100000 [--pending 0.2] [--json]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(data: Path, n: int, pending: float, db: str | None) -> float:
    from suanli.control.db import jobs
    from suanli.control.service import open_service
    from suanli.workload.spec import JobSpec

    t0 = time.perf_counter()
    svc = open_service(data, db=db, devices="8xBR100", node="bench")
    spec = JobSpec.model_validate({"name": "old", "resources": {"accelerators": 1}, "command": ["sleep", "1"]})
    for i in range(0, n, 5000):
        svc.store.submit_many([spec] * min(5000, n - i))
    cut = int(n * (1 - pending))
    with svc.store.write() as c:
        c.execute(jobs.update().where(jobs.c.id <= int(cut * 0.875)).values(state="succeeded", attempts=1))
        c.execute(jobs.update().where(jobs.c.id > int(cut * 0.875), jobs.c.id <= int(cut * 0.9375))
                  .values(state="failed", attempts=1, exit_code=1))
        c.execute(jobs.update().where(jobs.c.id > int(cut * 0.9375), jobs.c.id <= cut).values(state="cancelled"))
    svc.store.close()
    return time.perf_counter() - t0


def measure(data: Path, db: str | None) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "suanli.cli.main", "up",
                          "--job-users", "shared", "--data-dir", str(data), "--port", str(port),
                          "--devices", "8xBR100", "--node", "bench", *(["--db", db] if db else [])],
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    api_s = ready_s = None
    token = (data / "admin.token").read_text().strip()
    try:
        while time.perf_counter() - t0 < 120:
            try:
                r = httpx.get(url + "/v1/jobs", params={"limit": 10}, headers={"Authorization": f"Bearer {token}"},
                              timeout=2)
                if r.status_code == 200 and api_s is None:
                    api_s = time.perf_counter() - t0
                if httpx.get(url + "/healthz", timeout=2).json().get("controller") == "ready":
                    ready_s = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            if p.poll() is not None:
                raise SystemExit(p.stderr.read().decode()[-2000:] if p.stderr else "server died")
            time.sleep(0.02)
        time.sleep(0.5)  # one tick: the metrics snapshot
        metrics = httpx.get(url + "/metrics").text
        pend = next((float(x.split()[-1]) for x in metrics.splitlines()
                     if x.startswith("suanli_queue_pending_jobs{")), 0.0)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    return {"api_answering_s": round(api_s or -1, 2), "controller_ready_s": round(ready_s or -1, 2),
            "pending_in_scheduler": int(pend)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--pending", type=float, default=0.2, help="share of jobs still waiting")
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--repeat", type=int, default=3, help="restarts to time (the median is reported)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    server = None
    db = None
    if a.pg:
        import os

        from suanli.control.pgtest import TempPostgres, fresh_database

        url = os.environ.get("SUANLI_TEST_PG_URL")
        if not url:
            server = TempPostgres(durable=True)
            url = server.start()
        if url is None:
            raise SystemExit("no PostgreSQL: no server binaries and SUANLI_TEST_PG_URL is not set")
        db = fresh_database(url)
    try:
        with tempfile.TemporaryDirectory() as d:
            data = Path(d) / "data"
            fill_s = fill(data, a.jobs, a.pending, db)
            from suanli.control.db import make_engine, sqlite_url

            eng = make_engine(db or sqlite_url(data / "suanli.db"))
            with eng.connect() as c:
                stored = c.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
            eng.dispose()
            runs = [measure(data, db) for _ in range(max(1, a.repeat))]
            runs.sort(key=lambda r: r["api_answering_s"])
            res = {"store": "postgresql" if db else "sqlite", "jobs_in_store": stored, "fill_s": round(fill_s, 1),
                   **runs[len(runs) // 2], "api_answering_s_all": [r["api_answering_s"] for r in runs]}
    finally:
        if server is not None:
            server.stop()
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['store']}: {res['jobs_in_store']} jobs in the store (filled in {res['fill_s']} s): "
              f"API answering after "
              f"{res['api_answering_s']} s (median of {res['api_answering_s_all']}), "
              f"controller ready after {res['controller_ready_s']} s "
              f"({res['pending_in_scheduler']} pending jobs rebuilt into the scheduler)")


if __name__ == "__main__":
    main()
