"""The real controller, store and API on a virtual fleet (``open_service(virtual=...)``): runtimes on the virtual
clock, failures and retries, cancel and preemption, a node lost and back, a controller restart that re-adopts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.api.server import Service, open_service

SPEED = 50.0


def start(dd: Path, **kw: Any) -> Service:
    kw.setdefault("policy", "fifo")
    svc = open_service(dd, virtual="3x4xBR100", speed=SPEED, tick_s=0.02, retry_base_s=10.0, grace_s=2.0, **kw)
    svc.controller.nodes_every_s = 0.05
    svc.controller.start()
    assert svc.controller.ready.wait(20)
    return svc


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    s = start(tmp_path / "d")
    yield s
    s.controller.stop()
    s.store.close()


def hdr(s: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.admin_token_path.read_text().strip()}"}


def submit(c: TestClient, s: Service, **spec: Any) -> int:
    spec.setdefault("command", ["sleep", "1"])
    r = c.post("/v1/jobs", json=spec, headers=hdr(s))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def wait(c: TestClient, s: Service, jid: int, states: set[str], timeout: float = 20) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{jid}", headers=hdr(s)).json()
        if j["state"] in states or time.monotonic() > end:
            return j
        time.sleep(0.02)


def test_virtual_nodes_run_jobs_on_the_virtual_clock(svc: Service) -> None:
    c = TestClient(svc.app)
    h = c.get("/healthz").json()
    assert h["virtual"]["speed"] == SPEED and h["virtual"]["devices"] == 12
    names = [n["name"] for n in c.get("/v1/nodes", headers=hdr(svc)).json()]
    assert len(names) == 3 and all(n.startswith("virt-") for n in names)
    t0 = time.monotonic()
    jid = submit(c, svc, name="a", resources={"accelerators": 8}, simulate={"duration": 25})  # 0.5 s of wall
    j = wait(c, svc, jid, {"succeeded", "failed"})
    wall = time.monotonic() - t0
    assert j["state"] == "succeeded" and 0.4 < wall < 15  # not 25 s: the virtual clock (slack for a loaded box)
    a = j["attempt_list"][0]
    assert len(a["placement"]["nodes"]) == 2  # 8 devices over two 4-device nodes: a gang of 8 ranks
    assert 25 <= (a["ended_at"] - a["started_at"]) * SPEED < 25 + 3 * SPEED  # ends seen at the next tick
    log = c.get(f"/v1/jobs/{jid}/logs", params={"rank": 7}, headers=hdr(svc)).text
    assert "virtual rank 7/8" in log and "exit 0" in log


def test_failures_retry_with_backoff_on_the_virtual_clock(svc: Service) -> None:
    c = TestClient(svc.app)
    jid = submit(c, svc, name="f", max_retries=1, simulate={"duration": 5, "exit_code": 3})
    j = wait(c, svc, jid, {"failed"})
    assert j["state"] == "failed" and j["exit_code"] == 3 and j["attempts"] == 2
    a1, a2 = j["attempt_list"]
    assert (a2["started_at"] - a1["ended_at"]) * SPEED >= 9  # 10 virtual seconds of back-off


def test_cancel_and_preemption_are_honoured(tmp_path: Path) -> None:
    s = start(tmp_path / "p", policy="fifo")
    try:
        c = TestClient(s.app)
        low = submit(c, s, name="low", priority=0, resources={"accelerators": 12}, simulate={"duration": 10_000})
        assert wait(c, s, low, {"running"})["state"] == "running"
        hi = submit(c, s, name="hi", priority=10, resources={"accelerators": 4}, simulate={"duration": 10})
        assert wait(c, s, hi, {"succeeded"})["state"] == "succeeded"
        j = c.get(f"/v1/jobs/{low}", headers=hdr(s)).json()
        assert j["attempts"] >= 2 and j["attempt_list"][0]["outcome"] == "preempted"
        assert wait(c, s, low, {"running"})["state"] == "running"
        c.post(f"/v1/jobs/{low}/cancel", headers=hdr(s))
        assert wait(c, s, low, {"cancelled"})["state"] == "cancelled"
    finally:
        s.controller.stop()
        s.store.close()


def test_node_lost_requeues_and_resumes_from_checkpoint(svc: Service) -> None:
    c = TestClient(svc.app)
    svc.executor.faults.checkpoint_s = 20.0
    jid = submit(c, svc, name="n", resources={"accelerators": 4}, simulate={"duration": 100})
    j = wait(c, svc, jid, {"running"})
    node = j["attempt_list"][0]["placement"]["nodes"][0]
    time.sleep(50 / SPEED)  # ~50 virtual seconds of work: two checkpoints
    svc.executor.fail_node(node, repair_s=30)
    j = wait(c, svc, jid, {"succeeded"})
    assert j["state"] == "succeeded"
    first = j["attempt_list"][0]
    assert first["outcome"] == "node-lost" and first["stop_reason"] == "node-lost"
    lost_work = svc.executor.fault_log  # the failure is recorded
    assert any(k == "node-failed" and n == node for _, k, n, _ in lost_work)
    log = c.get(f"/v1/jobs/{jid}/logs", params={"attempt": 2}, headers=hdr(svc)).text
    import re

    m = re.search(r"(\d+)s of work left \(resumed at (\d+)s\)", log)
    assert m, log
    left, kept = int(m.group(1)), int(m.group(2))  # work kept = the last 20 s checkpoint before the node failed
    assert kept % 20 == 0 and 40 <= kept < 100 and left == 100 - kept
    # lost work: from that checkpoint to the failure, on 4 devices (the store's clock: virtual / SPEED), not from
    # the attempt's start to the tick that saw the loss
    assert first["lost_device_s"] is not None and 0 <= first["lost_device_s"] <= 4 * 20 / SPEED + 1e-6
    ev = c.get(f"/v1/jobs/{jid}/events", headers=hdr(svc)).json()
    assert any("lost since the last checkpoint" in e["message"] for e in ev), ev
    end = time.monotonic() + 10
    while time.monotonic() < end:  # repaired after 30 virtual seconds: registered again
        st = {n["name"]: n["status"] for n in c.get("/v1/nodes", headers=hdr(svc)).json()}
        if st[node] == "up":
            break
        time.sleep(0.05)
    assert st[node] == "up"


def test_restart_readopts_virtual_attempts(tmp_path: Path) -> None:
    dd = tmp_path / "r"
    s = start(dd, keep_jobs_on_stop=True)
    c = TestClient(s.app)
    ids = [submit(c, s, name=f"r{i}", resources={"accelerators": 4}, simulate={"duration": 40}) for i in range(3)]
    for i in ids:
        assert wait(c, s, i, {"running"})["state"] == "running"
    s.controller.stop()  # leaves the virtual processes "running", as a SIGKILL would
    s.store.close()
    time.sleep(0.2)
    s2 = start(dd, keep_jobs_on_stop=False)
    try:
        c2 = TestClient(s2.app)
        for i in ids:
            j = wait(c2, s2, i, {"succeeded", "failed"})
            assert j["state"] == "succeeded" and j["attempts"] == 1  # nothing ran twice
    finally:
        s2.controller.stop()
        s2.store.close()


def test_nodes_and_devices_page_and_filter(svc: Service, tmp_path: Path) -> None:
    import socket
    import threading

    import uvicorn
    from typer.testing import CliRunner

    from suanli.cli.main import app

    c = TestClient(svc.app)
    h = hdr(svc)
    names = [n["name"] for n in c.get("/v1/nodes", headers=h).json()]
    page = c.get("/v1/nodes", params={"limit": 2}, headers=h).json()
    assert [n["name"] for n in page] == names[:2]
    rest = c.get("/v1/nodes", params={"limit": 2, "after": page[-1]["name"]}, headers=h).json()
    assert [n["name"] for n in rest] == names[2:]
    assert c.get("/v1/nodes", params={"accelerator": "H100"}, headers=h).json() == []
    assert c.get("/v1/nodes", params={"status": "sideways"}, headers=h).status_code == 422
    svc.executor.fail_device(names[1], 2, repair_s=10_000)
    svc.executor.fail_node(names[2], repair_s=10_000)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        bad = c.get("/v1/devices", params={"health": "unhealthy"}, headers=h).json()
        lost = c.get("/v1/nodes", params={"status": "lost"}, headers=h).json()
        if bad and lost:
            break
        time.sleep(0.05)
    assert [(d["node"], d["local_index"]) for d in bad] == [(names[1], 2)]
    assert "virtual device failure" in bad[0]["health_reason"]
    assert [n["name"] for n in lost] == [names[2]]
    assert len(c.get("/v1/devices", params={"node": names[0]}, headers=h).json()) == 4
    assert len(c.get("/v1/devices", params={"after_node": names[0], "limit": 5}, headers=h).json()) == 5

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        while not server.started:
            time.sleep(0.01)
        tok = svc.admin_token_path.read_text().strip()
        r = CliRunner().invoke(app, ["nodes", "--limit", "2", "--unhealthy", "--server", f"http://127.0.0.1:{port}",
                                     "--token", tok], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "virtual" in r.output and f"more: --after {names[1]}" in r.output
        assert "virtual device failure" in r.output
    finally:
        server.should_exit = True
        th.join(10)


def test_a_migration_moves_the_job_without_a_failed_tick(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """gavel-events moves a running job to a free, much faster model in the pass that preempts it (stop and start
    in one decision). The live controller carries out the start, where that pass put it, once the preemption has
    ended the job: before, the start of a job still running raised in the tick (KeyError); skipping it instead
    made the job ping-pong (requeued, placed on the slow model again, moved again: 20 attempts here)."""
    s = open_service(tmp_path / "d", virtual="1x1xV100+1x1xK80", speed=SPEED, tick_s=0.02, retry_base_s=1.0,
                     grace_s=2.0, policy="gavel-events")
    s.controller.nodes_every_s = 0.05
    s.controller.start()
    try:
        assert s.controller.ready.wait(20)
        c = TestClient(s.app)
        speeds = {"V100-16GB": 4.0, "K80": 1.0}
        short = submit(c, s, name="short", resources={"accelerators": 1}, speeds=speeds, simulate={"duration": 50})
        wait(c, s, short, {"running"})
        long = submit(c, s, name="long", resources={"accelerators": 1}, speeds=speeds, simulate={"duration": 400})
        wait(c, s, long, {"running"})
        # waits for the K80 the long job holds: the pass after the short job ends moves the long one to the V100
        k80 = submit(c, s, name="k80", resources={"accelerators": 1, "model": ["K80"]}, simulate={"duration": 50})
        jl, jk = wait(c, s, long, {"succeeded", "failed"}, 40), wait(c, s, k80, {"succeeded", "failed"}, 40)
        assert jl["state"] == "succeeded" and jk["state"] == "succeeded"
        assert [(a["placement"]["model"], a["outcome"]) for a in jl["attempt_list"]] == [
            ("K80", "preempted"), ("V100-16GB", "succeeded")]
        assert not [r for r in caplog.records if "tick failed" in r.getMessage()]
    finally:
        s.controller.stop()
        s.store.close()


def test_an_end_whose_recording_failed_is_recorded_at_a_later_tick(svc: Service,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The virtual executor names an ended attempt once (``due``); when the store cannot record that end, the
    controller itself polls it again at the next ticks until it is recorded (the job is not left running)."""
    c = TestClient(svc.app)
    real = svc.store.finish_attempts
    fails = {"n": 0}

    def flaky(items: Any, now: float) -> Any:
        if fails["n"] < 3:
            fails["n"] += 1
            raise RuntimeError("database is away")
        return real(items, now)

    monkeypatch.setattr(svc.store, "finish_attempts", flaky)
    jid = submit(c, svc, name="r", simulate={"duration": 5})
    j = wait(c, svc, jid, {"succeeded", "failed"})
    assert fails["n"] == 3 and j["state"] == "succeeded" and j["attempts"] == 1
