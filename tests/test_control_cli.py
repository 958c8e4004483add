"""`suanli up` as a real server on 127.0.0.1 and the CLI client against it, run from the directory `up` was
started in (so the client finds ./.suanli/ by itself), with the example job files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from suanli.cli.main import app
from suanli.errors import SuanliError

# jobs run as the test's own user here (as root, `suanli up` would create per-tenant users: test_security_isolation)
UP = [sys.executable, "-m", "suanli.cli.main", "up", "--job-users", "shared"]

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    cwd = tmp_path_factory.mktemp("up")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([*UP, "--port", str(port), "--devices", "4xBR100", "--partition", "gpu,big",
                          "--partition", "gpu", "--retry-backoff", "0.1"], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["controller"] == "ready":
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        assert p.poll() is None and time.monotonic() < end, "suanli up did not start"
        time.sleep(0.05)
    yield cwd, url, (cwd / ".suanli" / "admin.token").read_text().strip()
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=30)[0].decode()
    assert p.returncode == 0, out
    assert f"control plane on {url}" in out and "admin token:" in out and "suanli submit" in out
    assert "4x BR100 (declared)" in out and "suanli stopped" in out
    assert "partitions: gpu,big" in out


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = runner.invoke(app, list(args), env=env or {"SUANLI_SERVER": "", "SUANLI_TOKEN": ""})
    finally:
        os.chdir(old)
    if isinstance(r.exception, SuanliError):  # what `suanli` (cli.main.run) prints, with exit code 2
        return 2, r.output + f"error: {r.exception}"
    return r.exit_code, r.output


def wait_state(cwd: Path, jid: int, states: set[str], timeout: float = 20) -> dict[str, object]:
    end = time.monotonic() + timeout
    while True:
        code, out = cli(cwd, "job", str(jid), "--json")
        assert code == 0, out
        j = json.loads(out)
        if j["state"] in states:
            return j
        assert time.monotonic() < end, j["state"]
        time.sleep(0.1)


def test_examples_run_through_the_cli(server: tuple[Path, str, str]) -> None:
    cwd, _, _ = server
    ids = {}
    for name in ("hello-cpu", "gang-2dev", "checkpoint-retry"):
        code, out = cli(cwd, "submit", str(ROOT / "examples" / f"{name}.yaml"), "--json")
        assert code == 0, out
        ids[name] = json.loads(out)["id"]
    for name, jid in ids.items():
        j = wait_state(cwd, jid, {"succeeded", "failed"})
        assert j["state"] == "succeeded", (name, j)
    code, out = cli(cwd, "logs", str(ids["hello-cpu"]), "-f")
    assert code == 0 and "hello from job" in out and "done" in out
    code, out = cli(cwd, "logs", str(ids["gang-2dev"]), "--rank", "1")
    assert "rank 1/2" in out and "BIREN_VISIBLE_DEVICES=" in out
    code, out = cli(cwd, "logs", str(ids["checkpoint-retry"]))
    assert "resuming from step 50" in out
    code, out = cli(cwd, "job", str(ids["checkpoint-retry"]))
    assert code == 0 and "attempt 1" in out and "attempt 2" in out and "requeued" in out
    code, out = cli(cwd, "jobs")
    assert code == 0 and "gang-2dev" in out and "succeeded" in out
    code, out = cli(cwd, "jobs", "--state", "failed", "--json")
    assert json.loads(out)["items"] == []


def test_cancel_nodes_queues_tenants(server: tuple[Path, str, str]) -> None:
    cwd, url, _ = server
    job = cwd / "sleepy.yaml"
    job.write_text("name: sleepy\ncommand: [sleep, '60']\n")
    code, out = cli(cwd, "submit", str(job))
    assert code == 0 and "submitted job" in out
    jid = int(out.split()[2])
    wait_state(cwd, jid, {"running"})
    code, out = cli(cwd, "cancel", str(jid), "--wait", "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled"
    code, out = cli(cwd, "nodes")
    assert code == 0 and "BR100" in out and "declared" in out
    code, out = cli(cwd, "queues", "--create", "research", "--weight", "2", "--quota", "BR100=2", "--json")
    assert code == 0 and {"name": "research", "quota": {"BR100": 2}}.items() <= next(
        q for q in json.loads(out) if q["name"] == "research").items()
    code, out = cli(cwd, "tenants", "--create", "nlp")
    assert code == 0 and "token" in out
    token = out.split("(shown once): ")[1].split()[0]
    # a tenant through the environment variables sees only its own jobs
    env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": token}
    code, out = cli(cwd, "jobs", "--json", env=env)
    assert code == 0 and json.loads(out)["items"] == []
    code, out = cli(cwd, "job", str(jid), env=env)
    assert code == 2 and "404" in out
    code, out = cli(cwd, "tenants", env=env)
    assert code == 2 and "403" in out


def test_cli_errors_are_one_line_without_traceback(server: tuple[Path, str, str], tmp_path: Path) -> None:
    cwd, _, _ = server
    bad = cwd / "bad.yaml"
    bad.write_text("name: x\ncommand: [\"true\"]\nresources:\n  accelerators: 2.5\n")
    code, out = cli(cwd, "submit", str(bad))
    assert code == 2 and "bad.yaml:3: resources" in out and "Traceback" not in out
    code, out = cli(cwd, "submit", str(cwd / "missing.yaml"))
    assert code == 2 and "Traceback" not in out
    code, out = cli(tmp_path, "jobs")  # no ./.suanli here and nothing in the environment
    assert code == 2 and "no server" in out
    code, out = cli(cwd, "jobs", "--server", "http://127.0.0.1:1", "--token", "x")
    assert code == 2 and "cannot reach" in out


def test_nodes_partitions_from_up_and_set_by_an_admin(server: tuple[Path, str, str], tmp_path: Path) -> None:
    """`suanli up --partition gpu,big --partition gpu` puts this node in gpu and big; `suanli nodes --update` sets
    an admin's partitions (they win), --no-partitions none, --reset-partitions back to the node's own."""
    cwd, _, _ = server

    def node() -> dict[str, object]:
        code, out = cli(cwd, "nodes", "--json")
        assert code == 0, out
        n: dict[str, object] = json.loads(out)["nodes"][0]
        return n

    n = node()
    name = str(n["name"])
    assert (n["partitions"], n["partitions_reported"], n["partitions_override"]) == (["gpu", "big"], ["gpu", "big"],
                                                                                     None)
    code, out = cli(cwd, "nodes")
    assert code == 0 and "PARTIT" in out and "gpu,big" in out  # (the header is cut at 80 columns)
    try:
        code, out = cli(cwd, "nodes", "--update", name, "--partition", "train", "--partition", "serve,train")
        assert code == 0 and "(admin)" in out, out  # the names themselves are cut at 80 columns
        n = node()
        assert (n["partitions"], n["partitions_override"], n["partitions_reported"]) == (
            ["train", "serve"], ["train", "serve"], ["gpu", "big"])
        code, out = cli(cwd, "nodes", "--update", name, "--no-partitions")
        assert code == 0 and node()["partitions"] is None and node()["partitions_override"] == []
        for args, want in ((["--update", name, "--partition", "no space"], "--partition: partition name 'no space'"),
                           (["--partition", "x"], "go with --update NODE"),
                           (["--update", name], "give one of"),
                           (["--update", name, "--partition", "x", "--reset-partitions"], "give one of"),
                           (["--update", "nope", "--partition", "x"], "404")):
            code, out = cli(cwd, "nodes", *args)
            assert code == 2 and want in out and "Traceback" not in out, (args, out)
        code, out = cli(cwd, "nodes", "--update", name, "--partition", "gpu")
        code, out = cli(cwd, "queues", "--create", "gpuq", "--partition", "gpu", "--json")
        assert code == 0 and "warning" not in out and next(
            q for q in json.loads(out) if q["name"] == "gpuq")["partitions"] == ["gpu"]
        code, out = cli(cwd, "queues", "--update", "gpuq", "--partition", "gpu,ghost")
        assert code == 0 and "warning: no node is in partition ghost: jobs of queue gpuq" in " ".join(out.split())
        assert "partition gpu:" not in out
    finally:
        code, out = cli(cwd, "nodes", "--update", name, "--reset-partitions")
    assert code == 0 and node()["partitions"] == ["gpu", "big"] and node()["partitions_override"] is None
    r = subprocess.run([*UP, "--port", "1", "--data-dir", str(tmp_path / "d"), "--partition", "bad name"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--partition: partition name 'bad name'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_second_up_on_the_same_data_dir_or_port_is_refused(server: tuple[Path, str, str], tmp_path: Path) -> None:
    cwd, url, _ = server
    port = url.rsplit(":", 1)[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other_port = str(s.getsockname()[1])
    r = subprocess.run([*UP, "--port", other_port], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "in use by another" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*UP, "--port", port, "--data-dir",
                        str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
