"""Issue 10: the controller keeps nothing per job once the job is terminal (memory flat under a long stream)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

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
