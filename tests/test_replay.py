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
    s = json.loads(r.output)
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
    assert json.loads(r.output)["finished"] == 2 and time.monotonic() - t0 < 30


def test_replay_bad_trace_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["replay", "--trace", str(tmp_path / "nope.csv"), "--server", "http://127.0.0.1:9",
                                 "--token", "x"])
    assert r.exit_code != 0 and "--trace" in str(r.exception or r.output)
