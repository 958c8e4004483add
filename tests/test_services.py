"""Services on the local executor with the mock engine, through `suanli up` on 127.0.0.1: replicas come up, the
gateway balances and streams, a load step scales out within the panic window and back after the stable window,
killing a replica loses no request that had not started streaming, tenants only reach their own services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    cwd = tmp_path_factory.mktemp("svc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "suanli.cli.main", "up", "--port", str(port), "--retry-backoff",
                          "0.1", "--job-users", "shared", "--devices", "2xBR100"], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 90  # a loaded 2-core machine
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["controller"] == "ready":
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if p.poll() is not None or time.monotonic() > end:
            p.kill()  # not left running when the fixture fails
            pytest.fail("suanli up did not start: " + p.communicate(timeout=30)[0].decode()[-2000:])
        time.sleep(0.05)
    yield cwd, url, (cwd / ".suanli" / "admin.token").read_text().strip()
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=30)[0].decode()
    assert p.returncode == 0, out


def mock_service(name: str, *, lo: int, hi: int, ttft: float = 0.02, tpot: float = 0.005, seqs: int = 8,
                 model: str | None = None, **extra: Any) -> dict[str, Any]:
    cmd = (f'exec "$SUANLI_PYTHON" -m suanli.serve.mock --model {model or name} --ttft {ttft} --tpot {tpot} '
           f"--max-num-seqs {seqs}")
    return {"name": name, "model": model or name, "command": ["sh", "-c", cmd],
            "resources": {"cpu": 0.1, "memory": "128Mi"}, "replicas": {"min": lo, "max": hi},
            "readiness": {"path": "/health", "period": "200ms"}, **extra}


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def live(url: str, tok: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/services/{name}", headers=h(tok), timeout=60)
    r.raise_for_status()
    return r.json()


def ready(url: str, tok: str, name: str) -> int:
    return int((live(url, tok, name)["live"] or {}).get("ready", 0))


def test_replicas_come_up_and_the_gateway_balances_and_streams(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    r = httpx.post(f"{url}/v1/services", json=mock_service("bal", lo=2, hi=2), headers=h(tok))
    assert r.status_code == 201, r.text
    wait(lambda: ready(url, tok, "bal") == 2, 40, "two ready replicas")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=h(tok), timeout=30) as c:
            return await asyncio.gather(*[c.post(f"{url}/v1/services/bal/v1/completions",
                                                 json={"model": "bal", "prompt": "x y", "max_tokens": 8})
                                          for _ in range(40)])

    rs = asyncio.run(burst())
    assert all(x.status_code == 200 for x in rs)
    assert all(x.json()["usage"]["completion_tokens"] == 8 for x in rs)
    per = Counter(x.headers["x-suanli-replica"] for x in rs)
    assert len(per) == 2 and min(per.values()) >= 10, per  # least outstanding requests spreads a burst
    # OpenAI-style route: `model` chooses the service; SSE chunks pass through one by one
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=h(tok), timeout=30,
                      json={"model": "bal", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                            "max_tokens": 5}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        events = [ln for ln in s.iter_lines() if ln.startswith("data:")]
    assert len(events) == 6 and events[-1] == "data: [DONE]"
    assert json.loads(events[0][5:])["choices"][0]["delta"]["role"] == "assistant"
    # a client that goes away mid-stream: the replica's in-flight count comes back to 0 (no leak skews routing)
    with httpx.stream("POST", f"{url}/v1/services/bal/v1/completions", headers=h(tok), timeout=30,
                      json={"model": "bal", "prompt": "x", "max_tokens": 2000, "stream": True}) as s:
        next(s.iter_lines())
    wait(lambda: all(x["outstanding"] == 0 for x in live(url, tok, "bal")["live"]["replicas"]), 20,
         "in-flight counts back to 0")
    models = httpx.get(f"{url}/v1/models", headers=h(tok)).json()["data"]
    assert {"bal"} <= {m["id"] for m in models}
    d = live(url, tok, "bal")["live"]
    assert d["requests"] >= 41 and d["errors"] == 0 and d["latency_p50_s"] is not None
    # the answers match their documented (typed) schemas
    api = httpx.get(f"{url}/openapi.json").json()
    for method, path, got in (("get", "/v1/services/{name}", httpx.get(f"{url}/v1/services/bal", headers=h(tok))),
                              ("get", "/v1/services", httpx.get(f"{url}/v1/services", headers=h(tok))),
                              ("get", "/v1/models", httpx.get(f"{url}/v1/models", headers=h(tok))),
                              ("post", "/v1/completions", rs[0])):
        schema = api["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": api["components"]}).validate(got.json())
    # replicas are ordinary jobs, counted in their queue
    jobs = httpx.get(f"{url}/v1/jobs", headers=h(tok)).json()["items"]
    assert {"bal-r0", "bal-r1"} <= {j["name"] for j in jobs if j["state"] == "running"}


def test_tenants_reach_only_their_own_services(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    t2 = httpx.post(f"{url}/v1/tenants", json={"name": "other"}, headers=h(tok)).json()["token"]
    r = httpx.post(f"{url}/v1/services", json=mock_service("mine", lo=1, hi=1), headers=h(t2))
    assert r.status_code == 201, r.text
    assert r.json()["tenant"] == "other"
    wait(lambda: ready(url, t2, "mine") == 1, 40, "the tenant's replica")
    ok = httpx.post(f"{url}/v1/completions", headers=h(t2), json={"model": "mine", "prompt": "a", "max_tokens": 2})
    assert ok.status_code == 200
    # the admin's service "bal" (another tenant) is invisible to this tenant, by name and by model
    assert httpx.post(f"{url}/v1/services/bal/v1/completions", headers=h(t2),
                      json={"model": "bal", "prompt": "a"}).status_code == 404
    r = httpx.post(f"{url}/v1/completions", headers=h(t2), json={"model": "bal", "prompt": "a"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=h(t2)).json()["data"]] == ["mine"]
    assert httpx.get(f"{url}/v1/services/bal", headers=h(t2)).status_code == 404
    assert [s["name"] for s in httpx.get(f"{url}/v1/services", headers=h(t2)).json()] == ["mine"]
    # no token, a wrong token, another tenant's spec
    assert httpx.post(f"{url}/v1/completions", json={"model": "mine"}).status_code == 401
    assert httpx.post(f"{url}/v1/completions", headers=h("nope"), json={"model": "mine"}).status_code == 401
    r = httpx.post(f"{url}/v1/services", json={**mock_service("x", lo=1, hi=1), "tenant": "default"},
                   headers=h(t2))
    assert r.status_code == 403
    # the admin reaches both
    assert httpx.post(f"{url}/v1/services/mine/v1/completions", headers=h(tok),
                      json={"model": "mine", "prompt": "a", "max_tokens": 1}).status_code == 200
    assert httpx.delete(f"{url}/v1/services/mine", headers=h(t2)).status_code == 200


def test_bad_service_specs_are_4xx_naming_the_field(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    cases = [
        ({**mock_service("b1", lo=1, hi=1), "replicas": {"min": 3, "max": 2}}, 422, "min"),
        ({**mock_service("b2", lo=1, hi=1), "command": []}, 422, "command"),
        ({**mock_service("b3", lo=1, hi=1), "env": {"PORT": "80"}}, 422, "PORT"),
        ({**mock_service("b4", lo=1, hi=1), "autoscaling": {"panic_window": "60s", "stable_window": "10s"}}, 422,
         "panic_window"),
        ({**mock_service("b5", lo=1, hi=1), "plan": {"accelerator": "H100", "qps": 5}}, 422, "llm"),
        (mock_service("bal", lo=1, hi=1, model="zzz"), 409, "bal"),
    ]
    for body, code, word in cases:
        r = httpx.post(f"{url}/v1/services", json=body, headers=h(tok))
        assert r.status_code == code and word in r.text, (body, r.status_code, r.text)
    assert httpx.patch(f"{url}/v1/services/bal", json={"min": 5, "max": 2}, headers=h(tok)).status_code == 422
    assert httpx.patch(f"{url}/v1/services/nope", json={"min": 1}, headers=h(tok)).status_code == 404


def test_killing_a_replica_loses_no_request_that_had_not_started_streaming(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    # one sequence at a time and a slow first token: most requests wait inside the engines when one is killed
    spec = mock_service("kill", lo=2, hi=2, ttft=0.25, tpot=0.0, seqs=1)
    assert httpx.post(f"{url}/v1/services", json=spec, headers=h(tok)).status_code == 201
    wait(lambda: ready(url, tok, "kill") == 2, 40, "two ready replicas")
    victim = live(url, tok, "kill")["live"]["replicas"][0]
    job = httpx.get(f"{url}/v1/jobs/{victim['job_id']}", headers=h(tok)).json()
    pgid = job["attempt_list"][-1]["pgid"]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=h(tok), timeout=60) as c:
            tasks = [asyncio.create_task(c.post(f"{url}/v1/completions",
                                                json={"model": "kill", "prompt": "p", "max_tokens": 1}))
                     for _ in range(12)]
            await asyncio.sleep(0.6)  # both engines busy, requests queued behind them
            os.killpg(pgid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    rs = asyncio.run(run())
    assert [x.status_code for x in rs] == [200] * 12
    d = live(url, tok, "kill")["live"]
    assert d["retries"] >= 1  # requests that were waiting on the dead replica went to the other one
    # later requests are not lost either, and the controller restarts the replica (max_retries)
    for _ in range(5):
        r = httpx.post(f"{url}/v1/completions", headers=h(tok), timeout=30,
                       json={"model": "kill", "prompt": "p", "max_tokens": 1})
        assert r.status_code == 200
    wait(lambda: ready(url, tok, "kill") == 2, 40, "the killed replica back")
    httpx.delete(f"{url}/v1/services/kill", headers=h(tok))


def scale_event(url: str, tok: str, name: str, after: float, to: int) -> float | None:
    """Wall time of the service's first "scale N -> to" event after ``after`` (the manager's own clock)."""
    for e in live(url, tok, name)["live"]["events"]:
        if e["at"] >= after and e["message"].startswith("scale ") and f"-> {to} " in e["message"]:
            return float(e["at"])
    return None


def test_a_load_step_scales_out_within_the_panic_window_and_back_after_the_stable_window(
        up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    stable, panic = 6.0, 1.0
    spec = mock_service("auto", lo=1, hi=4, ttft=0.05, tpot=0.01, seqs=4,
                        autoscaling={"target_ongoing_requests": 2, "stable_window": f"{stable}s",
                                     "panic_window": f"{panic}s", "engine_queue": False})
    assert httpx.post(f"{url}/v1/services", json=spec, headers=h(tok)).status_code == 201
    wait(lambda: ready(url, tok, "auto") == 1, 40, "the first replica")
    time.sleep(stable)  # past the initial hold

    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()

    async def client(c: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                r = await c.post(f"{url}/v1/completions", json={"model": "auto", "prompt": "p", "max_tokens": 10})
                outcomes[str(r.status_code)] += 1
            except httpx.HTTPError as e:
                outcomes[type(e).__name__] += 1

    async def step() -> tuple[float, float]:
        async with httpx.AsyncClient(headers=h(tok), timeout=60,
                                     limits=httpx.Limits(max_connections=100)) as c:
            one = asyncio.create_task(client(c))
            await asyncio.sleep(2.0)
            assert (await asyncio.to_thread(live, url, tok, "auto"))["desired"] == 1  # one client: one replica
            t0 = time.time()
            many = [asyncio.create_task(client(c)) for _ in range(49)]
            while await asyncio.to_thread(ready, url, tok, "auto") < 4:
                assert time.time() - t0 < 40
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            stop.set()
            t1 = time.time()
            await asyncio.gather(one, *many)
            t2 = time.time()  # every request answered: no load at all from here
            await asyncio.sleep(max(0.0, t1 + 1.0 - time.time()))
            assert (await asyncio.to_thread(live, url, tok, "auto"))["desired"] == 4  # the panic holds
            while (await asyncio.to_thread(live, url, tok, "auto"))["desired"] > 1:
                assert time.time() - t1 < 3 * stable
                await asyncio.sleep(0.2)
            t_out = await asyncio.to_thread(scale_event, url, tok, "auto", t0, 4)
            t_in = await asyncio.to_thread(scale_event, url, tok, "auto", t1, 1)
            assert t_out is not None and t_in is not None
            return t_out - t0, t_in - t1, t_in - t2

    t_out, t_in, t_in_drained = asyncio.run(step())
    assert set(outcomes) == {"200"}, outcomes
    # out: within the panic window (1 s) plus the manager's ticks; 0.5 s on an idle machine, up to ~3 s measured on
    # 2 cores shared by a load average of 20 (the manager thread then waits for the CPU)
    assert t_out <= panic + 3.0, t_out
    # in: a stable window after the load fell (between the clients stopping and their last answers), not before
    assert t_in >= stable * 0.9, t_in
    assert t_in_drained <= stable + 2.0, t_in_drained
    wait(lambda: len([r for r in live(url, tok, "auto")["live"]["replicas"] if r["state"] == "running"]) == 1,
         30, "the extra replicas stopped")
    httpx.delete(f"{url}/v1/services/auto", headers=h(tok))


def test_a_new_spec_rolls_out_replica_by_replica_without_failed_requests(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    spec = mock_service("roll", lo=2, hi=2, rollout={"max_surge": 1, "max_unavailable": 0})
    assert httpx.post(f"{url}/v1/services", json=spec, headers=h(tok)).status_code == 201
    wait(lambda: ready(url, tok, "roll") == 2, 40, "two ready replicas")
    stop = False
    codes: Counter[int] = Counter()
    lowest_ready = [2]

    async def traffic() -> None:
        async with httpx.AsyncClient(headers=h(tok), timeout=30) as c:
            while not stop:
                r = await c.post(f"{url}/v1/completions", json={"model": "roll", "prompt": "p", "max_tokens": 2})
                codes[r.status_code] += 1

    async def roll() -> dict[str, Any]:
        nonlocal stop
        t = asyncio.create_task(traffic())
        new = {**spec, "env": {"GENERATION": "2"}}
        r = await asyncio.to_thread(httpx.put, f"{url}/v1/services/roll", json=new, headers=h(tok), timeout=30)
        assert r.status_code == 200 and r.json()["generation"] == 2
        end = time.monotonic() + 60
        while True:
            d = (await asyncio.to_thread(live, url, tok, "roll"))["live"]
            lowest_ready[0] = min(lowest_ready[0], d["ready"])
            running = [x for x in d["replicas"] if x["state"] == "running" and not x["stopping"]]
            if len(running) == 2 and all(x["generation"] == 2 and x["ready"] for x in running):
                break
            assert time.monotonic() < end, d
            await asyncio.sleep(0.1)
        stop = True
        await t
        return d

    d = asyncio.run(roll())
    assert set(codes) == {200} and sum(codes.values()) > 0, codes
    assert lowest_ready[0] >= 2 - 0  # max_unavailable 0: never fewer ready replicas than desired
    assert "rolling out generation 2" in " ".join(e["message"] for e in d["events"])
    httpx.delete(f"{url}/v1/services/roll", headers=h(tok))


def test_replicas_up_to_min_preempt_lower_priority_batch_jobs(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    batch = {"name": "hog", "priority": 0, "resources": {"accelerators": 2}, "command": ["sleep", "600"]}
    jid = httpx.post(f"{url}/v1/jobs", json=batch, headers=h(tok)).json()["id"]
    wait(lambda: httpx.get(f"{url}/v1/jobs/{jid}", headers=h(tok)).json()["state"] == "running", 30, "the batch job")
    spec = {**mock_service("pre", lo=1, hi=2), "priority": 10, "resources": {"accelerators": 1, "cpu": 0.1}}
    assert httpx.post(f"{url}/v1/services", json=spec, headers=h(tok)).status_code == 201
    wait(lambda: ready(url, tok, "pre") == 1, 60, "the replica, after preempting the batch job")
    events = httpx.get(f"{url}/v1/jobs/{jid}/events", headers=h(tok)).json()
    assert "preempting" in [e["kind"] for e in events]
    rep = live(url, tok, "pre")["live"]["replicas"][0]
    job = httpx.get(f"{url}/v1/jobs/{rep['job_id']}", headers=h(tok)).json()
    assert job["priority"] == 10 and job["spec"]["kind"] == "serve" and job["spec"]["resources"]["accelerators"] == 1
    assert httpx.get(f"{url}/v1/jobs/{jid}", headers=h(tok)).json()["state"] in ("requeued", "pending")
    httpx.post(f"{url}/v1/jobs/{jid}/cancel", headers=h(tok))
    httpx.delete(f"{url}/v1/services/pre", headers=h(tok))


def test_scale_to_zero_and_back_on_the_first_request(up: tuple[Path, str, str]) -> None:
    _, url, tok = up
    spec = mock_service("zero", lo=0, hi=1, autoscaling={"target_ongoing_requests": 1, "stable_window": "3s",
                                                          "panic_window": "1s", "engine_queue": False})
    assert httpx.post(f"{url}/v1/services", json=spec, headers=h(tok)).status_code == 201
    time.sleep(1.0)
    assert live(url, tok, "zero")["live"]["replicas"] == []  # min 0, no load: nothing runs
    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/completions", headers=h(tok), timeout=90,
                   json={"model": "zero", "prompt": "p", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3  # held until a replica was ready
    cold = time.monotonic() - t0
    assert cold < 60
    wait(lambda: live(url, tok, "zero")["desired"] == 0, 30, "back to zero after the stable window")
    wait(lambda: not [x for x in live(url, tok, "zero")["live"]["replicas"] if x["state"] == "running"], 30,
         "the replica stopped")
    httpx.delete(f"{url}/v1/services/zero", headers=h(tok))


def test_cli_services_service_scale_and_delete(up: tuple[Path, str, str], tmp_path: Path) -> None:
    _, url, tok = up
    env = dict(os.environ, SUANLI_SERVER=url, SUANLI_TOKEN=tok,
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "suanli.cli.main", *args], capture_output=True, text=True,
                              env=env, timeout=60, cwd=tmp_path)

    p = cli("submit", str(ROOT / "examples" / "service-mock.yaml"))
    assert p.returncode == 0 and "created service mock" in p.stdout, p.stderr
    wait(lambda: ready(url, tok, "mock") == 1, 40, "the example's replica")
    p = cli("services", "--json")
    assert "mock" in [s["name"] for s in json.loads(p.stdout)]
    p = cli("service", "mock")
    assert p.returncode == 0 and "1 ready of 1 desired" in p.stdout and "running" in p.stdout
    p = cli("scale", "mock", "--min", "2", "--max", "3")
    assert p.returncode == 0 and "replicas 2-3, desired 2" in p.stdout
    wait(lambda: ready(url, tok, "mock") == 2, 40, "scaled to two")
    p = cli("scale", "mock")
    assert p.returncode == 2 and "--min" in p.stderr and "Traceback" not in p.stderr
    p = cli("service", "nope")
    assert p.returncode == 2 and "404" in p.stderr and "Traceback" not in p.stderr
    p = cli("service", "mock", "--delete")
    assert p.returncode == 0
    assert httpx.get(f"{url}/v1/services/mock", headers=h(tok)).status_code == 404
    r = httpx.post(f"{url}/v1/services/mock/v1/completions", headers=h(tok), json={"model": "mock-llm"})
    assert r.status_code == 404


def test_a_request_waiting_for_a_replica_ends_404_when_the_service_is_deleted(up: tuple[Path, str, str]) -> None:
    """Deleting a service ends the requests that wait for one of its replicas at once (404), and a request after
    the delete is 404 too; before, they waited out the gateway's 60 s for a replica that would never come."""
    _, url, tok = up
    svc = mock_service("never", lo=1, hi=1)
    svc["command"] = ["sh", "-c", "exec sleep 600"]  # runs, never answers its readiness probe
    r = httpx.post(f"{url}/v1/services", json=svc, headers=h(tok))
    assert r.status_code == 201, r.text
    wait(lambda: live(url, tok, "never")["live"] is not None, 40, "the service manager to load it")

    async def waiting_then_delete() -> tuple[httpx.Response, float, httpx.Response]:
        async with httpx.AsyncClient(headers=h(tok), timeout=30) as c:
            req = asyncio.ensure_future(c.post(f"{url}/v1/services/never/v1/completions",
                                               json={"model": "never", "prompt": "x"}))
            await asyncio.sleep(1.0)
            assert not req.done()  # waiting for a ready replica
            t0 = time.monotonic()
            d = await c.delete(f"{url}/v1/services/never")
            assert d.status_code == 200, d.text
            res = await req
            took = time.monotonic() - t0
            after = await c.post(f"{url}/v1/services/never/v1/completions", json={"model": "never"})
            return res, took, after

    res, took, after = asyncio.run(waiting_then_delete())
    assert res.status_code == 404 and "deleted" in res.json()["error"]["message"], res.text
    assert took < 5, took
    assert after.status_code == 404
