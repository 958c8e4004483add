"""Issue 10: the controller keeps nothing per job once the job is terminal (memory flat under a long stream)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from suanli.api.server import open_service
from suanli.fleet.model import build_cluster, generate_nodes
from suanli.sched.alloc import Allocation, Placement
from suanli.workload.spec import JobSpec


def test_domain_index_changes_stay_bounded_when_dom_ge_is_never_read() -> None:
    """Single-node placements never read ``dom_ge``: its pending changes were listed by every take/give, forever
    (~10 entries a job in the controller). A pass (begin) folds them in past a bound; the index stays right."""
    c = build_cluster("t", generate_nodes(64, "H100", 8))
    a = Allocation(c)
    rng = np.random.default_rng(0)
    held: list[Placement] = []
    for i in range(20_000):
        if i % 50 == 0:
            a.begin()
            a.rollback()
        if held and (len(held) > 40 or rng.random() < 0.5):
            a.give(held.pop(int(rng.integers(len(held)))))
            continue
        n = int(rng.integers(c.n_nodes))
        start = int(c.node_dev_start[n])
        free = [d for d in range(start, start + int(c.node_devices[n])) if a.dev_free[d] == 1000]
        if free:
            p = Placement((n,), (tuple(free[:1]),), 1000, (0,), (0,))
            a.take(p)
            held.append(p)
    assert len(a._dd_touched) <= 4096 + 2 * 50 * 2
    fresh = Allocation(c)
    for p in held:
        fresh.take(p)
    assert np.array_equal(a.dom_ge, fresh.dom_ge)


def _sizes(svc: object) -> dict[str, int]:
    ctl = svc.controller  # type: ignore[attr-defined]
    st, ex = ctl.state, svc.executor  # type: ignore[attr-defined]
    return {"known": len(ctl.known), "delayed": len(ctl.delayed), "specs": len(ctl.specs),
            "handles": len(ctl.handles), "placements": len(ctl.placements), "waiting": len(ctl._waiting),
            "fits": len(ctl._fits_cache), "pending": len(st.pending.jobs), "pending_keys": len(st.pending._keys),
            "running": len(st.running.jobs), "node_jobs": sum(map(len, st.running.node_jobs)),
            "usage": len(st.running.usage), "dd_touched_over_bound": max(0, len(st.alloc._dd_touched) - 4096 - 200),
            "progress": len(ex.progress)}


def test_controller_keeps_nothing_per_terminal_job(tmp_path: Path) -> None:
    svc = open_service(tmp_path / "d", virtual="4x8xBR100", speed=2000, tick_s=0.02, with_app=False,
                       retry_base_s=0.5)
    ctl = svc.controller
    ctl.start()
    try:
        assert ctl.ready.wait(30)
        after = []
        for w in range(2):
            specs = [JobSpec(name=f"w{w}-{k}", command=["true"], resources={"accelerators": 1 + k % 2},
                             simulate={"duration": 2, "exit_code": 1 if k % 7 == 0 else 0},
                             max_retries=1 if k % 14 == 0 else 0) for k in range(400)]
            svc.store.submit_many(specs)
            end = time.monotonic() + 120
            while time.monotonic() < end:
                c = svc.store.job_counts()
                if sum(v for s, v in c.items() if s not in ("succeeded", "failed", "cancelled")) == 0:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            with ctl.lock:
                after.append(_sizes(svc))
        c = svc.store.job_counts()
        assert c.get("succeeded", 0) + c.get("failed", 0) == 800 and c.get("failed", 0) > 0
        empty = {k: 0 for k in after[0]} | {"usage": after[0]["usage"]}
        assert after[0] == empty, after[0]  # nothing left of 400 terminal jobs
        assert after[1] == after[0], after  # 400 more: no growth
    finally:
        ctl.stop()
        svc.store.close()


def test_limit_malloc_arenas_caps_the_arenas_threads_get(tmp_path: Path) -> None:
    """`suanli up` caps glibc's malloc arenas (threads that allocate without the GIL - SQLite in the store's worker
    threads - got arenas of their own, and RSS grew with jobs processed). In a fresh process: with the cap, eight
    such threads share at most two arenas (malloc_info lists one <heap> per arena); MALLOC_ARENA_MAX set by the
    operator wins (the call does nothing)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"):
        pytest.skip("glibc only")
    code = r'''
import ctypes, sqlite3, sys, threading
from suanli.control.controller import limit_malloc_arenas
applied = limit_malloc_arenas(2) if sys.argv[1] == "cap" else None
keep = []
def work():  # SQLite allocates without the GIL, as the store's worker threads do
    c = sqlite3.connect(":memory:")
    c.execute("create table t (x)")
    for _ in range(50):
        c.execute("insert into t select randomblob(200) from (select 1 union all select 2)")
        c.execute("select count(*), sum(length(a.x)) from t as a, t as b").fetchall()
    keep.append(c)
ts = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
libc = ctypes.CDLL("libc.so.6")
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
libc.open_memstream.restype = ctypes.c_void_p
f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(f)); libc.fclose(ctypes.c_void_p(f))
print(applied, buf.value.decode().count("<heap nr="), len(keep))
'''
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")

    def run(mode: str, **extra: str) -> tuple[str, int]:
        p = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60,
                           env={**env, **extra}, check=True)
        out = p.stdout.split()
        assert out[2] == "8", p.stderr[-2000:]  # every thread did its work
        return out[0], int(out[1])

    applied, heaps = run("cap")
    assert applied == "True" and heaps <= 2, (applied, heaps)
    free = []
    while len(free) < 3 and (not free or max(free) <= 2):  # arenas are made on contention: a run or three
        free.append(run("none")[1])
    assert max(free) > 2, free  # without the cap the threads got arenas of their own
    applied, heaps = run("cap", MALLOC_ARENA_MAX="4")
    assert applied == "False"
