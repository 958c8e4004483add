"""The store consistency check finds what a broken controller would leave behind, and nothing in a clean run."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from suanli.api.server import open_service
from suanli.control.check import check_store
from suanli.control.db import job_attempts, job_events, jobs


def test_clean_run_then_each_kind_of_damage(tmp_path: Path) -> None:
    svc = open_service(tmp_path / "d", virtual="2x4xBR100", speed=100, tick_s=0.02, retry_base_s=1.0)
    svc.controller.start()
    try:
        assert svc.controller.ready.wait(20)
        c = TestClient(svc.app)
        h = {"Authorization": f"Bearer {svc.admin_token_path.read_text().strip()}"}
        ids = [c.post("/v1/jobs", json={"name": f"j{i}", "command": ["x"], "max_retries": 1,
                                        "resources": {"accelerators": 4},
                                        "simulate": {"duration": 10, "exit_code": i % 2}}, headers=h).json()["id"]
               for i in range(6)]
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if all(c.get(f"/v1/jobs/{i}", headers=h).json()["state"] in ("succeeded", "failed") for i in ids):
                break
            time.sleep(0.05)
    finally:
        svc.controller.stop()
    eng = svc.store.engine
    r = check_store(eng)
    assert r.ok, r.problems
    assert r.jobs == 6 and r.by_state == {"succeeded": 3, "failed": 3} and r.attempts == 9
    with eng.begin() as conn:
        a = conn.execute(sa.select(job_attempts).where(job_attempts.c.job_id == ids[1]).order_by(job_attempts.c.n)
                         ).all()
        conn.execute(job_attempts.update().where(job_attempts.c.id == a[1].id).values(started_at=a[0].started_at))
        conn.execute(jobs.update().where(jobs.c.id == ids[0]).values(state="running"))
        conn.execute(job_events.insert().values(job_id=ids[2], at=0.0, kind="running", message="forged"))
        conn.execute(jobs.update().where(jobs.c.id == ids[4]).values(attempts=5))
    r = check_store(eng)
    text = "\n".join(r.problems)
    assert f"job {ids[1]}: attempt 2 started before attempt 1 ended" in text
    assert f"job {ids[0]}: events end in succeeded but the job is running" in text
    assert f"job {ids[2]}: illegal event sequence" in text
    assert f"job {ids[4]}: attempts column 5 but 1 attempt rows" in text
    svc.store.close()
