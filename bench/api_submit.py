"""Durable job submissions per second through the REST API (`suanli up` in a subprocess, real HTTP).

Each accepted submission is committed (job row + event, one transaction) before the 201 answer. The node is
drained so that the jobs only queue. SQLite by default; ``--pg`` also runs PostgreSQL (a throw-away server from
the local binaries, or ``SUANLI_TEST_PG_URL``).

    .venv/bin/python bench/api_submit.py --jobs 5000 --concurrency 16 [--pg] [--client httpx] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data: Path, db: str | None, sync: str) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port = free_port()
    cmd = [sys.executable, "-m", "suanli.cli.main", "up",
           "--job-users", "shared", "--data-dir", str(data), "--port", str(port),
           "--devices", "1xBR100", "--node", "bench", "--sync", sync]
    if db:
        cmd += ["--db", db]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/healthz", timeout=1).json().get("controller") == "ready":
                break
        except (httpx.HTTPError, ValueError):
            pass
        if p.poll() is not None:
            raise SystemExit(f"server died: {p.stderr.read().decode()[-2000:] if p.stderr else ''}")
        time.sleep(0.05)
    h = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}
    httpx.post(url + "/v1/nodes/bench/drain", headers=h).raise_for_status()
    return p, url, h


async def hammer(url: str, h: dict[str, str], n: int, conc: int) -> tuple[float, int]:
    """``conc`` keep-alive connections, each sending one request at a time (a minimal HTTP/1.1 client, so that the
    benchmark's own CPU use stays small next to the server's on a 2-core machine)."""
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"name": "bench", "resources": {"accelerators": 1}, "command": ["sleep", "1"]}).encode()
    req = (f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: {h['Authorization']}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    errors = 0
    left = n

    async def worker() -> None:
        nonlocal errors, left
        r, w = await asyncio.open_connection(host, int(port))
        try:
            while left > 0:
                left -= 1
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await r.readexactly(length)
                if status != 201:
                    errors += 1
        finally:
            w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return time.perf_counter() - t0, errors


async def hammer_httpx(url: str, h: dict[str, str], n: int, conc: int, lat: list[float]) -> tuple[float, int]:
    """The same load through httpx, as `suanli replay` sends it (an AsyncClient, ``conc`` requests in flight), each
    request timed: what the replay driver's own submit times measure when the server is idle."""
    errors = 0
    sem = asyncio.Semaphore(conc)
    body = {"name": "bench", "resources": {"accelerators": 1}, "command": ["sleep", "1"]}
    limits = httpx.Limits(max_connections=conc + 4, max_keepalive_connections=conc + 4)
    async with httpx.AsyncClient(base_url=url, headers=h, timeout=60, limits=limits) as c:
        async def one() -> None:
            nonlocal errors
            async with sem:
                t = time.perf_counter()
                r = await c.post("/v1/jobs", json=body)
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 201

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0, errors


def run_one(label: str, db: str | None, jobs: int, conc: int, sync: str, client: str = "raw") -> dict[str, Any]:
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        p, url, h = start_server(Path(d) / "data", db, sync)
        try:
            cpu0, ccpu0 = _cpu(p.pid), time.process_time()
            dt, errors = asyncio.run(hammer(url, h, jobs, conc) if client == "raw" else
                                     hammer_httpx(url, h, jobs, conc, lat))
            server_cpu, client_cpu = _cpu(p.pid) - cpu0, time.process_time() - ccpu0
            stored = httpx.get(url + "/metrics").text
            n_pending = next((float(line.split()[-1]) for line in stored.splitlines()
                              if line.startswith('suanli_jobs{state="pending"}')), 0.0)
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    lat.sort()
    return {"store": label, "sync": sync, "client": client, "jobs": jobs, "concurrency": conc, "seconds": round(dt, 3),
            "client_p50_ms": round(lat[len(lat) // 2] * 1e3, 1) if lat else None,
            "client_p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 1) if lat else None,
            "jobs_per_s": round(jobs / dt, 1), "errors": errors, "stored_pending": int(n_pending),
            "server_cpu_ms_per_job": round(server_cpu / jobs * 1000, 3),
            "client_cpu_ms_per_job": round(client_cpu / jobs * 1000, 3)}


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sync", default="normal", choices=["normal", "full"], help="SQLite synchronous level")
    ap.add_argument("--client", default="raw", choices=["raw", "httpx"], help="raw: a minimal HTTP/1.1 client; "
                    "httpx: as `suanli replay` submits (timed per request)")
    ap.add_argument("--pg", action="store_true", help="also PostgreSQL")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = [run_one("sqlite", None, a.jobs, a.concurrency, a.sync, a.client)]
    if a.pg:
        import os

        from suanli.control.pgtest import TempPostgres, fresh_database

        server = None
        url = os.environ.get("SUANLI_TEST_PG_URL")
        if not url:  # a local server with fsync and synchronous commits on: durable like SQLite --sync full
            server = TempPostgres(durable=True)
            url = server.start()
        try:
            if url is None:
                print("PostgreSQL skipped: no server binaries and SUANLI_TEST_PG_URL is not set", file=sys.stderr)
            else:
                results.append(run_one("postgresql", fresh_database(url), a.jobs, a.concurrency, a.sync, a.client))
        finally:
            if server is not None:
                server.stop()
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['store']:>10}: {r['jobs']} submissions in {r['seconds']} s = {r['jobs_per_s']} jobs/s "
                  f"(concurrency {r['concurrency']}, errors {r['errors']}, stored pending {r['stored_pending']}; "
                  f"CPU per job: server {r['server_cpu_ms_per_job']} ms, client {r['client_cpu_ms_per_job']} ms)"
                  + (f"; {r['client']} client p50 {r['client_p50_ms']} ms, p99 {r['client_p99_ms']} ms"
                     if r["client_p50_ms"] is not None else ""))


if __name__ == "__main__":
    main()
