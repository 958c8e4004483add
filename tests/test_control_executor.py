"""The controller and the local executor with real processes: gangs, visible devices, retries from a checkpoint,
cancel (the whole process group), preemption, re-adoption after a restart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from suanli.api.server import Service, open_service
from suanli.control.db import job_attempts, jobs
from suanli.control.executors.local import proc_start_ticks
from suanli.control.store import Store
from suanli.workload.states import JobState

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make(data: Path, devices: str | None = "4xBR100", **kw: Any) -> Service:
    s = open_service(data, devices=devices, node="n1", tick_s=0.02, retry_base_s=0.05, grace_s=1.0, **kw)
    s.controller.start()
    assert s.controller.ready.wait(10)
    return s


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    s = make(tmp_path / "d")
    yield s
    s.controller.stop()
    s.store.close()


def api(s: Service) -> tuple[TestClient, dict[str, str]]:
    return TestClient(s.app), {"Authorization": f"Bearer {s.admin_token_path.read_text().strip()}"}


def submit(s: Service, body: dict[str, Any] | str) -> int:
    c, h = api(s)
    if isinstance(body, str):
        r = c.post("/v1/jobs", content=body, headers={**h, "Content-Type": "application/yaml"})
    else:
        r = c.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def wait(s: Service, jid: int, states: set[str], timeout: float = 20) -> dict[str, Any]:
    c, h = api(s)
    end = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{jid}", headers=h).json()
        if j["state"] in states:
            return j
        if time.monotonic() > end:
            raise AssertionError(f"job {jid} still {j['state']}, wanted {states}")
        time.sleep(0.03)


def logs(s: Service, jid: int, **params: Any) -> str:
    c, h = api(s)
    return c.get(f"/v1/jobs/{jid}/logs", params=params, headers=h).text


def test_gang_ranks_get_torchrun_env_and_vendor_visible_devices(tmp_path: Path) -> None:
    s = make(tmp_path / "d", devices="4xH100")
    try:
        cmd = "echo $WORLD_SIZE $RANK $LOCAL_RANK $MASTER_ADDR ${MASTER_PORT:+port} $CUDA_VISIBLE_DEVICES " \
              "${ASCEND_RT_VISIBLE_DEVICES:-none} $SUANLI_JOB_ID; test -d \"$SUANLI_CHECKPOINT_DIR\""
        jid = submit(s, {"name": "g", "resources": {"accelerators": 3}, "command": ["sh", "-c", cmd]})
        assert wait(s, jid, {"succeeded", "failed"})["state"] == "succeeded"
        out = [logs(s, jid, rank=r).split() for r in range(3)]
        assert [o[:3] for o in out] == [["3", "0", "0"], ["3", "1", "1"], ["3", "2", "2"]]
        assert all(o[3:] == ["127.0.0.1", "port", "0,1,2", "none", str(jid)] for o in out)
    finally:
        s.controller.stop()


def test_example_job_checkpoints_fails_once_and_resumes(svc: Service) -> None:
    jid = submit(svc, (EXAMPLES / "checkpoint-retry.yaml").read_text())
    j = wait(svc, jid, {"succeeded", "failed"})
    assert j["state"] == "succeeded" and j["attempts"] == 2 and j["failures"] == 1
    assert "saved step 50, now crashing" in logs(svc, jid, attempt=1)
    assert "attempt 2: resuming from step 50" in logs(svc, jid, attempt=2)
    assert [a["outcome"] for a in j["attempt_list"]] == ["failed", "succeeded"]
    assert j["attempt_list"][0]["exit_code"] == 3
    c, h = api(svc)
    kinds = [e["kind"] for e in c.get(f"/v1/jobs/{jid}/events", headers=h).json()]
    assert kinds == ["submitted", "running", "requeued", "running", "succeeded"]


def test_retries_exhausted_is_failed_with_exit_code(svc: Service) -> None:
    jid = submit(svc, {"name": "f", "max_retries": 1, "command": ["sh", "-c", "exit 7"]})
    j = wait(svc, jid, {"failed", "succeeded"})
    assert j["state"] == "failed" and j["exit_code"] == 7 and j["attempts"] == 2 and j["failures"] == 2


def test_command_not_found_fails_cleanly(svc: Service) -> None:
    jid = submit(svc, {"name": "nf", "command": ["/nonexistent/binary-xyz"]})
    j = wait(svc, jid, {"failed", "succeeded"})
    assert j["state"] == "failed" and j["exit_code"] == 127


def test_cancel_kills_the_whole_process_group(svc: Service, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    jid = submit(svc, {"name": "c", "resources": {"accelerators": 2},
                       "command": ["sh", "-c", f"sleep 300 & echo $! > {pidfile}.$RANK; wait"]})
    wait(svc, jid, {"running"})
    end = time.monotonic() + 10
    while not all(Path(f"{pidfile}.{r}").exists() for r in range(2)) and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.1)
    pids = [int(Path(f"{pidfile}.{r}").read_text()) for r in range(2)]
    assert all(proc_start_ticks(p) is not None for p in pids)
    c, h = api(svc)
    assert c.post(f"/v1/jobs/{jid}/cancel", headers=h).status_code == 202
    j = wait(svc, jid, {"cancelled"})
    assert j["attempt_list"][0]["outcome"] == "cancelled"
    end = time.monotonic() + 5
    while any(proc_start_ticks(p) is not None for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    assert all(proc_start_ticks(p) is None for p in pids), "grandchildren outlived the cancel"


def test_cancel_pending_job(svc: Service) -> None:
    jid = submit(svc, {"name": "big", "resources": {"accelerators": 4}, "command": ["sleep", "30"]})
    wait(svc, jid, {"running"})
    jid2 = submit(svc, {"name": "waits", "resources": {"accelerators": 1}, "command": ["true"]})
    c, h = api(svc)
    c.post(f"/v1/jobs/{jid2}/cancel", headers=h)
    assert wait(svc, jid2, {"cancelled"})["attempts"] == 0
    c.post(f"/v1/jobs/{jid}/cancel", headers=h)
    wait(svc, jid, {"cancelled"})


def test_priority_preemption_requeues_the_victim_and_frees_its_devices(svc: Service) -> None:
    low = submit(svc, {"name": "low", "priority": 0, "resources": {"accelerators": 4},
                       "command": ["sh", "-c", "echo start $SUANLI_ATTEMPT; sleep 300"]})
    wait(svc, low, {"running"})
    high = submit(svc, {"name": "high", "priority": 10, "resources": {"accelerators": 4}, "command": ["sleep", "0.5"]})
    wait(svc, high, {"running", "succeeded"})
    j = wait(svc, low, {"running"}, timeout=20)  # back after high finished
    assert j["attempts"] == 2 and j["failures"] == 0
    assert next(a["outcome"] for a in j["attempt_list"]) == "preempted"
    c, h = api(svc)
    kinds = [e["kind"] for e in c.get(f"/v1/jobs/{low}/events", headers=h).json()]
    assert kinds[:6] == ["submitted", "running", "preempting", "preempted", "requeued", "running"]
    hs = c.get(f"/v1/jobs/{high}", headers=h).json()["attempt_list"][0]["started_at"]
    assert hs >= j["attempt_list"][0]["ended_at"]  # never two jobs on one device
    c.post(f"/v1/jobs/{low}/cancel", headers=h)
    wait(svc, low, {"cancelled"})


def test_restart_readopts_running_job_and_records_one_that_ended_meanwhile(tmp_path: Path) -> None:
    d = tmp_path / "d"
    s = make(d, keep_jobs_on_stop=True)
    # Both jobs wait for a go-file, so neither can end before the test says so, however loaded the machine is.
    go_a, go_b, done_b = tmp_path / "go-a", tmp_path / "go-b", tmp_path / "done-b"
    wait_for = "while [ ! -e {0} ]; do sleep 0.05; done"
    a = submit(s, {"name": "long", "resources": {"accelerators": 1},
                   "command": ["sh", "-c", wait_for.format(go_a)]})
    b = submit(s, {"name": "short", "resources": {"accelerators": 1},
                   "command": ["sh", "-c", wait_for.format(go_b) + f"; touch {done_b}; exit 5"]})
    wait(s, a, {"running"})
    wait(s, b, {"running"})
    s.controller.stop()  # keep_jobs_on_stop: the processes go on without a controller
    s.store.close()
    go_b.touch()  # b ends while nobody watches
    deadline = time.monotonic() + 30
    while not done_b.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # its wrapper records the exit code
    s2 = make(d)
    try:
        wait(s2, a, {"running"})
        go_a.touch()
        jb = wait(s2, b, {"failed", "succeeded"})
        assert jb["state"] == "failed" and jb["exit_code"] == 5 and jb["attempts"] == 1
        ja = wait(s2, a, {"succeeded", "failed"})
        assert ja["state"] == "succeeded" and ja["attempts"] == 1, ja["attempt_list"]  # re-adopted, not run twice
        c, h = api(s2)
        assert "adopted" in [e["kind"] for e in c.get(f"/v1/jobs/{a}/events", headers=h).json()]
    finally:
        s2.controller.stop()


def test_restart_requeues_an_attempt_recorded_but_never_spawned(tmp_path: Path) -> None:
    d = tmp_path / "d"
    s = make(d)
    s.controller.stop()
    st: Store = s.store
    jid = st.submit(__import__("suanli.workload.spec", fromlist=["JobSpec"]).JobSpec(
        name="x", command=["true"]))["id"]
    now = time.time()
    with st.write() as c:  # what a crash between "record the start" and "spawn" leaves behind
        Store.transition(c, jid, JobState.PENDING, JobState.RUNNING, now, "attempt 1", attempts=1)
        c.execute(job_attempts.insert().values(job_id=jid, n=1, started_at=now, placement={
            "nodes": ["n1"], "local": [[]], "milli": 1000, "cpu_milli": [0], "mem_mib": [0], "model": ""}))
    st.close()
    s2 = make(d)
    try:
        j = wait(s2, jid, {"succeeded"})
        assert j["attempts"] == 2 and [a["outcome"] for a in j["attempt_list"]] == ["lost", "succeeded"]
        with s2.store.read() as c:
            assert c.execute(sa.select(jobs.c.failures).where(jobs.c.id == jid)).scalar() == 0
    finally:
        s2.controller.stop()


def test_clean_stop_requeues_running_jobs(tmp_path: Path) -> None:
    s = make(tmp_path / "d")
    jid = submit(s, {"name": "r", "command": ["sleep", "60"]})
    wait(s, jid, {"running"})
    end = time.monotonic() + 10
    while jid not in s.controller.handles and time.monotonic() < end:  # recorded first, spawned right after
        time.sleep(0.01)
    pid = s.controller.handles[jid].pgid
    s.controller.stop()
    assert proc_start_ticks(pid) is None
    assert s.store.get_job(jid)["state"] == "requeued"
    assert os.path.isdir(tmp_path / "d" / "jobs" / str(jid) / "checkpoint")


def test_a_stop_begun_before_a_crash_is_finished_after_it_not_counted_as_failure(tmp_path: Path) -> None:
    import signal

    d = tmp_path / "d"
    s = make(d, keep_jobs_on_stop=True)
    jid = submit(s, {"name": "victim", "command": ["sleep", "60"]})
    wait(s, jid, {"running"})
    end = time.monotonic() + 10
    while jid not in s.controller.handles and time.monotonic() < end:
        time.sleep(0.01)
    pgid = s.controller.handles[jid].pgid
    s.controller.stop()  # the "crash": the loop is gone, the process lives on
    with s.store.write() as c:  # what the old controller did just before it died: record the intent, signal
        s.store.event(c, jid, "preempting", "for job 99 (priority)", time.time())
    os.killpg(pgid, signal.SIGTERM)
    s.store.close()
    s2 = make(d)
    try:
        end = time.monotonic() + 20
        while True:  # requeued by the preemption, then started again
            j = wait(s2, jid, {"running", "failed", "requeued", "pending"})
            if j["attempts"] == 2 or j["state"] == "failed" or time.monotonic() > end:
                break
            time.sleep(0.05)
        j = wait(s2, jid, {"running", "failed"})
        assert j["state"] == "running" and j["failures"] == 0, j
        assert [a["outcome"] for a in j["attempt_list"]] == ["preempted", None]
    finally:
        s2.controller.stop()


def test_restart_after_a_crash_while_spawning_ranks_stops_the_partial_gang_and_requeues(tmp_path: Path) -> None:
    import signal

    d = tmp_path / "d"
    s = make(d, keep_jobs_on_stop=True)
    s.controller.stop()  # no loop: we play the controller that dies half-way through a spawn
    st: Store = s.store
    from suanli.workload.spec import JobSpec

    spec = JobSpec(name="gang", resources={"accelerators": 2}, command=["sleep", "60"])
    jid = st.submit(spec)["id"]
    now = time.time()
    with st.write() as c:
        Store.transition(c, jid, JobState.PENDING, JobState.RUNNING, now, "attempt 1", attempts=1)
        aid = c.execute(job_attempts.insert().values(job_id=jid, n=1, started_at=now, placement={
            "nodes": ["n1"], "local": [[0, 1]], "milli": 1000, "cpu_milli": [0], "mem_mib": [0],
            "model": "BR100"})).inserted_primary_key[0]
    from suanli.control.executors.base import AttemptSpec
    from suanli.control.executors.local import proc_rank, scan_attempt_pids

    h = s.executor.start(AttemptSpec(jid, aid, 1, spec.model_dump(mode="json"), "BR100", ("n1",), ((0, 1),)))

    time.sleep(0.3)  # let the wrappers start their commands
    for pid in scan_attempt_pids(s.executor.key_prefix).get(s.executor.attempt_key(aid), []):
        if proc_rank(pid) == 1:  # as if rank 1 had never been spawned: no process, no exit file
            os.kill(pid, signal.SIGKILL)
    h.popens[1].wait()
    rank0 = h.procs[0][0]
    st.close()
    s2 = make(d)
    try:
        end = time.monotonic() + 20
        while True:
            j = s2.store.get_job(jid)
            if j["attempts"] == 2 or time.monotonic() > end:
                break
            time.sleep(0.05)
        assert j["attempt_list"][0]["outcome"] == "aborted" and j["failures"] == 0, j
        h.popens[0].wait(5)  # the partial gang's rank 0 was stopped
        assert proc_start_ticks(rank0) is None
    finally:
        s2.controller.stop()
