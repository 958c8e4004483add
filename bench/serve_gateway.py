"""The inference gateway on this machine: added latency, requests/s, autoscaling reaction time.

`suanli up` runs in a subprocess; services of the mock engine (``suanli.serve.mock``, zero TTFT/TPOT unless said
otherwise, so the figures are the HTTP path's, not a model's) are created through the API, and measured:

1. **overhead**: sequential requests (non-streaming completion, one output token), straight to a replica's port and
   through ``/v1/services/NAME/v1/completions``; p50 / p99 latency of each and the difference;
2. **throughput**: ``--concurrency`` closed-loop clients for ``--seconds``, straight to one replica and through the
   gateway to ``--replicas`` replicas; requests/s;
3. **autoscaling**: a service with min 1 / max 4, ``target_ongoing_requests`` 2, panic window 1 s, stable window
   ``--stable`` s; a step from 1 to 50 concurrent clients (TTFT 50 ms, TPOT 10 ms, 10 tokens): seconds from the step
   to the scale-out decision and to all replicas ready; seconds from the end of the load to the scale-in decision.

    .venv/bin/python bench/serve_gateway.py [--requests 1000] [--concurrency 32] [--seconds 10] [--stream-tokens 32]
        [--parts overhead,throughput,autoscaling] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def start(data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "suanli.cli.main", "up", "--data-dir", str(data), "--port",
                          str(port), "--node", "bench", "--job-users", "shared"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE,
                         env=env)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["controller"] == "ready":
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if p.poll() is not None or time.monotonic() > end:
            p.kill()  # not left running
            raise SystemExit("suanli up did not start: " + (p.communicate(timeout=30)[1] or b"").decode()[-2000:])
        time.sleep(0.1)
    return p, url, (data / "admin.token").read_text().strip()


def service(name: str, lo: int, hi: int, *, ttft: float = 0.0, tpot: float = 0.0, seqs: int = 256,
            **extra: Any) -> dict[str, Any]:
    cmd = (f'exec "$SUANLI_PYTHON" -m suanli.serve.mock --model {name} --ttft {ttft} --tpot {tpot} '
           f"--max-num-seqs {seqs}")
    return {"name": name, "command": ["sh", "-c", cmd], "resources": {"cpu": 0.1},
            "replicas": {"min": lo, "max": hi}, "readiness": {"period": "250ms"}, **extra}


def wait_ready(c: httpx.Client, name: str, n: int, timeout: float = 90) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        s = c.get(f"/v1/services/{name}").json()
        if (s.get("live") or {}).get("ready", 0) >= n:
            return s
        if time.monotonic() > end:
            raise SystemExit(f"service {name}: {n} replicas not ready in {timeout:g} s")
        time.sleep(0.2)


async def sequential(url: str, headers: dict[str, str], model: str, n: int, stream_tokens: int = 0) -> list[float]:
    """Latencies of ``n`` sequential requests: a one-token JSON completion, or (``stream_tokens``) an SSE stream of
    that many tokens with the usage chunk at the end (read to its end)."""
    out = []
    async with httpx.AsyncClient(headers=headers, timeout=30) as c:
        body: dict[str, Any] = {"model": model, "prompt": "hello", "max_tokens": 1}
        if stream_tokens:
            body = {"model": model, "prompt": "hello", "max_tokens": stream_tokens, "stream": True,
                    "stream_options": {"include_usage": True}}

        async def one() -> None:
            if not stream_tokens:
                (await c.post(url, json=body)).raise_for_status()
                return
            async with c.stream("POST", url, json=body) as r:
                r.raise_for_status()
                async for _ in r.aiter_raw():
                    pass

        for _ in range(20):  # warm-up: connections, first-call paths
            await one()
        for _ in range(n):
            t = time.perf_counter()
            await one()
            out.append(time.perf_counter() - t)
    return out


async def closed_loop(url: str, headers: dict[str, str], model: str, conc: int, seconds: float) -> tuple[int, int]:
    ok = err = 0
    end = time.perf_counter() + seconds
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=httpx.Limits(max_connections=conc)) as c:

        async def one() -> None:
            nonlocal ok, err
            body = {"model": model, "prompt": "hello", "max_tokens": 1}
            while time.perf_counter() < end:
                try:
                    r = await c.post(url, json=body)
                    ok += r.status_code == 200
                    err += r.status_code != 200
                except httpx.HTTPError:
                    err += 1

        await asyncio.gather(*[one() for _ in range(conc)])
    return ok, err


def scale_event(c: httpx.Client, name: str, after: float, to: int) -> float | None:
    for e in c.get(f"/v1/services/{name}").json()["live"]["events"]:
        if e["at"] >= after and e["message"].startswith("scale ") and f"-> {to} " in e["message"]:
            return float(e["at"])
    return None


async def step(url: str, c: httpx.Client, headers: dict[str, str], stable: float) -> dict[str, Any]:
    stop = asyncio.Event()
    body = {"model": "auto", "prompt": "p", "max_tokens": 10}
    ok = err = 0

    async def client(ac: httpx.AsyncClient) -> None:
        nonlocal ok, err
        while not stop.is_set():
            try:
                r = await ac.post(f"{url}/v1/completions", json=body)
                ok += r.status_code == 200
                err += r.status_code != 200
            except httpx.HTTPError:
                err += 1

    async with httpx.AsyncClient(headers=headers, timeout=60, limits=httpx.Limits(max_connections=64)) as ac:
        first = asyncio.create_task(client(ac))
        await asyncio.sleep(2.0)
        t0 = time.time()
        rest = [asyncio.create_task(client(ac)) for _ in range(49)]
        t_ready = None
        while time.time() - t0 < 90:
            s = await asyncio.to_thread(lambda: c.get("/v1/services/auto").json())
            if s["live"]["ready"] >= 4:
                t_ready = time.time() - t0
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        stop.set()
        t1 = time.time()
        await asyncio.gather(first, *rest)
        t2 = time.time()
    end = time.time() + 4 * stable + 30
    while time.time() < end and c.get("/v1/services/auto").json()["desired"] > 1:
        time.sleep(0.2)
    out = scale_event(c, "auto", t0, 4)
    back = scale_event(c, "auto", t1, 1)
    return {"scale_out_decision_s": None if out is None else out - t0, "all_ready_s": t_ready,
            "scale_in_after_load_stopped_s": None if back is None else back - t1,
            "scale_in_after_last_answer_s": None if back is None else back - t2, "requests": ok, "errors": err}


class _Done(Exception):
    """The parts asked for are measured."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="sequential requests per path (overhead)")
    ap.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (throughput)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    ap.add_argument("--replicas", type=int, default=2, help="replicas behind the gateway (throughput)")
    ap.add_argument("--stable", type=float, default=10.0, help="stable window of the autoscaling run, seconds")
    ap.add_argument("--stream-tokens", type=int, default=32, help="also the overhead of streamed requests of this "
                    "many tokens with a usage chunk (0: not measured)")
    ap.add_argument("--parts", default="overhead,throughput,autoscaling", help="which parts to run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    parts = {x.strip() for x in a.parts.split(",")}
    res: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d:
        p, url, tok = start(Path(d) / "data")
        h = {"Authorization": f"Bearer {tok}"}
        try:
            with httpx.Client(base_url=url, headers=h, timeout=30) as c:
                c.post("/v1/services", json=service("fast", a.replicas, a.replicas)).raise_for_status()
                s = wait_ready(c, "fast", a.replicas)
                port = s["live"]["replicas"][0]["port"]
                direct_url = f"http://127.0.0.1:{port}/v1/completions"
                gw_url = f"{url}/v1/services/fast/v1/completions"
                c.patch("/v1/services/fast", json={"min": 1, "max": 1}).raise_for_status()  # overhead: 1 replica
                time.sleep(2.0)
                d_lat = asyncio.run(sequential(direct_url, {}, "fast", a.requests))
                # CPU of the `suanli up` process per proxied request (less its idle rate: controller, manager)
                c0, t0 = cpu_s(p.pid), time.perf_counter()
                time.sleep(3.0)
                idle_rate = (cpu_s(p.pid) - c0) / (time.perf_counter() - t0)
                c0, t0 = cpu_s(p.pid), time.perf_counter()
                g_lat = asyncio.run(sequential(gw_url, h, "fast", a.requests))
                busy = cpu_s(p.pid) - c0 - idle_rate * (time.perf_counter() - t0)
                res["overhead"] = {
                    "requests": a.requests,
                    "direct_p50_ms": pct(d_lat, 50) * 1e3, "direct_p99_ms": pct(d_lat, 99) * 1e3,
                    "gateway_p50_ms": pct(g_lat, 50) * 1e3, "gateway_p99_ms": pct(g_lat, 99) * 1e3,
                    "added_p50_ms": (pct(g_lat, 50) - pct(d_lat, 50)) * 1e3,
                    "added_p99_ms": (pct(g_lat, 99) - pct(d_lat, 99)) * 1e3,
                    "gateway_cpu_ms_per_request": busy / (a.requests + 20) * 1e3,
                }
                if a.stream_tokens:
                    d_s = asyncio.run(sequential(direct_url, {}, "fast", a.requests, a.stream_tokens))
                    c0, t0 = cpu_s(p.pid), time.perf_counter()
                    g_s = asyncio.run(sequential(gw_url, h, "fast", a.requests, a.stream_tokens))
                    busy = cpu_s(p.pid) - c0 - idle_rate * (time.perf_counter() - t0)
                    res["overhead"].update({
                        "stream_tokens": a.stream_tokens,
                        "stream_direct_p50_ms": pct(d_s, 50) * 1e3, "stream_gateway_p50_ms": pct(g_s, 50) * 1e3,
                        "stream_added_p50_ms": (pct(g_s, 50) - pct(d_s, 50)) * 1e3,
                        "stream_gateway_cpu_ms_per_request": busy / (a.requests + 20) * 1e3})
                res["load_avg_1m_after_overhead"] = os.getloadavg()[0]
                if "throughput" not in parts and "autoscaling" not in parts:
                    raise _Done
                ok_d, err_d = asyncio.run(closed_loop(direct_url, {}, "fast", a.concurrency, a.seconds))
                c.patch("/v1/services/fast", json={"min": a.replicas, "max": a.replicas}).raise_for_status()
                wait_ready(c, "fast", a.replicas)
                ok_g, err_g = asyncio.run(closed_loop(gw_url, h, "fast", a.concurrency, a.seconds))
                res["throughput"] = {"concurrency": a.concurrency, "seconds": a.seconds,
                                     "direct_one_replica_rps": ok_d / a.seconds, "direct_errors": err_d,
                                     "gateway_rps": ok_g / a.seconds, "gateway_replicas": a.replicas,
                                     "gateway_errors": err_g}
                c.delete("/v1/services/fast")
                if "autoscaling" not in parts:
                    raise _Done
                auto = service("auto", 1, 4, ttft=0.05, tpot=0.01, seqs=4,
                               autoscaling={"target_ongoing_requests": 2, "panic_window": "1s",
                                            "stable_window": f"{a.stable}s", "engine_queue": False})
                c.post("/v1/services", json=auto).raise_for_status()
                wait_ready(c, "auto", 1)
                time.sleep(a.stable)  # past the initial hold
                res["autoscaling"] = {"panic_window_s": 1.0, "stable_window_s": a.stable,
                                      **asyncio.run(step(url, c, h, a.stable))}
        except _Done:
            pass
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(60)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    o = res["overhead"]
    print(f"{res['cpus']} CPUs, load average {res['load_avg_1m_at_start']:.1f} at start")
    print(f"overhead ({o['requests']} sequential requests): direct p50 {o['direct_p50_ms']:.2f} ms p99 "
          f"{o['direct_p99_ms']:.2f} ms; gateway p50 {o['gateway_p50_ms']:.2f} ms p99 {o['gateway_p99_ms']:.2f} ms; "
          f"added p50 {o['added_p50_ms']:.2f} ms p99 {o['added_p99_ms']:.2f} ms; gateway CPU "
          f"{o['gateway_cpu_ms_per_request']:.2f} ms per request")
    if "stream_tokens" in o:
        print(f"streamed ({o['stream_tokens']} tokens + usage chunk): direct p50 {o['stream_direct_p50_ms']:.2f} ms; "
              f"gateway p50 {o['stream_gateway_p50_ms']:.2f} ms; added {o['stream_added_p50_ms']:.2f} ms; gateway "
              f"CPU {o['stream_gateway_cpu_ms_per_request']:.2f} ms per request")
    if "throughput" not in res:
        return
    t = res["throughput"]
    print(f"throughput ({t['concurrency']} clients, {t['seconds']:g} s): direct to one replica "
          f"{t['direct_one_replica_rps']:.0f} req/s; through the gateway to {t['gateway_replicas']} replicas "
          f"{t['gateway_rps']:.0f} req/s ({t['gateway_errors']} errors)")

    if "autoscaling" not in res:
        return
    s = res["autoscaling"]

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    print(f"autoscaling (panic 1 s, stable {s['stable_window_s']:g} s, 1 -> 50 clients): scale-out decision "
          f"{f(s['scale_out_decision_s'])}, 4 replicas ready {f(s['all_ready_s'])}; scale-in decision "
          f"{f(s['scale_in_after_load_stopped_s'])} after the clients stopped "
          f"({f(s['scale_in_after_last_answer_s'])} after the last answer); {s['requests']} requests, "
          f"{s['errors']} errors")


if __name__ == "__main__":
    main()
