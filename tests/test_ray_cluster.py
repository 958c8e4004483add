"""Cluster mode on a real Ray cluster (``ray.cluster_utils.Cluster``: every node on 127.0.0.1, each declaring its
devices with the ``suanli.io/devices`` label as a real server does): a 2-node gang that rendezvouses over TCP, a
device fault drained and its job moved, SIGKILL of the controller with ranks on several nodes, a node killed under a
checkpointing job. One cluster for the module (starting Ray nodes is the slow part on 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1, before Ray starts

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from suanli.api.server import Service, open_service  # noqa: E402
from suanli.control.types import AttemptOutcome, DeviceHealth, NodeStatus, StopReason  # noqa: E402
from suanli.devices import set_fault  # noqa: E402
from suanli.workload.spec import JobSpec  # noqa: E402

pytestmark = pytest.mark.ray

# Ray's dead-node detection, shortened for the tests (a user may tune the same settings: docs/control.md)
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                 "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
NODES = ("a", "b", "c")

RDV = r"""
import os, socket, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print("env", rank, world, os.environ["NODE_RANK"], os.environ["LOCAL_RANK"], addr,
      os.environ.get("BIREN_VISIBLE_DEVICES"), flush=True)
if rank == 0:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16); s.settimeout(60)
    got = []
    while len(got) < world - 1:
        c, _ = s.accept(); got.append(int(c.recv(16))); c.sendall(b"ok"); c.close()
    print("rendezvous", sorted(got), flush=True)
else:
    end = time.time() + 60
    while True:
        try:
            c = socket.create_connection((addr, port), timeout=5); break
        except OSError:
            if time.time() > end: sys.exit(3)
            time.sleep(0.05)
    c.sendall(str(rank).encode()); assert c.recv(2) == b"ok"
    print("joined", flush=True)
"""

CKPT = r"""
import os, pathlib, time
d = pathlib.Path(os.environ["SUANLI_CHECKPOINT_DIR"]); f = d / "step"
step = int(f.read_text()) if f.exists() else 0
print("attempt", os.environ["SUANLI_ATTEMPT"], "resuming from", step, flush=True)
while step < int(os.environ.get("STEPS", "40")):
    time.sleep(0.25); step += 1
    if step % 2 == 0 and os.environ["RANK"] == "0":  # a checkpoint every 0.5 s
        t = d / "step.tmp"; t.write_text(str(step)); t.replace(f)
print("done", step, flush=True)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any], Path]]:
    base = tmp_path_factory.mktemp("ray")
    faults = base / "faults.json"
    faults.write_text("{}")
    os.environ["SUANLI_DEVICE_FAULTS_FILE"] = str(faults)  # the agents read it (the vendor classes' test seam)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": SYSTEM_CONFIG})
    nodes = {n: c.add_node(num_cpus=1, labels={"suanli.io/devices": "2xBR100", "suanli.io/name": n,
                                               "suanli.io/rack": "r1",
                                               **({"suanli.io/partitions": "fast,big"} if n == "c" else {})})
             for n in NODES}
    c.wait_for_nodes()
    try:
        yield c, nodes, base
    finally:
        os.environ.pop("SUANLI_DEVICE_FAULTS_FILE", None)
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def svc(cluster: tuple[Cluster, dict[str, Any], Path]) -> Iterator[Service]:
    c, _, base = cluster
    s = open_service(base / "data", ray=c.address, checkpoint_root=base / "ckpt", ray_work_dir=base / "work",
                     tick_s=0.05, grace_s=1.0, retry_base_s=0.1)
    s.controller.nodes_every_s = 0.5
    s.controller.start()
    assert s.controller.ready.wait(120), s.controller.error
    try:
        yield s
    finally:
        s.controller.stop()
        s.store.close()


def wait_for(pred: Any, timeout: float = 60, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)


def write(base: Path, name: str, text: str) -> str:
    p = base / name
    p.write_text(text)
    return str(p)


def test_nodes_from_ray_labels(svc: Service) -> None:
    nodes = {n["name"]: n for n in svc.store.list_nodes()}
    for n in NODES:
        assert nodes[n]["accelerator"] == "BR100" and nodes[n]["devices"] == 2 and nodes[n]["declared"]
        assert nodes[n]["rack"] == "r1" and nodes[n]["status"] == NodeStatus.UP and nodes[n]["cpu_milli"] == 1000
        assert nodes[n]["partitions"] == (["fast", "big"] if n == "c" else None)  # label suanli.io/partitions
    assert svc.controller.cluster.devices_of_model("BR100") == 6


