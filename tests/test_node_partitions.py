"""Partitions of live nodes (issue 11): the node's own (``suanli up --partition``, the Ray label
``suanli.io/partitions``, the fleet file) and an admin's (``PATCH /v1/nodes/{name}``), which wins until cleared and
outlives re-registration and restarts; the scheduler follows a change in its next pass. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.api.server import Service, open_service
from suanli.control import db
from suanli.control.executors.base import NodeInfo, parse_partitions
from suanli.control.store import NotFound, Store
from suanli.errors import SuanliError
from test_control_store import pg_url_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None: SQLite in the data directory (open_service's default)."""
    return None if request.param == "sqlite" else pg_url_or_skip()


def _store(url: str | None, tmp_path: Path) -> Store:
    s = Store.open(url or db.sqlite_url(tmp_path / "s.db"))
    s.ensure_defaults()
    return s


def _node(name: str, parts: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(name, (), 4000, 8192, name, "r0", partitions=parts)


def test_parse_partitions_names_the_option() -> None:
    assert parse_partitions(["a,b", " c ", "a", ""]) == ("a", "b", "c")
    assert parse_partitions(None) == () and parse_partitions("x.y_z-1") == ("x.y_z-1",)
    with pytest.raises(SuanliError, match="--partition: partition name 'no space'"):
        parse_partitions(["ok", "no space"])
    with pytest.raises(SuanliError, match=r"label suanli\.io/partitions: partition name '-x'"):
        parse_partitions("-x", "label suanli.io/partitions")
    with pytest.raises(SuanliError):
        parse_partitions("a" * 129)


def test_partition_flag_is_for_this_machine_only(tmp_path: Path) -> None:
    from suanli.control.service import open_service as open_control

    for kw in ({"virtual": "1x8xH100"}, {"ray": "127.0.0.1:1"}):
        with pytest.raises(SuanliError, match="--partition names this machine's partitions"):
            open_control(tmp_path / "d", partitions=["train"], **kw)
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_admin_partitions_win_over_the_nodes_own_and_outlive_reregistration(db_url: str | None,
                                                                           tmp_path: Path) -> None:
    s = _store(db_url, tmp_path)
    try:
        s.upsert_nodes([_node("a", ("train",)).store_spec(), _node("b").store_spec()])
        a = s.get_node("a")
        assert (a["partitions"], a["partitions_reported"], a["partitions_override"]) == (["train"], ["train"], None)
        assert s.get_node("b")["partitions"] is None
        out = s.set_node_partitions("b", ["serve", "train", "serve"])  # duplicates dropped, order kept
        assert (out["partitions"], out["partitions_reported"], out["partitions_override"]) == (
            ["serve", "train"], None, ["serve", "train"])
        assert s.set_node_partitions("a", [])["partitions"] is None  # in no partition, whatever it reports
        # the nodes register again (a restart, a membership change): what the admin set stays
        s.upsert_nodes([_node("a", ("train", "x")).store_spec(), _node("b", ("other",)).store_spec()])
        by = {n["name"]: n for n in s.list_nodes()}
        assert by["a"]["partitions"] is None and by["a"]["partitions_reported"] == ["train", "x"]
        assert by["a"]["partitions_override"] == []
        assert by["b"]["partitions"] == ["serve", "train"] and by["b"]["partitions_reported"] == ["other"]
        # cleared: the node's own apply again
        assert s.set_node_partitions("a", None)["partitions"] == ["train", "x"]
        ev = [e for e in s.node_events("a") if e["kind"] == "partitions"]
        assert [e["message"] for e in ev] == ["set by an admin: in no partition",
                                             "cleared by an admin: the node's own partitions apply"]
        with pytest.raises(NotFound):
            s.set_node_partitions("nope", ["x"])
        with pytest.raises(NotFound):
            s.get_node("nope")
    finally:
        s.close()


FLEET = ("name: lab\npools:\n"
         "  - {name: pa, count: 1, accelerator: H100, per_node: 2, partitions: [P]}\n"
         "  - {name: pb, count: 1, accelerator: H100, per_node: 2}\n")
JOB = {"resources": {"accelerators": 1}, "command": ["sleep", "600"], "expected_runtime": 3600}


def _wait(pred: Any, timeout: float = 15, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.03)


def _open(tmp_path: Path, url: str | None) -> Service:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    s = open_service(tmp_path / "d", db=url, virtual=str(fleet), tick_s=0.02, speed=1.0, grace_s=1.0)
    s.controller.start()
    assert s.controller.ready.wait(15)
    return s


@pytest.fixture
def fleet_svc(db_url: str | None, tmp_path: Path) -> Iterator[tuple[Service, str | None]]:
    s = _open(tmp_path, db_url)
    yield s, db_url
    s.controller.stop()
    s.store.close()


def _h(s: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.admin_token_path.read_text().strip()}"}


def _job(c: TestClient, h: dict[str, str], jid: int) -> dict[str, Any]:
    r = c.get(f"/v1/jobs/{jid}", headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def _nodes_of(j: dict[str, Any]) -> set[str]:
    return {n for a in j["attempt_list"] for n in a["placement"]["nodes"]}


def test_a_node_moved_into_a_partition_through_the_api(db_url: str | None, tmp_path: Path) -> None:
    """Queue q names partition P (node virt-pa-0 only). Its third job waits; virt-pb-0 moved into P runs it without
    disturbing the two running on virt-pa-0; virt-pa-0 moved out of P takes no new job of q (theirs go on); the
    admin's value outlives a controller restart."""
    s = _open(tmp_path, db_url)
    try:
        _moved(s, tmp_path, db_url)
    finally:
        s.controller.stop()
        s.store.close()


def _moved(s: Service, tmp_path: Path, url: str | None) -> None:
    c, h = TestClient(s.app), _h(s)
    pa, pb = "virt-pa-0000", "virt-pb-0000"
    assert c.post("/v1/queues", json={"name": "q", "partitions": ["P"]}, headers=h).status_code == 201
    _wait(lambda: "q" in s.controller.sched.queues, what="queue q read")
    ids = [c.post("/v1/jobs", json={**JOB, "name": f"j{i}", "queue": "q"}, headers=h).json()["id"]
           for i in range(3)]
    _wait(lambda: sum(_job(c, h, i)["state"] == "running" for i in ids) == 2, what="two jobs running")
    time.sleep(0.3)
    first = {i: _job(c, h, i) for i in ids}
    running = [i for i in ids if first[i]["state"] == "running"]
    waiting = next(i for i in ids if i not in running)
    assert all(_nodes_of(first[i]) == {pa} for i in running)
    assert first[waiting]["state"] == "pending" and first[waiting]["reason"] == "capacity"

    r = c.patch(f"/v1/nodes/{pb}", json={"partitions": ["P"]}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["partitions"], r.json()["partitions_override"], r.json()["partitions_reported"]) == (
        ["P"], ["P"], None)
    j = _wait(lambda: (x := _job(c, h, waiting))["state"] == "running" and x, what="the waiting job to start")
    assert _nodes_of(j) == {pb}
    for i in running:  # not disturbed: the same single attempt, still running
        now = _job(c, h, i)
        assert now["state"] == "running" and now["attempts"] == 1 and _nodes_of(now) == {pa}

    # virt-pa-0 out of P: its jobs go on, new jobs of q go to virt-pb-0 only, even when virt-pa-0 has room
    assert c.patch(f"/v1/nodes/{pa}", json={"partitions": []}, headers=h).json()["partitions"] is None
    c.post(f"/v1/jobs/{running[0]}/cancel", headers=h)
    _wait(lambda: _job(c, h, running[0])["state"] == "cancelled", what="cancel")
    fills = c.post("/v1/jobs", json={**JOB, "name": "fills-pb", "queue": "q"}, headers=h).json()["id"]
    _wait(lambda: _job(c, h, fills)["state"] == "running", what="q's job on virt-pb-0's last device")
    assert _nodes_of(_job(c, h, fills)) == {pb}
    new = c.post("/v1/jobs", json={**JOB, "name": "new", "queue": "q"}, headers=h).json()["id"]
    time.sleep(0.4)
    j = _job(c, h, new)
    assert j["state"] == "pending" and j["reason"] == "capacity", j  # P is full; virt-pa-0 is no longer in P
    free = c.post("/v1/jobs", json={**JOB, "name": "anywhere", "queue": "default", "priority": 10},
                  headers=h).json()["id"]
    _wait(lambda: _job(c, h, free)["state"] == "running", what="a job of the default queue on the free device")
    assert _nodes_of(_job(c, h, free)) == {pa}
    assert _job(c, h, running[1])["state"] == "running" and _job(c, h, new)["state"] == "pending"

    # a restart (the fleet registers its nodes again, with their fleet-file partitions): the admin's value stays
    for i in (running[1], waiting, fills, new, free):
        c.post(f"/v1/jobs/{i}/cancel", headers=h)
    for i in (running[1], waiting, fills, new, free):
        _wait(lambda i=i: _job(c, h, i)["state"] == "cancelled", what=f"cancel {i}")
    s.controller.stop()
    s.store.close()  # closing twice (here and in the caller) is harmless
    s2 = _open(tmp_path, url)
    try:
        c2 = TestClient(s2.app)
        by = {n["name"]: n for n in c2.get("/v1/nodes", headers=h).json()}
        assert by[pa]["partitions"] is None and by[pa]["partitions_reported"] == ["P"]
        assert by[pb]["partitions"] == ["P"]
        cl = s2.controller.cluster
        assert set(cl.partitions) == {"P"} and [cl.nodes[int(i)].name for i in cl.partition_nodes["P"]] == [pb]
        more = [c2.post("/v1/jobs", json={**JOB, "name": f"m{i}", "queue": "q"}, headers=h).json()["id"]
                for i in range(3)]
        _wait(lambda: sum(_job(c2, h, i)["state"] == "running" for i in more) == 2, what="two on virt-pb-0")
        time.sleep(0.3)
        assert [_job(c2, h, i)["state"] for i in more] == ["running", "running", "pending"]
        assert _nodes_of(_job(c2, h, more[0])) == _nodes_of(_job(c2, h, more[1])) == {pb}
        # cleared: virt-pa-0 is in P again (its fleet file says so) and the waiting job of q starts there
        assert c2.patch(f"/v1/nodes/{pa}", json={"partitions": None}, headers=h).json()["partitions"] == ["P"]
        _wait(lambda: _job(c2, h, more[2])["state"] == "running", what="q's job on virt-pa-0 again")
        assert _nodes_of(_job(c2, h, more[2])) == {pa}
    finally:
        s2.controller.stop()
        s2.store.close()


def test_node_update_bad_input_and_rights(fleet_svc: tuple[Service, str | None]) -> None:
    s, _ = fleet_svc
    c, h = TestClient(s.app), _h(s)
    tok = c.post("/v1/tenants", json={"name": "team"}, headers=h).json()["token"]
    th = {"Authorization": f"Bearer {tok}"}
    r = c.patch("/v1/nodes/virt-pb-0000", json={"partitions": ["P"]}, headers=th)
    assert r.status_code == 403
    assert c.patch("/v1/nodes/nope", json={"partitions": ["P"]}, headers=h).status_code == 404
    r = c.patch("/v1/nodes/virt-pb-0000", json={"partitions": ["ok", "no space"]}, headers=h)
    assert r.status_code == 422 and "partitions" in r.json()["detail"]
    for body in ({}, {"partitions": "P"}, {"partitions": ["P"], "drained": True}, {"partitions": [1]}):
        r = c.patch("/v1/nodes/virt-pb-0000", json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert "partitions" in r.json()["detail"] or "drained" in r.json()["detail"], r.text
    assert c.patch("/v1/nodes/virt-pb-0000", json={"partitions": ["x" * 129]}, headers=h).status_code == 422
    # nothing was written
    n = next(x for x in c.get("/v1/nodes", headers=h).json() if x["name"] == "virt-pb-0000")
    assert n["partitions"] is None and n["partitions_override"] is None
    # a tenant may read the nodes and their partitions
    assert c.get("/v1/nodes", headers=th).status_code == 200


def test_ray_label_gives_a_nodes_partitions(caplog: pytest.LogCaptureFixture) -> None:
    """``suanli.io/partitions`` is read where the other ``suanli.io/*`` labels are (``RayExecutor._node_info``);
    a bad name puts the node in no partition and is said once. Unit level: the real-cluster check of the label is
    ``tests/test_ray_cluster.py::test_nodes_from_ray_labels``."""
    pytest.importorskip("ray")
    from suanli.control.executors.ray import RayExecutor, _Node

    ex = object.__new__(RayExecutor)  # no Ray cluster: only the membership translation is exercised
    ex._bad_labels = set()
    info = {"devices": [[0, "BR100", None, None, True]]}
    good = _Node("id1", "n1", {"suanli.io/partitions": "train, serve,train", "suanli.io/rack": "r7"},
                 {"CPU": 2.0, "memory": 4 * 2**30}, info=info)
    ni = ex._node_info(good)
    assert ni.partitions == ("train", "serve") and ni.rack == "r7" and ni.accelerator == "BR100"
    assert ni.store_spec()[0]["partitions"] == ["train", "serve"]
    assert ex._node_info(_Node("id2", "n2", {}, {"CPU": 1.0}, info=info)).partitions == ()
    bad = _Node("id3", "n3", {"suanli.io/partitions": "ok,no space"}, {"CPU": 1.0}, info=info)
    with caplog.at_level("WARNING", logger="suanli.ray"):
        assert ex._node_info(bad).partitions == () and ex._node_info(bad).partitions == ()
    said = [r.getMessage() for r in caplog.records if "suanli.io/partitions" in r.getMessage()]
    assert len(said) == 1 and "node n3" in said[0] and "'no space'" in said[0] and "in no partition" in said[0]


def _pnode(name: str, parts: tuple[str, ...] = (), devices: int = 8) -> Any:
    from suanli.fleet.model import NodeSpec

    return NodeSpec(name, "H100" if devices else "", devices, 16_000, 1 << 16, name, "r0", partitions=parts)


@pytest.mark.parametrize("policy", ["fifo", "backfill"])
def test_a_job_whose_partitions_have_no_node_never_runs_and_blocks_no_one(policy: str) -> None:
    """Its reason names the partition; under fifo it does not stop the pass (nor take backfill's reservation): a
    job that could never run even on an empty cluster is no head to wait behind."""
    from suanli.fleet.model import build_cluster
    from suanli.sched import Scheduler
    from suanli.sched.core import QueueConfig
    from suanli.sched.reasons import Reason, describe
    from suanli.workload.spec import Job

    c = build_cluster("c", [_pnode("a", ("A",)), _pnode("b")])
    s = Scheduler(c, policy, queues=[QueueConfig("q", 1.0, {}, True, ("Z",))])
    st = s.new_state()
    jobs = [Job(id="q-z", count=1, queue="q", submit_time=0), Job(id="own-z", count=1, partitions=("Z",),
                                                                   submit_time=1),
            Job(id="a-a100", count=1, models=("A100",), partitions=("A",), submit_time=2),
            Job(id="any", count=1, submit_time=3, expected_runtime=60)]
    for j in jobs:
        st.submit(j)
    d = s.decide(st, 0.0)
    assert [x.job_id for x in d.starts] == ["any"]
    assert d.waiting["q-z"] == d.waiting["own-z"] == (Reason.NEVER, "no node is in partition Z")
    assert describe(d.waiting["q-z"], jobs[0], c) == "can never run: no node is in partition Z"
    assert describe(d.waiting["a-a100"], jobs[2], c) == "can never run: no node has 1 A100 in partition A"
    assert d.rest is None and d.reservation is None


def test_strict_partitions_bind_on_a_cluster_without_any() -> None:
    """The live controller's scheduler (strict_partitions): a job limited to partitions runs only there, also when
    no node is in any partition yet (the twin's scheduler ignores them on such a cluster)."""
    from suanli.fleet.model import build_cluster
    from suanli.sched import Scheduler
    from suanli.sched.core import QueueConfig
    from suanli.sched.reasons import Reason
    from suanli.workload.spec import Job

    c = build_cluster("c", [_pnode("a"), _pnode("cpu", devices=0)])
    jobs = [Job(id="q", count=1, queue="q", submit_time=0), Job(id="own", count=1, partitions=("Z",), submit_time=1),
            Job(id="cpu-z", count=0, cpu_milli=1000, partitions=("Z",), submit_time=2),
            Job(id="any", count=1, submit_time=3), Job(id="cpu", count=0, cpu_milli=1000, submit_time=4)]
    started = {}
    for strict in (False, True):
        s = Scheduler(c, "fifo", queues=[QueueConfig("q", 1.0, {}, True, ("Z",))], strict_partitions=strict)
        st = s.new_state()
        for j in jobs:
            st.submit(j)
        d = s.decide(st, 0.0)
        started[strict] = sorted(str(x.job_id) for x in d.starts)
        if strict:
            assert {d.waiting[k] for k in ("q", "own", "cpu-z")} == {(Reason.NEVER, "no node is in partition Z")}
    assert started == {False: ["any", "cpu", "cpu-z", "own", "q"], True: ["any", "cpu"]}


def test_a_discovered_node_in_no_partition_moved_into_one(db_url: str | None, tmp_path: Path) -> None:
    """`suanli up` on this machine (no --partition): a job of a queue naming P is refused with the reason (no node
    is in P); the admin moves the node into P and it runs there; moved out again, the job left waiting says it can
    never run and does not hold back a job of another queue under fifo."""
    s = open_service(tmp_path / "d", db=db_url, devices="2xBR100", node="n1", tick_s=0.02, grace_s=1.0)
    s.controller.start()
    try:
        assert s.controller.ready.wait(15)
        c, h = TestClient(s.app), _h(s)
        assert c.post("/v1/queues", json={"name": "q", "partitions": ["P"]}, headers=h).status_code == 201
        _wait(lambda: "q" in s.controller.sched.queues, what="queue q read")
        job = {**JOB, "queue": "q", "command": ["sleep", "60"]}
        job.pop("expected_runtime")
        r = c.post("/v1/jobs", json={**job, "name": "early"}, headers=h)
        assert r.status_code == 422 and "no node is in partition P" in r.text, r.text
        assert c.patch("/v1/nodes/n1", json={"partitions": ["P"]}, headers=h).status_code == 200
        _wait(lambda: s.controller.cluster.partitions == ("P",), what="the cluster read again")
        ids = [c.post("/v1/jobs", json={**job, "name": f"j{i}"}, headers=h).json()["id"] for i in range(3)]
        _wait(lambda: [_job(c, h, i)["state"] for i in ids] == ["running", "running", "pending"], what="2 of 3 run")
        assert _nodes_of(_job(c, h, ids[0])) == {"n1"}
        assert c.patch("/v1/nodes/n1", json={"partitions": None}, headers=h).json()["partitions"] is None
        _wait(lambda: _job(c, h, ids[2]).get("reason") == "never", what="the waiting job's reason")
        assert _job(c, h, ids[2])["reason_detail"] == "can never run: no node is in partition P"
        c.post(f"/v1/jobs/{ids[0]}/cancel", headers=h)
        other = c.post("/v1/jobs", json={**job, "name": "other", "queue": "default"}, headers=h).json()["id"]
        j = _wait(lambda: (x := _job(c, h, other))["state"] == "running" and x, what="the other queue's job")
        assert _nodes_of(j) == {"n1"}
        assert _job(c, h, ids[1])["state"] == "running" and _job(c, h, ids[1])["attempts"] == 1  # not disturbed
        assert _job(c, h, ids[2])["state"] == "pending"
        # the queue's partitions round-trip through the store (SQLite and PostgreSQL): [] is any node again
        assert next(x for x in c.get("/v1/queues", headers=h).json() if x["name"] == "q")["partitions"] == ["P"]
        assert c.patch("/v1/queues/q", json={"partitions": []}, headers=h).json()["partitions"] is None
        c.post(f"/v1/jobs/{other}/cancel", headers=h)  # a device for it
        _wait(lambda: _job(c, h, ids[2])["state"] == "running", timeout=20, what="q's job, any node again")
    finally:
        s.controller.stop()
        s.store.close()
