"""The seams under the controller: the executor interface (rank plan, membership), the cluster built from every
registered node, device health drained from placement, typed outcomes and stop reasons, migration 0002."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from suanli.api.server import open_service
from suanli.control import db
from suanli.control.executors.base import AttemptSpec, DeviceInfo
from suanli.control.store import Store
from suanli.control.types import AttemptOutcome, DeviceHealth, NodeStatus, StopReason
from suanli.workload.spec import JobSpec


def test_rank_plan_one_process_per_device_or_per_node() -> None:
    a = AttemptSpec(1, 1, 1, {"command": ["x"]}, "H100", ("a", "b"), ((0, 1), (2, 3)))
    rs = a.ranks()
    assert [(r.rank, r.node, r.node_rank, r.local_rank, r.local_world) for r in rs] == [
        (0, "a", 0, 0, 2), (1, "a", 0, 1, 2), (2, "b", 1, 0, 2), (3, "b", 1, 1, 2)]
    assert rs[2].devices == (2, 3)
    per_node = AttemptSpec(1, 1, 1, {"processes": "node"}, "H100", ("a", "b"), ((0, 1), (2, 3))).ranks()
    assert [(r.rank, r.node_rank, r.local_rank, r.devices) for r in per_node] == [(0, 0, 0, (0, 1)),
                                                                                  (1, 1, 0, (2, 3))]
    assert AttemptSpec(1, 1, 1, {}, "", ("a",), ((),)).world == 1  # CPU-only
    assert AttemptSpec(1, 1, 1, {}, "H100", ("a",), ((0, 1),), milli=500).world == 1  # fractional


def wait_for(pred: Any, timeout: float = 20, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


def test_cluster_from_every_registered_node_and_unreported_nodes_are_lost(tmp_path: Path) -> None:
    s = open_service(tmp_path / "d", devices="2xBR100", node="n1", tick_s=0.02, with_app=False)
    # a second node registered in the store that this (local) executor does not run: it is in the cluster, lost
    s.store.upsert_node({"name": "n0", "accelerator": "BR100", "devices": 8, "cpu_milli": 8000,
                         "memory_mib": 8192, "domain": "n0", "rack": "r", "declared": True},
                        [{"local_index": i, "model": "BR100", "uuid": None, "memory_mib": None, "declared": True}
                         for i in range(8)])
    s.controller.start()
    assert s.controller.ready.wait(10)
    try:
        c = s.controller.cluster
        assert [n.name for n in c.nodes] == ["n0", "n1"] and c.n_devices == 10
        nodes = {n["name"]: n for n in s.store.list_nodes()}
        assert nodes["n0"]["status"] == NodeStatus.LOST and nodes["n1"]["status"] == NodeStatus.UP
        assert not s.controller.state.alloc.node_up[c.node_index("n0")]
        assert [e["kind"] for e in s.store.node_events("n0")] == ["registered", "node-lost"]
        # a 4-device job fits n0's devices only: it waits, it is never started on the lost node
        small = s.store.submit(JobSpec(name="small", resources={"accelerators": 2}, command=["true"]))["id"]
        wait_for(lambda: s.store.get_job(small)["state"] == "succeeded", what="small job")
        big = s.store.submit(JobSpec(name="big", resources={"accelerators": 4}, command=["true"]))["id"]
        time.sleep(0.5)
        assert s.store.get_job(big)["state"] == "pending"
        assert s.store.get_job(small)["attempt_list"][0]["placement"]["nodes"] == ["n1"]
    finally:
        s.controller.stop()
        s.store.close()


def test_unhealthy_device_is_drained_and_its_job_moved_without_a_failure(tmp_path: Path) -> None:
    s = open_service(tmp_path / "d", devices="4xBR100", node="n1", tick_s=0.02, grace_s=1.0, with_app=False)
    bad: dict[int, tuple[bool, str | None]] = {}
    s.executor.health_probe = lambda devs: dict(bad)  # the executor's health seam, faked
    s.controller.nodes_every_s = 0.05
    s.controller.start()
    assert s.controller.ready.wait(10)
    st = s.store
    try:
        jid = st.submit(JobSpec(name="g", resources={"accelerators": 2}, command=["sleep", "60"]))["id"]
        j = wait_for(lambda: (x := st.get_job(jid))["state"] == "running" and x, what="running")
        first = j["attempt_list"][0]["placement"]["local"][0]
        bad[first[0]] = (False, "XID 79: fell off the bus")
        j = wait_for(lambda: (x := st.get_job(jid))["attempts"] == 2 and x["state"] == "running" and x,
                     what="moved")
        a1, a2 = j["attempt_list"]
        assert a1["outcome"] == AttemptOutcome.NODE_LOST and a1["stop_reason"] == StopReason.DEVICE_UNHEALTHY
        assert isinstance(a1["outcome"], AttemptOutcome)
        assert first[0] not in a2["placement"]["local"][0] and j["failures"] == 0
        kinds = [e["kind"] for e in st.events(jid)]
        assert kinds[:5] == ["submitted", "running", "device-unhealthy", "requeued", "running"]
        dev = next(d for d in st.list_devices() if d["local_index"] == first[0])
        assert dev["health"] == DeviceHealth.UNHEALTHY and dev["health_reason"] == "XID 79: fell off the bus"
        ev = st.node_events("n1")
        assert ev[-1]["kind"] == "device-unhealthy" and "XID 79" in ev[-1]["message"]
        c = s.controller.cluster
        assert not s.controller.state.alloc.dev_up[int(c.node_dev_start[0]) + first[0]]
        # 3 healthy devices left, 2 taken: a 2-device job waits until the device is healthy again
        st.request_cancel(jid)
        wait_for(lambda: st.get_job(jid)["state"] == "cancelled", what="cancel")
        four = st.submit(JobSpec(name="four", resources={"accelerators": 4}, command=["true"]))["id"]
        time.sleep(0.5)
        assert st.get_job(four)["state"] == "pending"
        bad[first[0]] = (True, None)
        wait_for(lambda: st.get_job(four)["state"] == "succeeded", what="four after repair")
        assert st.node_events("n1")[-1]["kind"] == "device-healthy"
    finally:
        s.controller.stop()
        s.store.close()


def test_device_health_survives_a_reregistration(tmp_path: Path) -> None:
    st = Store.open(db.sqlite_url(tmp_path / "s.db"))
    spec = {"name": "n", "accelerator": "H100", "devices": 2, "cpu_milli": 1000, "memory_mib": 1024,
            "domain": "n", "rack": "r", "declared": True}
    rows = [{"local_index": i, "model": "H100", "uuid": None, "memory_mib": None, "declared": True} for i in range(2)]
    st.upsert_node(spec, rows)
    assert st.set_device_health("n", 1, DeviceHealth.UNHEALTHY, "ECC", 1.0)
    assert not st.set_device_health("n", 1, DeviceHealth.UNHEALTHY, "ECC", 2.0)  # no change, no event
    st.upsert_node(spec, rows)
    assert st.unhealthy_devices() == {("n", 1): "ECC"}
    st.close()


def test_the_local_executor_reports_its_node_and_probe_news() -> None:
    from suanli.control.executors.base import NodeInfo
    from suanli.control.executors.local import LocalExecutor

    node = NodeInfo("n", (DeviceInfo(0, "H100"), DeviceInfo(1, "H100")), 1000, 1024, "n", "local")
    ex = LocalExecutor("/tmp/unused-suanli", node=node, health_probe=lambda d: {1: (False, "hot")})
    (got,) = ex.nodes()
    assert [(d.index, d.health, d.health_reason) for d in got.devices] == [
        (0, None, None), (1, DeviceHealth.UNHEALTHY, "hot")]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return db.sqlite_url(tmp_path / "m.db")
    from test_control_store import pg_url_or_skip

    return pg_url_or_skip()


def test_migration_0002_upgrades_a_0001_database_with_data(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    eng = db.make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with eng.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.commit()
    with eng.begin() as c:  # rows as the 0001 code wrote them
        c.execute(sa.text("INSERT INTO nodes (name, accelerator, devices, cpu_milli, memory_mib, domain, rack, "
                          "declared, drained, updated_at) "
                          "VALUES ('n', 'H100', 1, 1000, 1024, 'n', 'r', true, false, 1)"))
        c.execute(sa.text("INSERT INTO devices (node_id, local_index, model, declared) "
                          "SELECT id, 0, 'H100', true FROM nodes"))
        c.execute(sa.text("INSERT INTO jobs (name, tenant, queue, priority, state, spec, sched, submit_time, "
                          "updated_at, attempts, failures, cancel_requested) VALUES ('j', 'default', 'default', 0, "
                          "'cancelled', '{}', '{}', 1, 1, 1, 0, false)"))
        c.execute(sa.text("INSERT INTO job_attempts (job_id, n, started_at, ended_at, placement, outcome) "
                          "SELECT id, 1, 1, 2, '{}', 'cancelled' FROM jobs"))
    db.migrate(eng)
    st = Store(eng)
    (a,) = st.get_job(1)["attempt_list"]
    assert a["outcome"] == AttemptOutcome.CANCELLED and a["stop_reason"] == StopReason.CANCEL
    assert st.list_devices()[0]["health"] == DeviceHealth.HEALTHY
    assert st.list_nodes()[0]["status"] == NodeStatus.UP
    with st.read() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == db.HEAD
    st.close()