def test_two_node_gang_rendezvous_over_tcp(svc: Service, cluster: tuple[Cluster, dict[str, Any], Path]) -> None:
    from fastapi.testclient import TestClient

    base = cluster[2]
    script = write(base, "rdv.py", RDV)
    jid = svc.store.submit(JobSpec(name="rdv", resources={"accelerators": 4, "per_node": 2},
                                   command=[sys.executable, script]))["id"]
    j = wait_for(lambda: (x := svc.store.get_job(jid))["state"] in ("succeeded", "failed") and x, what="gang")
    assert j["state"] == "succeeded", j
    pl = j["attempt_list"][0]["placement"]
    assert len(set(pl["nodes"])) == 2 and pl["local"] == [[0, 1], [0, 1]]
    client = TestClient(svc.app)
    h = {"Authorization": f"Bearer {svc.admin_token_path.read_text().strip()}"}
    outs = [client.get(f"/v1/jobs/{jid}/logs", params={"rank": r}, headers=h).text for r in range(4)]
    envs = [o.splitlines()[0].split() for o in outs]
    # env RANK WORLD NODE_RANK LOCAL_RANK MASTER_ADDR visible-devices
    assert [e[1:5] for e in envs] == [["0", "4", "0", "0"], ["1", "4", "0", "1"], ["2", "4", "1", "0"],
                                      ["3", "4", "1", "1"]]
    assert {e[5] for e in envs} == {"127.0.0.1"} and {e[6] for e in envs} == {"0,1"}
    assert "rendezvous [1, 2, 3]" in outs[0] and all("joined" in o for o in outs[1:])


