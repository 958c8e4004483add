"""Hostile jobs (issue 9), with real processes, on SQLite and PostgreSQL:

- a tenant's job cannot read the controller's data (admin token, database, data directory listing) nor another
  tenant's logs and files: as root, each tenant's jobs run as an OS user of their own (created here with useradd
  under a throwaway prefix, removed afterwards);
- SIGTERM reaches the command, which gets its termination_grace (a job saves a checkpoint) before SIGKILL;
- processes that left the attempt's process group (setsid, a wiped environment) do not survive cancel or job end;
- logs are capped and rotated.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.api.server import Service, open_service
from suanli.control import cgroups
from suanli.control.isolation import JobUsers
from suanli.control.logs import LogPolicy, rotated
from test_control_store import pg_url_or_skip

PREFIX = f"slt{os.getpid() % 100000}-"


def need_root() -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("switching OS users needs root and useradd (CI runs as root)")


@pytest.fixture(params=["sqlite", "postgresql"])
def iso(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    need_root()
    db = None if request.param == "sqlite" else pg_url_or_skip()
    top = Path(tempfile.mkdtemp(prefix="suanli-iso-", dir="/tmp"))  # pytest's tmp_path is 0700: jobs cannot reach
    os.chmod(top, 0o711)
    monkeypatch.setenv("SUANLI_TEST_CONTROLLER_SECRET", "controller-env-secret")
    users = JobUsers("create", prefix=PREFIX)
    s = open_service(top / "data", db=db, devices="2xBR100", node="n1", tick_s=0.02, retry_base_s=0.05, grace_s=1.0,
                     job_users=users, log_policy=LogPolicy(200_000, 1))
    s.controller.start()
    assert s.controller.ready.wait(10)
    yield s
    s.controller.stop()
    s.store.close()
    for u in users._cache.values():
        subprocess.run(["userdel", u.name], capture_output=True)
    shutil.rmtree(top, ignore_errors=True)


def api(s: Service) -> tuple[TestClient, dict[str, str]]:
    return TestClient(s.app), {"Authorization": f"Bearer {s.admin_token_path.read_text().strip()}"}


def tenant(s: Service, name: str) -> dict[str, str]:
    c, h = api(s)
    return {"Authorization": f"Bearer {c.post('/v1/tenants', json={'name': name}, headers=h).json()['token']}"}


def submit(s: Service, h: dict[str, str], body: dict[str, Any]) -> int:
    r = api(s)[0].post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def wait(s: Service, jid: int, states: set[str], timeout: float = 20) -> dict[str, Any]:
    c, h = api(s)
    end = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{jid}", headers=h).json()
        if j["state"] in states:
            return j
        assert time.monotonic() < end, f"job {jid} still {j['state']}, wanted {states}"
        time.sleep(0.03)


def log(s: Service, jid: int, **params: Any) -> str:
    c, h = api(s)
    return c.get(f"/v1/jobs/{jid}/logs", params=params, headers=h).text


def sh(script: str, **kw: Any) -> dict[str, Any]:
    return {"name": "j", "command": ["sh", "-c", script], **kw}


def test_a_job_cannot_read_the_controllers_data_or_another_tenants(iso: Service) -> None:
    s, dd = iso, iso.data_dir
    ha, hb = tenant(s, "team-a"), tenant(s, "team-b")
    b = submit(s, hb, sh("echo secret-of-b; echo secret-of-b > secret"))
    assert wait(s, b, {"succeeded", "failed"})["state"] == "succeeded"
    probes = {
        "token": f"cat {dd}/admin.token",
        "token-rel": 'cat "$SUANLI_WORK_DIR/../../../admin.token"',
        "db": f"cat {dd}/suanli.db",
        "ls": f"ls {dd}",
        "ls-jobs": f"ls {dd}/jobs",
        "b-log": f"cat {dd}/jobs/{b}/logs/attempt-1.rank-0.log",
        "b-work": f"cat {dd}/jobs/{b}/work/secret",
        "b-ckpt": f"ls {dd}/jobs/{b}/checkpoint",
    }
    script = "; ".join(f"if {cmd} >/dev/null 2>&1; then echo LEAK-{k}; else echo denied-{k}; fi"
                       for k, cmd in probes.items())
    script += '; echo "uid=$(id -u) home=$HOME"; env | grep -c SUANLI_TEST_CONTROLLER_SECRET; echo mine > own'
    a = submit(s, ha, sh(script))
    assert wait(s, a, {"succeeded", "failed"})["state"] == "succeeded"
    out = log(s, a)
    assert "LEAK" not in out, out
    assert all(f"denied-{k}" in out for k in probes), out
    ua, ub = pwd.getpwnam(f"{PREFIX}team-a"), pwd.getpwnam(f"{PREFIX}team-b")
    assert ua.pw_uid != 0 and ua.pw_uid != ub.pw_uid
    assert f"uid={ua.pw_uid} home={dd}/jobs/{a}/work" in out
    assert "\n0\n" in out  # the controller's environment did not reach the job
    # what the operator sees on disk
    assert stat.S_IMODE(os.stat(dd).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(dd / "admin.token").st_mode) == 0o600
    if s.store.is_sqlite:
        assert stat.S_IMODE(os.stat(dd / "suanli.db").st_mode) == 0o600
    work = dd / "jobs" / str(a) / "work"
    assert os.stat(work).st_uid == ua.pw_uid and stat.S_IMODE(os.stat(work).st_mode) == 0o700
    assert (work / "own").read_text() == "mine\n"
    logs_dir = dd / "jobs" / str(a) / "logs"
    assert os.stat(logs_dir).st_uid == 0 and stat.S_IMODE(os.stat(logs_dir).st_mode) == 0o700
    assert "secret-of-b" in log(s, b)  # the owner (through the API) still reads its log


def test_a_planted_link_is_not_followed(iso: Service) -> None:
    """A job replaces its exit file by a link to the admin token (or a FIFO): the controller reads neither."""
    s, dd = iso, iso.data_dir
    ha = tenant(s, "team-l")
    j = submit(s, ha, sh(f'ln -sf {dd}/admin.token "$SUANLI_EXIT_FILE.x"; '
                         'mkfifo "$SUANLI_EXIT_FILE.f"; echo planted; exit 3', max_retries=0))
    st = wait(s, j, {"succeeded", "failed"})
    assert st["state"] == "failed" and st["exit_code"] == 3


def test_sigterm_reaches_the_command_which_gets_its_grace(iso: Service) -> None:
    s = iso
    h = tenant(s, "team-g")
    saver = ("import os, signal, sys, time\n"
             "def term(*_):\n"
             "    time.sleep(1.0)  # saving takes a while\n"
             "    open(os.path.join(os.environ['SUANLI_CHECKPOINT_DIR'], 'ckpt'), 'w').write('saved')\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, term)\n"
             "print('ready', flush=True)\n"
             "time.sleep(600)\n")
    j = submit(s, h, {"name": "saver", "command": ["python3", "-c", saver], "termination_grace": "10s"})
    wait(s, j, {"running"})
    end = time.monotonic() + 15
    while "ready" not in log(s, j):
        assert time.monotonic() < end
        time.sleep(0.05)
    c, ah = api(s)
    assert c.post(f"/v1/jobs/{j}/cancel", headers=ah).status_code == 202
    st = wait(s, j, {"cancelled"})
    ckpt = s.data_dir / "jobs" / str(j) / "checkpoint" / "ckpt"
    assert ckpt.read_text() == "saved"  # written 1 s after SIGTERM: more than the executor's default grace here
    assert st["attempt_list"][-1]["exit_code"] == 0  # the command's own exit status, recorded by the wrapper
    # a job that ignores SIGTERM is killed once its grace is over, not before
    k = submit(s, h, {"name": "stubborn", "command": ["sh", "-c", "trap '' TERM; echo up; sleep 600"],
                      "termination_grace": "1.5s"})
    wait(s, k, {"running"})
    while "up" not in log(s, k):
        time.sleep(0.05)
    t0 = time.monotonic()
    c.post(f"/v1/jobs/{k}/cancel", headers=ah)
    wait(s, k, {"cancelled"})
    assert 1.4 < time.monotonic() - t0 < 6


def live_with_arg(word: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if word.encode() in f.read().split(b"\0"):
                        out.append(int(d))
            except OSError:
                pass
    return out


def test_processes_that_left_the_group_do_not_survive(iso: Service) -> None:
    s = iso
    h = tenant(s, "team-e")
    n1, n2, n3 = (str(7000 + os.getpid() % 1000 * 3 + i) for i in range(3))
    wiped = cgroups.cgroup2_root() is not None  # an escapee without the attempt key is found by its cgroup only
    esc = f"setsid sleep {n1} & " + (f"env -i /usr/bin/setsid /bin/sleep {n2} & " if wiped else "")
    j = submit(s, h, sh(esc + "echo up; sleep 600"))
    wait(s, j, {"running"})
    end = time.monotonic() + 10
    while not live_with_arg(n1) or (wiped and not live_with_arg(n2)):
        assert time.monotonic() < end, "the escapees did not start"
        time.sleep(0.05)
    c, ah = api(s)
    c.post(f"/v1/jobs/{j}/cancel", headers=ah)
    wait(s, j, {"cancelled"})
    end = time.monotonic() + 5
    while live_with_arg(n1) or live_with_arg(n2):
        assert time.monotonic() < end, "a setsid escapee survived the cancel"
        time.sleep(0.05)
    # a job that ends by itself, leaving a daemon behind
    k = submit(s, h, sh(f"setsid sleep {n3} & sleep 0.3; echo bye"))
    assert wait(s, k, {"succeeded", "failed"})["state"] == "succeeded"
    end = time.monotonic() + 5
    while live_with_arg(n3):
        assert time.monotonic() < end, "a daemon survived the end of its job"
        time.sleep(0.05)


def test_logs_are_capped_and_rotated(iso: Service) -> None:
    s = iso
    h = tenant(s, "team-n")
    script = ("i=0; while [ $i -lt 40 ]; do head -c 50000 /dev/zero | tr '\\0' x; echo; i=$((i+1)); sleep 0.02; "
              "done; echo END")
    j = submit(s, h, sh(script))
    assert wait(s, j, {"succeeded", "failed"}, timeout=40)["state"] == "succeeded"
    p = s.data_dir / "jobs" / str(j) / "logs" / "attempt-1.rank-0.log"
    assert p.stat().st_size < 600_000, p.stat().st_size  # 2 MB written, 200 kB cap (+ what one tick lets through)
    assert rotated(p, 1).exists() and rotated(p, 1).stat().st_size < 600_000
    assert not rotated(p, 2).exists()  # keep=1
    assert log(s, j, tail=1) == "END\n"


def test_tenants_mapped_to_the_operators_users(tmp_path: Path) -> None:
    """--job-users map: a tenant's jobs run as the OS user the operator mapped; a tenant without one cannot run."""
    need_root()
    from suanli.control.isolation import load_user_map

    name = f"{PREFIX}mapped"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    top = Path(tempfile.mkdtemp(prefix="suanli-map-", dir="/tmp"))
    os.chmod(top, 0o711)
    try:
        f = top / "users.yaml"
        f.write_text(f"team-m: {name}\nteam-root: root\n")
        umap = load_user_map(f)
        assert umap == {"team-m": name, "team-root": "root"}
        s = open_service(top / "data", devices="1xBR100", node="n1", tick_s=0.02, grace_s=1.0,
                         job_users=JobUsers("map", umap))
        s.controller.start()
        assert s.controller.ready.wait(10)
        try:
            hm, hx, hr = tenant(s, "team-m"), tenant(s, "team-x"), tenant(s, "team-root")
            j = submit(s, hm, sh("id -un"))
            assert wait(s, j, {"succeeded", "failed"})["state"] == "succeeded"
            assert log(s, j).strip() == name
            for h, why in ((hx, "no OS user is mapped to tenant 'team-x'"), (hr, "refused")):
                k = submit(s, h, sh("id -un"))
                st = wait(s, k, {"succeeded", "failed"})
                assert st["state"] == "failed"
                c, ah = api(s)
                assert any(why in e["message"] for e in c.get(f"/v1/jobs/{k}/events", headers=ah).json())
        finally:
            s.controller.stop()
            s.store.close()
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
