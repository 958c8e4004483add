"""Controller memory per terminal job (issue 10): an in-process controller on a virtual fleet takes bursts of short
one-device jobs (large, small, large, small...); after each burst has drained (every job terminal) it prints RSS,
glibc malloc in use / free, pymalloc's live blocks and arenas, and the controller's per-job containers.

    PYTHONPATH=src python bench/ctl_memory.py --nodes 1250 --jobs 8000 --bursts 4 [--api] [--tracemalloc] [--json]

Live Python objects that grow from one drained burst to the next are kept per job (a leak); arenas and RSS that
stay at the first large burst's level are the allocators' high-water mark (fragmentation), not live objects.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from suanli.api.server import open_service
from suanli.control.controller import _malloc_trim
from suanli.workload.spec import JobSpec


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_info() -> tuple[float, float] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return None
    return (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20


def _pymalloc() -> dict[str, float]:
    """pymalloc's arenas and live bytes (sys._debugmallocstats, read from fd 2)."""
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    os.close(w)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    os.set_blocking(r, False)
    out = b""
    try:
        while chunk := os.read(r, 1 << 16):
            out += chunk
    except BlockingIOError:
        pass
    os.close(r)
    t = out.decode(errors="replace")

    def num(pat: str) -> float:
        m = re.search(pat + r"\s*=\s*([\d,]+)", t)
        return float(m.group(1).replace(",", "")) if m else float("nan")

    return {"arenas": num(r"# arenas allocated current"), "live_mib": num(r"# bytes in allocated blocks") / 2**20}


def _sqlite_mib() -> float | None:
    """Memory SQLite holds in this process (page caches, statements: ``sqlite3_memory_used``)."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        return float(lib.sqlite3_memory_used()) / 2**20
    except (OSError, AttributeError):
        return None


def measure(svc: Any) -> dict[str, Any]:
    ctl = svc.controller
    with ctl.lock:
        gc.collect()
        st = ctl.state
        sizes = {"known": len(ctl.known), "delayed": len(ctl.delayed), "specs": len(ctl.specs),
                 "handles": len(ctl.handles), "placements": len(ctl.placements), "waiting": len(ctl._waiting),
                 "pending": len(st.pending.jobs), "running": len(st.running.jobs),
                 "alloc_dd_touched": len(st.alloc._dd_touched), "progress": len(svc.executor.progress)}
    with open("/proc/self/status") as f:
        status = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in f if ln.startswith("Rss")}
    mi = _malloc_info()
    out: dict[str, Any] = {"rss_mib": round(sum(status.values()), 1),
                           "rss_anon_mib": round(status.get("RssAnon", 0), 1),
                           "malloc_used_mib": round(mi[0], 1) if mi else None,
                           "malloc_free_mib": round(mi[1], 1) if mi else None,
                           "sqlite_mib": round(v, 1) if (v := _sqlite_mib()) is not None else None,
                           **{f"pymalloc_{k}": round(v, 1) for k, v in _pymalloc().items()}, "sizes": sizes}
    if tracemalloc.is_tracing():
        out["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
    return out


def serve(svc: Any) -> tuple[Any, str, threading.Thread]:
    """The service's app on a free 127.0.0.1 port, in a thread (uvicorn, as `suanli up` runs it)."""
    import socket

    import uvicorn

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_level="warning",
                                          access_log=False))
    th = threading.Thread(target=server.run, name="api", daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}", th


async def through_api(url: str, svc: Any, burst: int, n: int, duration: float, before: int) -> None:
    """``n`` submissions through the API, 16 in flight; every tenth also reads a random stored job and lists a page."""
    import random

    import httpx

    tok = svc.admin_token_path.read_text().strip()
    rng = random.Random(burst)
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {tok}"}, timeout=120) as c:
        async def one(i: int) -> None:
            async with sem:
                spec = {"name": f"b{burst}-{i}", "command": ["true"], "resources": {"accelerators": 1},
                        "simulate": {"duration": duration}}
                r = await c.post("/v1/jobs", json=spec)
                r.raise_for_status()
                if i % 10 == 0:
                    (await c.get(f"/v1/jobs/{rng.randint(1, before + i + 1)}")).raise_for_status()
                    (await c.get("/v1/jobs", params={"limit": 100})).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1250)
    ap.add_argument("--jobs", type=int, default=8000, help="jobs in a large burst (a small one: an eighth)")
    ap.add_argument("--bursts", type=int, default=4)
    ap.add_argument("--speed", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=400.0, help="virtual seconds each job runs")
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slow)")
    ap.add_argument("--api", action="store_true", help="serve the API in this process (uvicorn, as `suanli up`) and "
                    "submit through it, 16 in flight, reading a job back and listing a page per ten submissions")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    dd = Path(tempfile.mkdtemp(prefix="ctl-memory-"))
    svc = open_service(dd, virtual=f"{a.nodes}x8xBR100", speed=a.speed, tick_s=0.05, with_app=a.api)
    ctl = svc.controller
    ctl.start()
    if not ctl.ready.wait(300):
        print("controller did not start", file=sys.stderr)
        return 1
    server = serve(svc) if a.api else None
    if a.tracemalloc:
        tracemalloc.start(1)
    rows = [{"burst": "start", **measure(svc)}]
    total = 0
    try:
        for b in range(a.bursts):
            n = a.jobs if b % 2 == 0 else max(1, a.jobs // 8)
            if server is not None:
                asyncio.run(through_api(server[1], svc, b, n, a.duration, total))
            else:
                for k in range(0, n, 500):
                    svc.store.submit_many([JobSpec(name=f"b{b}-{i}", command=["true"],
                                                   resources={"accelerators": 1}, simulate={"duration": a.duration})
                                           for i in range(k, min(n, k + 500))])
            total += n
            peak, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < 2 or ctl.known or ctl.handles:
                peak = max(peak, len(ctl.handles))
                time.sleep(0.1)
            _malloc_trim()
            rows.append({"burst": b, "jobs": n, "terminal": total, "peak_running": peak,
                         "drain_s": round(time.monotonic() - t0, 1), **measure(svc)})
            if not a.json:
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server[0].should_exit = True
            server[2].join(10)
        ctl.stop()
        svc.store.close()
    if a.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