def test_unhealthy_device_drained_and_job_moved(svc: Service, cluster: tuple[Cluster, dict[str, Any], Path]) -> None:
    base = cluster[2]
    script = write(base, "ckpt.py", CKPT)
    jid = svc.store.submit(JobSpec(name="h", resources={"accelerators": 1}, env={"STEPS": "400"},
                                   command=[sys.executable, script]))["id"]
    j = wait_for(lambda: (x := svc.store.get_job(jid))["state"] == "running" and x, what="running")
    pl = j["attempt_list"][0]["placement"]
    node, idx = pl["nodes"][0], pl["local"][0][0]
    set_fault(base / "faults.json", node, idx, "xid 79")
    try:
        j = wait_for(lambda: (x := svc.store.get_job(jid))["attempts"] == 2 and x["state"] == "running" and x,
                     what="moved")
        a1, a2 = j["attempt_list"]
        assert a1["outcome"] == AttemptOutcome.NODE_LOST and a1["stop_reason"] == StopReason.DEVICE_UNHEALTHY
        assert (a2["placement"]["nodes"][0], a2["placement"]["local"][0][0]) != (node, idx) and j["failures"] == 0
        dev = next(d for d in svc.store.list_devices() if d["node"] == node and d["local_index"] == idx)
        assert dev["health"] == DeviceHealth.UNHEALTHY and "xid 79" in dev["health_reason"]
        assert any(e["kind"] == "device-unhealthy" for e in svc.store.node_events(node))
    finally:
        set_fault(base / "faults.json", node, idx, None)
        svc.store.request_cancel(jid)
        wait_for(lambda: svc.store.get_job(jid)["state"] == "cancelled", what="cancelled")
    wait_for(lambda: all(d["health"] == DeviceHealth.HEALTHY for d in svc.store.list_devices()), what="repaired")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigkill_controller_with_ranks_on_several_nodes(cluster: tuple[Cluster, dict[str, Any], Path],
                                                        svc: Service) -> None:
    c, _, base = cluster
    data, marks = base / "crash-data", base / "marks"
    marks.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "suanli.cli.main", "up", "--ray", c.address, "--port", str(port), "--data-dir",
            str(data), "--checkpoint-root", str(base / "ckpt2"), "--ray-work-dir", str(base / "work2"),
            "--retry-backoff", "0.1", "--job-users", "shared"]

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(base / "up.log", "ab"))  # noqa: SIM115
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).json()["controller"] == "ready":
                    return p
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert p.poll() is None and time.monotonic() < end, (base / "up.log").read_text()[-3000:]
            time.sleep(0.1)

    p = start()
    h = {"Authorization": f"Bearer {(data / 'admin.token').read_text().strip()}"}
    cmd = ["sh", "-c", f'echo "$SUANLI_ATTEMPT" >> {marks}/$SUANLI_JOB_ID.$RANK; sleep 6']
    ids = [httpx.post(url + "/v1/jobs", headers=h, json={"name": f"g{i}", "resources": res, "command": cmd}
                      ).json()["id"] for i, res in enumerate([{"accelerators": 4, "per_node": 2},
                                                              {"accelerators": 1}])]
    for jid in ids:
        wait_for(lambda jid=jid: httpx.get(f"{url}/v1/jobs/{jid}", headers=h).json()["state"] == "running",
                 what="running")
    wait_for(lambda: len(list(marks.iterdir())) == 5, what="all ranks started")
    p.send_signal(signal.SIGKILL)
    p.wait()
    p = start()
    try:
        for jid in ids:
            j = wait_for(lambda jid=jid: (x := httpx.get(f"{url}/v1/jobs/{jid}", headers=h).json())["state"]
                         in ("succeeded", "failed") and x, what="finished")
            assert j["state"] == "succeeded" and j["attempts"] == 1, j
            ev = [e["kind"] for e in httpx.get(f"{url}/v1/jobs/{jid}/events", headers=h).json()]
            assert "adopted" in ev
        assert len(set(json.dumps(j["attempt_list"][0]["placement"]["nodes"]) for j in [j])) == 1
        for f in marks.iterdir():  # every rank ran once
            assert f.read_text().split() == ["1"], f.name
        assert len(list(marks.iterdir())) == 5
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def test_node_lost_job_resumes_from_checkpoint_elsewhere(svc: Service,
                                                         cluster: tuple[Cluster, dict[str, Any], Path]) -> None:
    c, nodes, base = cluster
    script = write(base, "ckpt.py", CKPT)
    jid = svc.store.submit(JobSpec(name="ck", resources={"accelerators": 2}, command=[sys.executable, script],
                                   env={"STEPS": "40"}))["id"]
    j = wait_for(lambda: (x := svc.store.get_job(jid))["state"] == "running" and x["attempt_list"][0]["procs"]
                 and x, what="running")
    ck = base / "ckpt" / str(jid) / "step"
    wait_for(lambda: ck.exists() and int(ck.read_text()) >= 8, what="a few checkpoints")
    a = j["attempt_list"][0]
    victim = a["placement"]["nodes"][0]
    pgids = [pgid for _node, _procs, pgid in a["procs"] if pgid]
    for pgid in pgids:  # the ranks share this machine with the other "nodes": freeze them with their node...
        os.killpg(pgid, signal.SIGSTOP)
    t_kill = time.time()
    agent_pid = next(n.info["pid"] for n in svc.executor._nodes.values() if n.name == victim and n.info)
    c.remove_node(nodes[victim], allow_graceful=False)  # the plug pulled: the raylet and its workers die
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{agent_pid}") and time.monotonic() < end:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(agent_pid, signal.SIGKILL)
    for pgid in pgids:  # ...and the ranks die with it (frozen until their agent is gone: no exit code reported)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    j = wait_for(lambda: (x := svc.store.get_job(jid))["attempts"] == 2 and x["state"] == "running" and x,
                 what=lambda: f"requeued and running elsewhere: {svc.store.events(jid)}")
    t_back = time.time()
    a1, a2 = j["attempt_list"]
    assert a1["outcome"] == AttemptOutcome.NODE_LOST and a1["stop_reason"] == StopReason.NODE_LOST
    assert a2["placement"]["nodes"][0] != victim and j["failures"] == 0
    # lost work: device-seconds since the last checkpoint (one interval: 0.5 s), up to when the node was last heard
    assert 0 <= a1["lost_device_s"] <= 2 * (0.5 + 1.0), a1
    j = wait_for(lambda: (x := svc.store.get_job(jid))["state"] in ("succeeded", "failed") and x, what="finished")
    assert j["state"] == "succeeded"
    log2 = svc.executor.log_path(jid, 2, 0).read_text()
    resumed = int(log2.split("resuming from")[1].split()[0])
    assert resumed >= 8 and "done 40" in log2
    assert next(n for n in svc.store.list_nodes() if n["name"] == victim)["status"] == NodeStatus.LOST
    print(f"node killed -> running elsewhere: {t_back - t_kill:.1f} s; resumed from step {resumed}")


def test_a_lost_node_comes_back_bigger_and_is_registered_again(svc: Service,
                                                                cluster: tuple[Cluster, dict[str, Any], Path]) -> None:
    c, nodes, _ = cluster
    victim = next(n["name"] for n in svc.store.list_nodes() if n["status"] == NodeStatus.LOST and n["name"] in NODES)
    nodes[victim] = c.add_node(num_cpus=1, labels={"suanli.io/devices": "4xBR100", "suanli.io/name": victim,
                                                   "suanli.io/rack": "r1"})
    wait_for(lambda: (n := next(x for x in svc.store.list_nodes() if x["name"] == victim))["status"] == NodeStatus.UP
             and n["devices"] == 4, what="re-registered with its new devices")
    kinds = [e["kind"] for e in svc.store.node_events(victim)]
    assert kinds.index("node-up") > kinds.index("node-lost")
    # the cluster was rebuilt with 4 devices there: a 4-device job fits on that node only
    jid = svc.store.submit(JobSpec(name="four", resources={"accelerators": 4}, command=["true"]))["id"]
    j = wait_for(lambda: (x := svc.store.get_job(jid))["state"] in ("succeeded", "failed") and x, what="four")
    assert j["state"] == "succeeded" and j["attempt_list"][0]["placement"]["nodes"] == [victim]
