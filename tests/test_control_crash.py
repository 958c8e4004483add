"""Crash safety: `suanli up` is killed with SIGKILL again and again while jobs are submitted and running. Every
accepted submission must survive and every job must run exactly once (processes that outlive the controller are
re-adopted; attempts recorded but never spawned are requeued)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

# jobs run as the test's own user here (as root, `suanli up` would create per-tenant users: test_security_isolation)
UP = [sys.executable, "-m", "suanli.cli.main", "up", "--job-users", "shared"]

CYCLES = int(os.environ.get("SUANLI_CRASH_CYCLES", "5"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data: Path, port: int, db: str | None = None) -> None:
        self.data, self.port, self.db = data, port, db
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*UP, "--data-dir", str(self.data), "--port", str(self.port),
             "--devices", "4xBR100", "--node", "n1", "--retry-backoff", "0.05",
             *(["--db", self.db] if self.db else [])],
            stdout=subprocess.DEVNULL, stderr=open(self.data.parent / "server.log", "ab"))  # noqa: SIM115
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).json()["controller"] == "ready":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert self.proc.poll() is None, (self.data.parent / "server.log").read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError("server did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_sigkill_loop_loses_nothing_and_runs_nothing_twice(tmp_path: Path, store: str) -> None:
    from test_control_store import pg_url_or_skip

    db = pg_url_or_skip() if store == "postgresql" else None
    cycles = CYCLES if store == "sqlite" else max(1, CYCLES // 2)
    data = tmp_path / "data"
    marks = tmp_path / "marks"
    marks.mkdir()
    srv = Server(data, free_port(), db)
    srv.start()
    token = (data / "admin.token").read_text().strip()
    h = {"Authorization": f"Bearer {token}"}
    accepted: list[int] = []
    stop = threading.Event()
    rng = random.Random(7)

    def submitter() -> None:
        i = 0
        with httpx.Client(base_url=srv.url, headers=h, timeout=5) as c:
            while not stop.is_set():
                i += 1
                body = {"name": f"j{i}", "resources": {"accelerators": 1 + i % 2},
                        "command": ["sh", "-c",
                                    f'echo "$SUANLI_ATTEMPT" >> {marks}/$SUANLI_JOB_ID.$RANK; sleep 0.{i % 3}'],
                        "priority": i % 3}
                try:
                    r = c.post("/v1/jobs", json=body)
                    if r.status_code == 201:
                        accepted.append(r.json()["id"])
                    else:
                        assert r.status_code < 500, r.text
                except httpx.HTTPError:
                    time.sleep(0.05)
                time.sleep(0.03)

    t = threading.Thread(target=submitter, daemon=True)
    t.start()
    try:
        for _ in range(cycles):
            time.sleep(rng.uniform(0.3, 0.8))
            srv.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            srv.start()
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(10)
    assert len(accepted) > 8, f"only {len(accepted)} submissions accepted across the restarts"
    try:
        end = time.monotonic() + 120
        with httpx.Client(base_url=srv.url, headers=h, timeout=10) as c:
            while True:
                states: dict[int, str] = {}
                after = None
                while True:
                    page = c.get("/v1/jobs", params={"limit": 1000, **({"after": after} if after else {})}).json()
                    states.update({j["id"]: j["state"] for j in page["items"]})
                    after = page["next"]
                    if after is None:
                        break
                if all(states.get(i) == "succeeded" for i in accepted) and all(
                        s == "succeeded" for s in states.values()):
                    break
                assert time.monotonic() < end, {i: states.get(i) for i in accepted if states.get(i) != "succeeded"}
                time.sleep(0.3)
            assert set(accepted) <= set(states)  # nothing accepted is lost
            for jid in states:
                # every attempt the store records as spawned ran exactly once (per rank), and nothing else ran;
                # several attempts only come from preemptions (priorities differ), never from a restart
                att = c.get(f"/v1/jobs/{jid}").json()["attempt_list"]
                assert all(a["outcome"] in ("succeeded", "preempted", "lost", "aborted") for a in att), att
                must = {str(a["n"]) for a in att if a["outcome"] not in ("lost", "aborted")}
                may = {str(a["n"]) for a in att if a["outcome"] == "aborted"}  # killed while its ranks started
                for rank in range(2):
                    f = marks / f"{jid}.{rank}"
                    if rank == 0 or f.exists():
                        runs = f.read_text().split()
                        assert len(runs) == len(set(runs)) and must <= set(runs) <= must | may, \
                            f"job {jid} rank {rank}: started as attempts {runs}, store: {att}"
            adopted = sum("adopted" in [e["kind"] for e in c.get(f"/v1/jobs/{j}/events").json()] for j in states)
            # usage adds up across the SIGKILLs: one record per (ended attempt, node), chip-time as implied
            from suanli.control.db import sqlite_url
            from suanli.control.store import Store
            from test_accounting_usage import check_adds_up

            st = Store.open(db or sqlite_url(data / "suanli.db"), migrate=False)
            try:
                check_adds_up(st)
                assert st.usage_records(), "no usage recorded"
            finally:
                st.close()
            print(f"{store}: {len(accepted)} accepted, {len(states)} stored, {adopted} re-adopted "
                  f"across {cycles} SIGKILLs")
    finally:
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)  # Ctrl-C: clean stop
        try:
            assert srv.proc.wait(20) == 0
        except subprocess.TimeoutExpired:
            srv.kill()
            pytest.fail("suanli up did not stop on SIGINT")
