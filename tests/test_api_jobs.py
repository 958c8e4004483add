"""The REST API through real HTTP handling (TestClient), on SQLite and PostgreSQL: auth, tenants, jobs, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.api.server import Service, open_service
from test_control_store import pg_url_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    db = None if request.param == "sqlite" else pg_url_or_skip()
    s = open_service(tmp_path / "data", db=db, devices="4xBR100", node="n1", tick_s=0.02, retry_base_s=0.05,
                     grace_s=1.0)
    s.controller.start()
    assert s.controller.ready.wait(10)
    yield s
    s.controller.stop()
    s.store.close()


@pytest.fixture
def client(svc: Service) -> TestClient:
    return TestClient(svc.app)


def admin_h(svc: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.admin_token_path.read_text().strip()}"}


def wait_state(c: TestClient, h: dict[str, str], jid: int, states: set[str], timeout: float = 15) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{jid}", headers=h).json()
        if j["state"] in states or time.monotonic() > end:
            return j
        time.sleep(0.03)


def test_missing_or_wrong_token_is_401(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 401
    r = client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/jobs", json={"name": "x", "command": ["true"]}).status_code == 401


def test_tenant_isolation_404_and_admin_sees_all(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    ta = client.post("/v1/tenants", json={"name": "team-a"}, headers=h).json()["token"]
    tb = client.post("/v1/tenants", json={"name": "team-b"}, headers=h).json()["token"]
    ha, hb = {"Authorization": f"Bearer {ta}"}, {"Authorization": f"Bearer {tb}"}
    r = client.post("/v1/jobs", json={"name": "mine", "command": ["sleep", "30"]}, headers=ha)
    assert r.status_code == 201 and r.json()["tenant"] == "team-a"  # submitted as itself
    jid = r.json()["id"]
    assert client.get(f"/v1/jobs/{jid}", headers=hb).status_code == 404
    assert client.post(f"/v1/jobs/{jid}/cancel", headers=hb).status_code == 404
    assert client.get(f"/v1/jobs/{jid}/logs", headers=hb).status_code == 404
    assert client.get(f"/v1/jobs/{jid}/events", headers=hb).status_code == 404
    assert client.get("/v1/jobs", headers=hb).json()["items"] == []
    assert client.get("/v1/jobs", params={"tenant": "team-a"}, headers=hb).json()["items"] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=ha).json()["items"]] == [jid]
    assert client.get(f"/v1/jobs/{jid}", headers=h).status_code == 200
    r = client.post("/v1/jobs", json={"name": "x", "tenant": "team-b", "command": ["true"]}, headers=ha)
    assert r.status_code == 403 and "tenant" in r.json()["detail"]
    assert client.get("/v1/tenants", headers=ha).status_code == 403
    assert client.post("/v1/queues", json={"name": "q"}, headers=ha).status_code == 403
    assert client.post("/v1/nodes/n1/drain", headers=ha).status_code == 403
    assert client.post(f"/v1/jobs/{jid}/cancel", headers=ha).status_code == 202
    assert wait_state(client, h, jid, {"cancelled"})["state"] == "cancelled"


def test_submit_yaml_runs_and_records_events_and_logs(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    y = ("name: y\nresources: {accelerators: 2}\n"
         "command: [sh, -c, 'echo rank=$RANK ws=$WORLD_SIZE v=$BIREN_VISIBLE_DEVICES']\n")
    r = client.post("/v1/jobs", content=y, headers={**h, "Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    j = wait_state(client, h, jid, {"succeeded", "failed"})
    assert j["state"] == "succeeded" and j["exit_code"] == 0
    assert client.get(f"/v1/jobs/{jid}/logs", headers=h).text.strip() == "rank=0 ws=2 v=0,1"
    assert client.get(f"/v1/jobs/{jid}/logs", params={"rank": 1}, headers=h).text.strip() == "rank=1 ws=2 v=0,1"
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{jid}/events", headers=h).json()]
    assert kinds == ["submitted", "running", "succeeded"]
    follow = client.get(f"/v1/jobs/{jid}/logs", params={"follow": True, "tail": 1}, headers=h)
    assert follow.text.strip() == "rank=0 ws=2 v=0,1"


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"name": "x", "command": ["true"], "resources": {"accelerators": 2.5}}, 422, "body.resources"),
    ({"name": "x", "command": ["true"], "priority": 5000}, 422, "body.priority"),
    ({"name": "bad name!", "command": ["true"]}, 422, "body.name"),
    ({"name": "x", "command": ["true"], "resources": {"model": "NOPE"}}, 422, "unknown accelerator"),
    ({"name": "x", "command": ["true"], "colour": "red"}, 422, "body.colour"),
    ({"name": "x"}, 422, "body.command"),
    ({"name": "x", "command": ["true"], "queue": "nowhere"}, 422, "body.queue"),
    ({"name": "x", "command": ["true"], "tenant": "ghost"}, 422, "body.tenant"),
    ({"name": "x", "command": ["true"], "resources": {"accelerators": 64}}, 422, "can never run"),
    ({"name": "x", "command": ["a\u0000b"]}, 422, "NUL"),
    ({"name": "x", "command": ["true"], "expected_runtime": "soon"}, 422, "body.expected_runtime"),
    ([1, 2], 422, "object"),
])
def test_bad_jobs_get_4xx_with_field_and_nothing_is_written(client: TestClient, svc: Service, body: Any,
                                                            status: int, fragment: str) -> None:
    h = admin_h(svc)
    r = client.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert client.get("/v1/jobs", headers=h).json()["items"] == []


def test_malformed_bodies_and_limits(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    assert client.post("/v1/jobs", content=b"{not json", headers={**h, "Content-Type": "application/json"}
                       ).status_code == 400
    r = client.post("/v1/jobs", content="name: [unclosed\n", headers={**h, "Content-Type": "application/yaml"})
    assert r.status_code in (400, 422) and "YAML" in r.json()["detail"]
    r = client.post("/v1/jobs", content="name: x\ncommand: [true]\nresources:\n  accelerators: -1\n",
                    headers={**h, "Content-Type": "application/yaml"})
    assert r.status_code == 422 and "body:4: resources.accelerators" in r.json()["detail"]
    big = b'{"name": "x", "command": ["' + b"a" * 400_000 + b'"]}'
    assert client.post("/v1/jobs", content=big, headers={**h, "Content-Type": "application/json"}
                       ).status_code == 413
    assert client.get("/v1/jobs", params={"limit": 0}, headers=h).status_code == 422
    assert client.get("/v1/jobs", params={"state": "sleeping"}, headers=h).status_code == 422
    assert client.get(f"/v1/jobs/{2**70}", headers=h).status_code == 422
    assert client.get("/v1/jobs/999999", headers=h).status_code == 404
    # NUL characters (PostgreSQL cannot store them) are a 4xx wherever they come in
    assert client.post("/v1/nodes/a%00b/drain", headers=h).status_code == 422
    assert client.patch("/v1/queues/a%00b", json={"weight": 1}, headers=h).status_code == 422
    assert client.post("/v1/queues", json={"name": "q", "quota": {"a\u0000": 1}}, headers=h).status_code == 422
    assert client.get("/v1/jobs", params={"queue": "a\x00"}, headers=h).status_code == 422
    r = client.post("/v1/jobs", json={"name": "x", "command": ["true"], "env": {"A": "\u0000"}}, headers=h)
    assert r.status_code == 422 and "body.env.A" in r.json()["detail"]
    assert client.get("/v1/jobs", headers=h).json()["items"] == []


def test_queues_tenants_nodes_admin(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    r = client.post("/v1/queues", json={"name": "research", "weight": 2, "quota": {"br100": 4}}, headers=h)
    assert r.status_code == 201 and r.json()["quota"] == {"BR100": 4}
    assert client.post("/v1/queues", json={"name": "research"}, headers=h).status_code == 409
    assert client.post("/v1/queues", json={"name": "q2", "quota": {"XYZ": 1}}, headers=h).status_code == 422
    r = client.patch("/v1/queues/research", json={"weight": 3.5}, headers=h)
    assert r.status_code == 200 and r.json()["weight"] == 3.5 and r.json()["quota"] == {"BR100": 4}
    assert client.patch("/v1/queues/none", json={"weight": 1}, headers=h).status_code == 404
    assert {q["name"] for q in client.get("/v1/queues", headers=h).json()} == {"default", "research"}
    assert client.post("/v1/tenants", json={"name": "default"}, headers=h).status_code == 409
    nodes = client.get("/v1/nodes", headers=h).json()
    assert nodes[0]["name"] == "n1" and nodes[0]["devices"] == 4 and nodes[0]["declared"] is True
    devs = client.get("/v1/devices", headers=h).json()
    assert [d["local_index"] for d in devs] == [0, 1, 2, 3] and all(d["declared"] for d in devs)
    assert client.post("/v1/nodes/n1/drain", headers=h).json()["drained"] is True
    assert client.post("/v1/nodes/zz/drain", headers=h).status_code == 404
    # drained: a job waits; undrained: it runs
    jid = client.post("/v1/jobs", json={"name": "w", "command": ["true"], "resources": {"accelerators": 1}},
                      headers=h).json()["id"]
    time.sleep(0.6)
    assert client.get(f"/v1/jobs/{jid}", headers=h).json()["state"] == "pending"
    client.post("/v1/nodes/n1/undrain", headers=h)
    assert wait_state(client, h, jid, {"succeeded"})["state"] == "succeeded"


def test_metrics(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    jid = client.post("/v1/jobs", json={"name": "m", "command": ["sleep", "5"], "resources": {"accelerators": 3}},
                      headers=h).json()["id"]
    wait_state(client, h, jid, {"running"})
    time.sleep(0.2)
    text = client.get("/metrics").text
    assert 'suanli_jobs{state="running"} 1.0' in text
    assert 'suanli_devices{model="BR100"} 4.0' in text
    assert 'suanli_devices_allocated{model="BR100"} 3.0' in text
    assert "suanli_scheduling_latency_seconds_count" in text
    assert "suanli_queue_pending_jobs" in text
    client.post(f"/v1/jobs/{jid}/cancel", headers=h)
    assert wait_state(client, h, jid, {"cancelled"})["state"] == "cancelled"


def test_openapi_is_served(client: TestClient) -> None:
    s = client.get("/openapi.json").json()
    assert "/v1/jobs" in s["paths"] and "JobSpec" in s["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_logs_follow_streams_a_running_job_to_its_end(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    jid = client.post("/v1/jobs", json={"name": "talk", "command": [
        "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.15; done"]}, headers=h).json()["id"]
    wait_state(client, h, jid, {"running"})
    t0 = time.monotonic()
    with client.stream("GET", f"/v1/jobs/{jid}/logs", params={"follow": True}, headers=h) as r:
        chunks = [c for c in r.iter_text() if c]
    assert "".join(chunks).split() == [w for i in range(1, 6) for w in ("line", str(i))]
    assert time.monotonic() - t0 > 0.2  # it waited for the output, it did not just read a finished file
    assert client.get(f"/v1/jobs/{jid}/logs", params={"tail": 2}, headers=h).text == "line 4\nline 5\n"


def test_fair_policy_quota_from_the_queues_table(tmp_path: Path) -> None:
    s = open_service(tmp_path / "d", devices="4xBR100", node="n1", tick_s=0.02, policy="fair", grace_s=1.0)
    s.store.create_queue("prod", 1.0, {"BR100": 3}, False)  # no borrowing: at most 3 devices
    s.controller.start()
    try:
        assert s.controller.ready.wait(10)
        c, h = TestClient(s.app), admin_h(s)
        ids = [c.post("/v1/jobs", json={"name": f"p{i}", "queue": "prod", "resources": {"accelerators": 1},
                                        "command": ["sleep", "30"]}, headers=h).json()["id"] for i in range(4)]
        time.sleep(0.8)
        states = [c.get(f"/v1/jobs/{i}", headers=h).json()["state"] for i in ids]
        assert sorted(states) == ["pending", "running", "running", "running"]
        for i in ids:
            c.post(f"/v1/jobs/{i}/cancel", headers=h)
        for i in ids:
            wait_state(c, h, i, {"cancelled"})
    finally:
        s.controller.stop()


def test_logs_follow_waits_for_the_start_and_follows_retries(client: TestClient, svc: Service) -> None:
    h = admin_h(svc)
    client.post("/v1/nodes/n1/drain", headers=h)  # it waits in the queue first
    jid = client.post("/v1/jobs", json={"name": "retry", "max_retries": 1, "resources": {"accelerators": 1},
                                        "command": ["sh", "-c", "echo try $SUANLI_ATTEMPT; [ $SUANLI_ATTEMPT = 2 ]"]},
                      headers=h).json()["id"]
    import threading

    threading.Timer(0.5, lambda: client.post("/v1/nodes/n1/undrain", headers=h)).start()
    with client.stream("GET", f"/v1/jobs/{jid}/logs", params={"follow": True}, headers=h) as r:
        text = "".join(r.iter_text())
    assert text == "try 1\n--- attempt 2 ---\ntry 2\n"
    assert client.get(f"/v1/jobs/{jid}/logs", params={"attempt": 3}, headers=h).status_code == 404
    assert client.get(f"/v1/jobs/{jid}/logs", params={"attempt": 1}, headers=h).text == "try 1\n"


def test_tail_of_a_large_log_reads_backwards(tmp_path: Path) -> None:
    from suanli.api.app import _file_chunks, _last_lines

    p = tmp_path / "log"
    p.write_bytes(b"".join(b"line %d\n" % i for i in range(200_000)))
    assert _last_lines(p, 3) == b"line 199997\nline 199998\nline 199999\n"
    assert _last_lines(p, 1, end=14) == b"line 1\n"
    assert b"".join(_file_chunks(p)) == p.read_bytes()
    p.write_bytes(b"no newline at the end")
    assert _last_lines(p, 5) == b"no newline at the end"


def test_partitions_in_the_live_control_plane(tmp_path: Path) -> None:
    """Fleet file pools bind nodes to partitions; a queue or a job names its partitions; the controller places
    only there, and `can never run` answers a job whose partitions have no node that fits."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: lab\npools:\n"
                     "  - {name: tr, count: 1, accelerator: H100, per_node: 2, partitions: [train]}\n"
                     "  - {name: sv, count: 1, accelerator: H100, per_node: 2, partitions: [serve]}\n")
    s = open_service(tmp_path / "d", virtual=str(fleet), tick_s=0.02, speed=1.0, grace_s=1.0)
    s.controller.start()
    try:
        assert s.controller.ready.wait(10)
        c, h = TestClient(s.app), admin_h(s)
        r = c.post("/v1/queues", json={"name": "training", "partitions": ["train"]}, headers=h)
        assert r.status_code == 201 and r.json()["partitions"] == ["train"]
        assert c.post("/v1/queues", json={"name": "bad", "partitions": ["no space"]}, headers=h).status_code == 422
        end = time.monotonic() + 5  # the controller re-reads the queues table every 10 ticks
        while "training" not in s.controller.sched.queues and time.monotonic() < end:
            time.sleep(0.02)
        nodes = {n["name"]: n for n in c.get("/v1/nodes", headers=h).json()}
        assert len(nodes) == 2
        job = {"resources": {"accelerators": 1}, "command": ["sleep", "30"], "expected_runtime": 600}
        ids = [c.post("/v1/jobs", json={**job, "name": f"t{i}", "queue": "training"}, headers=h).json()["id"]
               for i in range(3)]
        own = c.post("/v1/jobs", json={**job, "name": "s", "queue": "training", "partitions": ["serve"]},
                     headers=h).json()["id"]
        big = c.post("/v1/jobs", json={**job, "name": "big", "partitions": ["train"],
                                       "resources": {"accelerators": 4}}, headers=h)
        assert big.status_code == 422 and "never run" in big.text  # 4 devices, but train has 2
        for i in [*ids[:2], own]:
            wait_state(c, h, i, {"running"})
        time.sleep(0.3)
        assert c.get(f"/v1/jobs/{ids[2]}", headers=h).json()["state"] == "pending"  # train is full
        where = {i: c.get(f"/v1/jobs/{i}", headers=h).json() for i in [*ids[:2], own]}
        assert all("tr" in str(where[i]) for i in ids[:2]) and "sv" in str(where[own])
        assert c.patch("/v1/queues/training", json={"partitions": []}, headers=h).json()["partitions"] is None
    finally:
        s.controller.stop()
        s.store.close()
