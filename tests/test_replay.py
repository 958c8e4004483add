"""``suanli replay``: a trace through the public API at its arrival times, summary and per-job results."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from suanli.api.server import Service, open_service
from suanli.cli.main import app
from suanli.cli.replay import SUMMARY_KEYS, trace_specs
from suanli.sim.traces import read_trace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    svc = open_service(tmp_path / "d", devices="4xBR100", node="n1", tick_s=0.02, grace_s=1.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    end = time.monotonic() + 10
    while not server.started and time.monotonic() < end:
        time.sleep(0.01)
    svc.controller.start()
    assert svc.controller.ready.wait(10)
    yield svc, f"http://127.0.0.1:{port}"
    server.should_exit = True
    th.join(10)
    svc.controller.stop()
    svc.store.close()


def itp(path: Path, rows: list[tuple[float, float, int]]) -> Path:
    path.write_text("job_id,submission_time,duration,num_gpu\n"
                    + "".join(f"j{i},{t},{d},{g}\n" for i, (t, d, g) in enumerate(rows)))
    return path


def test_trace_specs_carry_the_trace(tmp_path: Path) -> None:
    w = read_trace(itp(tmp_path / "t.csv", [(100, 50, 2), (130, 5, 1)])).fix_estimates(0.0, 0)
    items = trace_specs(w)
    assert [a for a, _ in items] == [0.0, 30.0]
    s0 = items[0][1]
    assert s0["resources"]["accelerators"] == 2 and s0["simulate"] == {"duration": 50.0}
    assert s0["expected_runtime"] == 50.0 and s0["command"] == ["sleep", "50"]


def test_replay_end_to_end(served: tuple[Service, str], tmp_path: Path) -> None:
    svc, url = served
    # 0.4 s jobs on 4 devices: the two 4-device jobs queue behind each other; the bad one (5 devices) is refused
    trace = itp(tmp_path / "t.csv", [(0, 0.4, 4), (0.1, 0.4, 4), (0.2, 0.3, 1), (0.3, 0.3, 5)])
    tok = svc.admin_token_path.read_text().strip()
    out = tmp_path / "res.jsonl"
    r = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--server", url, "--token", tok, "--json",
                                 "--timeout", "60", "--results", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)  # stdout: the one JSON object; why jobs were refused goes to stderr
    assert "1 refused" in r.stderr and "can never run" in r.stderr
    assert tuple(s) == SUMMARY_KEYS
    assert (s["submitted"], s["accepted"], s["finished"], s["failed"], s["lost"]) == (4, 3, 3, 0, 0)
    assert s["avg_jct_s"] >= 0.3 and s["makespan_s"] >= 0.8 and s["avg_queue_s"] > 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["state"] for x in rows] == ["succeeded", "succeeded", "succeeded", "refused"]
    assert "can never run" in rows[3]["error"]
    assert rows[1]["queue_s"] >= 0.25  # waited for the first 4-device job
    assert all(x["device_s"] > 0 for x in rows[:3])


def test_replay_load_rescales_arrivals(served: tuple[Service, str], tmp_path: Path) -> None:
    svc, url = served
    # two 1-device jobs of 0.2 s, 1000 s apart: at --load 0.5 on 4 devices they arrive 0.2 s apart
    trace = itp(tmp_path / "t.csv", [(0, 0.2, 1), (1000, 0.2, 1)])
    tok = svc.admin_token_path.read_text().strip()
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--server", url, "--token", tok, "--json",
                                 "--load", "0.5", "--timeout", "60"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["finished"] == 2 and time.monotonic() - t0 < 30


def test_replay_bad_trace_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["replay", "--trace", str(tmp_path / "nope.csv"), "--server", "http://127.0.0.1:9",
                                 "--token", "x"])
    assert r.exit_code != 0 and "--trace" in str(r.exception or r.output)


def openb(path: Path, rows: list[tuple[float, float, int, str, str]]) -> Path:
    """An openb-format trace: (created, deleted, gpus, gpu_spec, qos)."""
    path.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,creation_time,deletion_time\n"
                    + "".join(f"p{i},1000,1024,{g},1000,{spec},{q},{c},{d}\n"
                              for i, (c, d, g, spec, q) in enumerate(rows)))
    return path


def test_fit_models_and_api_names(tmp_path: Path) -> None:
    from suanli.cli.replay import api_names, fit_models

    w = read_trace(openb(tmp_path / "o.csv", [(0, 10, 1, "BR100|A100", "LS"), (1, 11, 1, "V100", "LS"),
                                              (2, 12, 1, "", "BE")]))
    fw, dropped = fit_models(w, {"BR100", "H100"})
    assert dropped == 1  # V100: the server has none
    assert [fw.model_sets[m] if m >= 0 else None for m in fw.models] == [("BR100",), None, None]
    assert list(w.models[:2]) != [-1, -1]  # the original is untouched
    items = trace_specs(fw, keep_models=True, tenants=True)
    assert items[0][1]["resources"]["model"] == ["BR100"] and "model" not in items[1][1]["resources"]
    assert [(s["tenant"], s["queue"]) for _, s in items] == [("LS", "LS"), ("LS", "LS"), ("BE", "BE")]
    assert "tenant" not in trace_specs(fw)[0][1]  # both off by default for the library
    assert api_names(["a b", "a/b", "_x", "", "ok"]) == ["a-b", "a-b-2", "x", "default", "ok"]


def test_replay_carries_models_and_tenants(served: tuple[Service, str], tmp_path: Path) -> None:
    svc, url = served
    trace = openb(tmp_path / "o.csv", [(0, 0.2, 1, "BR100", "LS"), (0.1, 0.3, 1, "A100|BR100", "Batch_1"),
                                       (0.2, 0.2, 1, "V100", "LS")])
    tok = svc.admin_token_path.read_text().strip()
    r = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--server", url, "--token", tok,
                                 "--timeout", "60", "--results", str(tmp_path / "r.jsonl")])
    assert r.exit_code == 0, r.output
    assert "created 4" in r.output and "1 jobs lost their model constraint" in r.output
    assert {t["name"] for t in svc.store.list_tenants()} >= {"LS", "Batch_1"}
    assert {q["name"] for q in svc.store.list_queues()} >= {"LS", "Batch_1"}
    ids = [json.loads(x)["id"] for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    jobs = [svc.store.get_job(i) for i in ids]
    assert [(j["tenant"], j["queue"], j["state"]) for j in jobs] == [
        ("LS", "LS", "succeeded"), ("Batch_1", "Batch_1", "succeeded"), ("LS", "LS", "succeeded")]
    assert [j["spec"]["resources"].get("model") for j in jobs] == [["BR100"], ["BR100"], None]
    # --no-tenants / --no-models: one tenant, no constraints (and a second run creates nothing)
    r = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--server", url, "--token", tok, "--json",
                                 "--no-tenants", "--no-models", "--timeout", "60"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["finished"] == 3
    newest = svc.store.list_jobs(limit=3)[0]
    assert [(j["tenant"], j["queue"]) for j in newest] == [("default", "default")] * 3


def test_replay_bad_cap_duration_is_one_line(tmp_path: Path) -> None:
    trace = itp(tmp_path / "t.csv", [(0, 10, 1)])
    r = CliRunner().invoke(app, ["replay", "--trace", str(trace), "--cap-duration", "soon", "--server",
                                 "http://127.0.0.1:9", "--token", "x"])
    assert r.exit_code != 0 and "--cap-duration" in str(r.exception or r.output)
