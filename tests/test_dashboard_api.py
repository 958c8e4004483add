"""The API behind the dashboard: the fleet (states, jobs, totals, what a tenant sees), queue usage against quota,
history samples (downsampling and retention, SQLite and PostgreSQL), the planner, and the pages themselves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.api.models import Fleet
from suanli.api.server import Service, open_service
from suanli.control.db import sqlite_url
from suanli.control.history import Sampler, sample_of
from suanli.control.store import HISTORY_KEEP_S, Store
from test_api_schema import _check
from test_control_store import pg_url_or_skip


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = open_service(tmp_path_factory.mktemp("dapi") / "data", devices="4xBR100", node="n1", tick_s=0.02,
                     retry_base_s=0.05, grace_s=1.0, sample_s=0.05)
    s.controller.start()
    assert s.controller.ready.wait(10)
    yield s
    s.controller.stop()
    s.store.close()


@pytest.fixture(scope="module")
def client(svc: Service) -> TestClient:
    return TestClient(svc.app)


def hdr(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def wait(c: TestClient, h: dict[str, str], jid: int, state: str) -> None:
    end = time.monotonic() + 15
    while c.get(f"/v1/jobs/{jid}", headers=h).json()["state"] != state:
        assert time.monotonic() < end, f"job {jid} never {state}"
        time.sleep(0.03)


def test_fleet_states_jobs_totals_and_tenant_view(client: TestClient, svc: Service) -> None:
    h = hdr(svc.admin_token_path.read_text().strip())
    ta = client.post("/v1/tenants", json={"name": "fa"}, headers=h).json()["token"]
    tb = client.post("/v1/tenants", json={"name": "fb"}, headers=h).json()["token"]
    client.post("/v1/queues", json={"name": "qa", "quota": {"BR100": 1}}, headers=h)
    jid = client.post("/v1/jobs", json={"name": "a-job", "queue": "qa", "command": ["sleep", "30"],
                                        "resources": {"accelerators": 3}}, headers=hdr(ta)).json()["id"]
    wait(client, h, jid, "running")
    spec = client.get("/openapi.json").json()
    f = _check(spec, "get", "/v1/fleet", client.get("/v1/fleet", headers=h))  # the documented schema
    assert Fleet.model_validate(f).model_dump(mode="json") == f  # nothing the model would drop or change
    devs = f["nodes"][0]["devices"]
    assert sorted(d[2] for d in devs) == ["busy", "busy", "busy", "free"]
    assert all(d[3] == [jid] for d in devs if d[2] == "busy")
    assert f["jobs"][str(jid)] == {"name": "a-job", "tenant": "fa", "queue": "qa"}
    assert f["totals"] == [{"vendor": "Biren", "model": "BR100", "total": 4, "busy": 3, "free": 1, "drained": 0,
                            "unhealthy": 0, "lost": 0}]
    fb = client.get("/v1/fleet", headers=hdr(tb)).json()  # another tenant: busy devices, no job
    assert fb["jobs"] == {} and sorted(d[2] for d in fb["nodes"][0]["devices"]).count("busy") == 3
    assert all(d[3] == [] for d in fb["nodes"][0]["devices"])
    assert client.get("/v1/fleet", headers=hdr(ta)).json()["jobs"].keys() == {str(jid)}

    # queue usage: 3 in use against a quota of 1 -> 2 borrowed; a waiting job counted for its tenant only
    w = client.post("/v1/jobs", json={"name": "a-wait", "queue": "qa", "command": ["true"],
                                      "resources": {"accelerators": 2}}, headers=hdr(ta)).json()["id"]
    end = time.monotonic() + 10
    while client.get(f"/v1/jobs/{w}", headers=h).json()["reason"] != "capacity":  # after the next pass
        assert time.monotonic() < end, client.get(f"/v1/jobs/{w}", headers=h).json()
        time.sleep(0.03)
    j = client.get(f"/v1/jobs/{w}", headers=hdr(ta)).json()
    assert j["reason_detail"] == "waiting for capacity: needs 2 BR100; 1 free"
    listed = client.get("/v1/jobs", params={"state": "pending"}, headers=hdr(ta)).json()["items"]
    assert [(x["id"], x["reason"]) for x in listed] == [(w, "capacity")]
    assert client.get(f"/v1/jobs/{jid}", headers=h).json()["reason_detail"] is None  # running: no reason
    assert 'suanli_waiting_jobs{reason="capacity"} 1.0' in client.get("/metrics").text
    u = {q["name"]: q for q in _check(spec, "get", "/v1/queues/usage", client.get("/v1/queues/usage", headers=h))}
    assert u["qa"]["used"] == {"BR100": 3.0} and u["qa"]["borrowed"] == {"BR100": 2.0}
    assert u["qa"]["running"] == 1 and u["qa"]["pending"] == 1 and u["qa"]["quota"] == {"BR100": 1}
    assert {q["name"]: q for q in client.get("/v1/queues/usage", headers=hdr(tb)).json()}["qa"]["pending"] == 0

    # drained shows on idle devices
    client.post(f"/v1/jobs/{w}/cancel", headers=h)  # the waiting one first: it must not start on jid's devices
    wait(client, h, w, "cancelled")
    client.post(f"/v1/jobs/{jid}/cancel", headers=h)
    wait(client, h, jid, "cancelled")
    client.post("/v1/nodes/n1/drain", headers=h)
    assert {d[2] for d in client.get("/v1/fleet", headers=h).json()["nodes"][0]["devices"]} == {"drained"}
    client.post("/v1/nodes/n1/undrain", headers=h)


def test_history_is_sampled_by_the_controller(client: TestClient, svc: Service) -> None:
    h = hdr(svc.admin_token_path.read_text().strip())
    end = time.monotonic() + 10
    while len(client.get("/v1/history", headers=h).json()["samples"]) < 3:
        assert time.monotonic() < end
        time.sleep(0.05)
    out = _check(client.get("/openapi.json").json(), "get", "/v1/history", client.get("/v1/history", headers=h))
    assert out["window"] == "hour" and out["step_s"] == 0.05
    s = out["samples"][-1]
    assert s["total"] == 4.0 and set(s) == {"at", "total", "allocated", "running", "pending", "reasons"}
    assert client.get("/v1/history", params={"window": "year"}, headers=h).status_code == 422
    assert client.get("/v1/history").status_code == 401


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = sqlite_url(tmp_path / "h.db") if request.param == "sqlite" else pg_url_or_skip()
    s = Store.open(url)
    with s.write() as c:  # a shared PostgreSQL database: start from no samples
        from suanli.control.db import samples

        c.execute(samples.delete())
    yield s
    s.close()


def test_samples_are_downsampled_and_retained(store: Store) -> None:
    t0 = 1_800_000_000.0 - (1_800_000_000.0 % 3600)  # an hour boundary
    snap: dict[str, Any] = {"devices": {"H100": (8, 2.0), "BR100": (4, 1.0)}, "running": 2,
                            "waiting_by_reason": {"quota": 3, "capacity": 1}}
    assert sample_of(snap) == {"total": 12.0, "allocated": 3.0, "running": 2, "pending": 4,
                               "reasons": {"quota": 3, "capacity": 1}}
    clock = [t0]
    sm = Sampler(store, interval_s=60, clock=lambda: clock[0])
    for k in range(3 * 60 + 1):  # three hours and a minute, one sample a minute, allocation rising
        clock[0] = t0 + 60 * k
        snap["devices"]["H100"] = (8, float(k % 5))
        assert sm.observe(snap)
        clock[0] += 30
        assert not sm.observe(snap)  # not yet: one a minute
    now = t0 + 180 * 60
    raw = store.history(now - 3 * 3600 - 1, 0)
    assert [r["at"] for r in raw][-1] == now and len(raw) == 121  # raw: the last two hours
    five = store.history(0, 1)
    assert len(five) == 36 and five[0]["at"] == t0 and five[1]["at"] == t0 + 300
    assert five[0]["allocated"] == pytest.approx(1.0 + (0 + 1 + 2 + 3 + 4) / 5)  # the mean of its five samples
    assert five[0]["reasons"] == {"quota": 3.0, "capacity": 1.0}
    hourly = store.history(0, 2)
    assert [r["at"] for r in hourly] == [t0, t0 + 3600, t0 + 7200]
    assert hourly[0]["pending"] == 4.0
    # retention: a sample far later drops raw samples older than two hours
    store.add_sample(now + HISTORY_KEEP_S[0] + 60, sample_of(snap))
    assert [r["at"] for r in store.history(0, 0)] == [now + HISTORY_KEEP_S[0] + 60]
    assert len(store.history(0, 1)) == 36  # while five-minute averages are kept for two days


def test_plan_api_and_its_errors(client: TestClient, svc: Service) -> None:
    h = hdr(svc.admin_token_path.read_text().strip())
    r = client.get("/v1/plan/serve", params={"model": "Llama-3.1-8B", "accelerator": "H100,910B"}, headers=h)
    assert r.status_code == 200 and [x["accelerator"] for x in r.json()] == ["H100", "910B"]
    assert r.json()[0]["tokens_per_s"] > 0 and "ttft_s" in r.json()[0]
    r = client.get("/v1/plan/train", params={"model": "Llama-3.1-8B", "accelerator": "H100", "tokens": "1T"},
                   headers=h)
    assert r.status_code == 200 and r.json()[0]["days"] > 0 and r.json()[0]["chips"] >= 1
    r = client.get("/v1/plan/serve", params={"model": "nope", "accelerator": "H100"}, headers=h)
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]
    r = client.get("/v1/plan/train", params={"model": "Llama-3.1-8B", "accelerator": "H100", "tokens": "lots"},
                   headers=h)
    assert r.status_code == 422 and "tokens" in r.json()["detail"]


def test_pages_are_served_with_a_strict_policy_and_local_assets(client: TestClient) -> None:
    for path in ("/", "/login", "/ui/queues", "/ui/jobs", "/ui/jobs/5", "/ui/nodes", "/ui/history", "/ui/plan"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "http://" not in r.text and "https://" not in r.text, f"{path} loads something from elsewhere"
    assert client.get("/ui/jobs/0").status_code == 422
    for asset in ("/static/app.js", "/static/fleet.js", "/static/vendor/uPlot.iife.min.js", "/static/app.css"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/ui/fleet", follow_redirects=False).headers["location"] == "/"


def test_cli_jobs_table_has_a_reason_column() -> None:
    from rich.console import Console

    from suanli.cli.client import _jobs_table

    base = {"name": "j", "tenant": "t", "queue": "q", "priority": 0, "attempts": 0, "exit_code": None,
            "submit_time": 0.0}
    items = [{**base, "id": 1, "state": "pending", "reason": "quota", "reason_detail": "queue at its quota"},
             {**base, "id": 2, "state": "failed", "reason": "exit 3", "reason_detail": None, "exit_code": 3},
             {**base, "id": 3, "state": "running", "reason": None, "reason_detail": None}]
    con = Console(width=200, record=True)
    con.print(_jobs_table(items))
    lines = con.export_text().splitlines()
    assert lines[0].split()[-1] == "REASON"
    assert lines[1].split()[-1] == "quota" and lines[2].split()[-2:] == ["exit", "3"]
    assert lines[3].split()[-1] != "None"
