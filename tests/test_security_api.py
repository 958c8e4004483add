"""Hostile API use (issue 9) against a real HTTP server (uvicorn in a thread), on SQLite and PostgreSQL: log
followers that must not stall the API, tails of huge logs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import uvicorn

from suanli.api import logs
from suanli.control import logs as clogs
from suanli.control.service import Service
from test_api_jobs import svc  # noqa: F401 (fixture)


@pytest.fixture
def server(svc: Service) -> Iterator[tuple[str, Service]]:  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = uvicorn.Config(svc.app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                         timeout_graceful_shutdown=1)
    srv = uvicorn.Server(cfg)
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    end = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < end and th.is_alive()
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", svc
    srv.should_exit = True
    th.join(10)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_many_log_followers_do_not_stall_the_api(server: tuple[str, Service]) -> None:
    url, s = server
    h = bearer(s.admin_token_path.read_text().strip())
    jid = httpx.post(url + "/v1/jobs", json={"name": "quiet", "command": ["sleep", "60"]}, headers=h).json()["id"]
    ctx = s.app.state.ctx
    with ExitStack() as stack:
        for _ in range(45):  # more than the ~40 worker threads a thread per follower would need
            c = stack.enter_context(httpx.Client(timeout=5))
            r = stack.enter_context(c.stream("GET", f"{url}/v1/jobs/{jid}/logs", params={"follow": "true"},
                                             headers=h))
            assert r.status_code == 200
        t0 = time.perf_counter()  # with a thread per follower these wait until the job ends (a timeout here)
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(url + f"/v1/jobs/{jid}", headers=h, timeout=10).status_code == 200
        assert time.perf_counter() - t0 < 5.0  # generous: a loaded 2-core CI box
        assert ctx.followers.active == {"admin": 45}
    # the clients went: their followers end (not after the job or the idle limit)
    end = time.monotonic() + 5
    while ctx.followers.active and time.monotonic() < end:
        time.sleep(0.05)
    assert ctx.followers.active == {}
    httpx.post(f"{url}/v1/jobs/{jid}/cancel", headers=h)


def test_follower_cap_per_tenant(server: tuple[str, Service]) -> None:
    url, s = server
    h = bearer(s.admin_token_path.read_text().strip())
    tok = httpx.post(url + "/v1/tenants", json={"name": "greedy"}, headers=h).json()["token"]
    other = httpx.post(url + "/v1/tenants", json={"name": "patient"}, headers=h).json()["token"]
    jid = httpx.post(url + "/v1/jobs", json={"name": "q", "command": ["sleep", "60"]},
                     headers=bearer(tok)).json()["id"]
    jid2 = httpx.post(url + "/v1/jobs", json={"name": "q2", "command": ["sleep", "60"]},
                      headers=bearer(other)).json()["id"]
    cap = s.app.state.ctx.followers.per_tenant
    with ExitStack() as stack:
        c = stack.enter_context(httpx.Client(timeout=5, base_url=url))
        for _ in range(cap):
            r = stack.enter_context(c.stream("GET", f"/v1/jobs/{jid}/logs?follow=true", headers=bearer(tok)))
            assert r.status_code == 200
        r = httpx.get(f"{url}/v1/jobs/{jid}/logs?follow=true", headers=bearer(tok), timeout=5)
        assert r.status_code == 429 and "at most" in r.json()["detail"]
        # another tenant is not affected, nor is reading without follow
        with httpx.stream("GET", f"{url}/v1/jobs/{jid2}/logs?follow=true", headers=bearer(other), timeout=5) as r2:
            assert r2.status_code == 200
        assert httpx.get(f"{url}/v1/jobs/{jid}/logs", headers=bearer(tok), timeout=5).status_code == 200
    for j, t in ((jid, tok), (jid2, other)):
        httpx.post(f"{url}/v1/jobs/{j}/cancel", headers=bearer(t))


def test_tails_read_from_the_end_in_bounded_time(tmp_path: Path) -> None:
    p = tmp_path / "one-line.log"
    with open(p, "wb") as f:  # 32 MB without a newline, then a short last line
        for _ in range(512):
            f.write(b"x" * 65536)
        f.write(b"\nlast\n")
    t0 = time.perf_counter()
    assert logs.last_lines(p, 1) == b"last\n"
    off = clogs.tail_offset(p, 2)
    assert off == 0 and time.perf_counter() - t0 < 2.0
    q = tmp_path / "many.log"
    with open(q, "wb") as f:
        for i in range(0, 400_000, 1000):
            f.write(b"".join(b"line %d\n" % k for k in range(i, i + 1000)))
    t0 = time.perf_counter()
    assert clogs.tail_offset(q, 1_000_000) == 0  # more lines asked than there are: all of it
    chunks = list(clogs.tail_chunks(q, 300_000))
    assert max(len(c) for c in chunks) <= clogs.CHUNK  # streamed, never the whole tail in one piece
    body = b"".join(chunks)
    assert body.startswith(b"line 100000\n") and body.endswith(b"line 399999\n")
    assert time.perf_counter() - t0 < 2.0
    assert logs.last_lines(q, 1, end=7) == b"line 0\n"
    r = tmp_path / "r.log"
    r.write_bytes(b"a\nb\nc")
    assert logs.last_lines(r, 1) == b"c" and logs.last_lines(r, 2) == b"b\nc" and logs.last_lines(r, 0) == b"a\nb\nc"


def test_rotation_caps_a_log_and_keeps_the_newest(tmp_path: Path) -> None:
    p = tmp_path / "attempt-1.rank-0.log"
    pol = clogs.LogPolicy(max_bytes=1000, keep=2)
    fd = clogs_open_append(p)
    try:
        for round_ in range(5):
            os_write_lines(fd, round_, 100)  # ~1.3 KB per round
            assert clogs.rotate_if_needed(p, pol)
        os_write_lines(fd, 9, 3)
    finally:
        import os

        os.close(fd)
    assert p.stat().st_size < 1000  # the writer's next writes landed at the new, small end
    text = p.read_text()
    assert "log rotated" in text and "r9-2" in text and "r4-" not in text
    assert "r4-99" in clogs.rotated(p, 1).read_text() and "r3-99" in clogs.rotated(p, 2).read_text()
    assert not clogs.rotated(p, 3).exists()
    assert not clogs.rotate_if_needed(p, pol)
    whole = b"".join(clogs.tail_chunks(p, 0)).decode()
    assert whole.index("r3-0") < whole.index("r4-0") < whole.index("r9-0")


def clogs_open_append(p: Path) -> int:
    import os

    return os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def os_write_lines(fd: int, r: int, n: int) -> None:
    import os

    os.write(fd, b"".join(b"r%d-%d ............\n" % (r, i) for i in range(n)))
