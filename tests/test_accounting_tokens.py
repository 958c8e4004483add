"""Tokens served (issue 14): the gateway reads the engines' ``usage`` from what passes through (JSON and SSE), the
counts are flushed to the store once each, and the report joins them: exact token sums per tenant, LLM, model and
job, dollars per million tokens from the service replicas' cost, null where the price is unknown."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from suanli.accounting.pricing import Accounting
from suanli.api.app import create_app
from suanli.api.routers.gateway import TokenBook, TokenTap
from suanli.control import db
from suanli.control.autoscale import Autoscaler
from suanli.control.services import Replica, ServiceManager, ServiceRuntime, _policy
from suanli.control.store import Step, Store
from suanli.control.types import AttemptOutcome as O
from suanli.control.usage import make_report
from suanli.serve.mock import MockConfig
from suanli.serve.mock import create_app as mock_app
from suanli.workload.service import ServiceSpec
from suanli.workload.states import JobState as S

FLEET = """
name: lab
accounting: {usd_per_kwh: 0.10, busy: 0.6, idle_power_frac: 0.3, amortisation_years: 4, utilisation: 0.8}
pools:
  - {name: h100, count: 1, accelerator: H100, per_node: 8, pue: 1.2, price_usd: 35040, node_hour_usd: 8.0}
  - {name: br, count: 1, accelerator: BR100, per_node: 8}
"""
H100_USD = 2.31048  # $/chip-hour, as in test_accounting_report.py


# -- the tap: usage from the chunks as they pass ---------------------------------------------------------------
def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chunked(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


@pytest.mark.parametrize("size", [1, 7, 64, 100000])
def test_tap_reads_the_last_usage_event_whatever_the_chunking(size: int) -> None:
    body = sse({"choices": [{"text": "a"}], "usage": None}, {"choices": [{"text": "\"usage\": 5"}], "usage": None},
               {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
               {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}, b"[DONE]")
    tap = TokenTap("text/event-stream; charset=utf-8")
    for c in chunked(body, size):
        tap.feed(c)
    assert tap.result() == (3, 9)  # vLLM's continuous usage: cumulative, the last one counts


def test_tap_counts_nothing_without_usage_and_never_guesses() -> None:
    for body in (sse({"choices": [{"text": "a b c"}]}, b"[DONE]"),
                 sse({"choices": [], "usage": {"prompt_tokens": -1, "completion_tokens": 2}}),
                 sse({"choices": [], "usage": {"prompt_tokens": "3", "completion_tokens": 2}}),
                 sse({"choices": [], "usage": {"prompt_tokens": True, "completion_tokens": 2}}), b"data: {\"usage"):
        tap = TokenTap("text/event-stream")
        tap.feed(body)
        assert tap.result() is None, body
    tap = TokenTap("application/json")
    tap.feed(b'{"choices": [], "usage": null}')
    assert tap.result() is None
    tap = TokenTap("application/json")
    tap.feed(b"not json")
    assert tap.result() is None


def test_tap_json_whole_or_from_a_large_answers_tail() -> None:
    small = json.dumps({"object": "text_completion", "usage": {"prompt_tokens": 4, "completion_tokens": 6}}).encode()
    tap = TokenTap("application/json")
    for c in chunked(small, 5):
        tap.feed(c)
    assert tap.result() == (4, 6)
    # embeddings: no completion tokens; a body over JSON_KEEP is read from its tail
    big = json.dumps({"data": [{"embedding": [0.1] * 300000, "note": "\"usage\": 1"}],
                      "usage": {"prompt_tokens": 11, "total_tokens": 11}}).encode()
    assert len(big) > 1 << 20
    tap = TokenTap("application/json")
    for c in chunked(big, 65536):
        tap.feed(c)
    assert tap.result() == (11, 0)
    assert len(tap.parts) <= 2  # only the tail is kept


# -- the book: flushed once each ------------------------------------------------------------------------------
class FlakyStore:
    """A store whose first write commits and then reports an error (the ambiguous case)."""

    def __init__(self, store: Store) -> None:
        self.store, self.calls = store, 0

    def add_service_tokens(self, fid: str, at: float, rows: list[dict[str, Any]]) -> bool:
        self.calls += 1
        done = self.store.add_service_tokens(fid, at, rows)
        if self.calls == 1:
            raise ConnectionError("lost the answer to COMMIT")
        return done


def runtime(spec: ServiceSpec, sid: int = 1) -> ServiceRuntime:
    return ServiceRuntime(id=sid, name=spec.name, tenant=spec.tenant, model=spec.served_model, spec=spec,
                          generation=1, min=1, max=1, desired=1, loaded_at=0.0,
                          autoscaler=Autoscaler(_policy(spec, 1, 1)))


def test_a_retried_flush_is_counted_once(tmp_path: Path) -> None:
    store = Store.open(db.sqlite_url(tmp_path / "s.db"))
    flaky = FlakyStore(store)
    book = TokenBook(flaky, flush_s=3600)
    spec = ServiceSpec.model_validate({"name": "svc", "command": ["x"], "llm": "qwen2.5-7b"})
    rt, rep = runtime(spec), Replica(7, 0, 1, 1, node="h100-0000", accelerator="H100")

    async def go() -> None:
        book.add(rt, rep, 10, 20)
        book.add(rt, rep, 1, 2)
        await book.flush()  # committed, but reported as failed: kept pending with its id
        assert len(book.pending) == 1
        book.add(rt, rep, 100, 200)
        await book.aclose()  # the retry finds its id written; the new counts go in their own flush

    asyncio.run(go())
    assert not book.pending and flaky.calls == 3
    sums = store.token_sums(0, time.time() + 1, ("job",))
    assert sums == {(7,): {"prompt_tokens": 111, "completion_tokens": 222, "requests": 3}}
    store.close()


# -- end to end: mock engine, gateway, store, report -----------------------------------------------------------
@pytest.fixture
def engine() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(mock_app(MockConfig(model="qwen-chat", ttft_s=0.0, tpot_s=0.0)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end, "mock engine did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    t.join(10)


def serve_replica(store: Store, spec: ServiceSpec, node: str, model: str, start: float) -> tuple[int, int, int]:
    """The service's row and one replica job with a running attempt on two chips of ``node``: (service, job,
    attempt)."""
    svc = store.create_service(spec, 1)
    jid = store.add_replica(svc["id"], spec.replica_job(0, 1, above_min=False), 0, 1, 1)
    aid, _ = store.begin_attempt(jid, start, {"nodes": [node], "local": [[0, 1]], "milli": 1000, "model": model}, "t")
    return int(svc["id"]), jid, aid


def test_tokens_through_the_gateway_reach_the_report_exactly(engine: int, tmp_path: Path) -> None:
    store = Store.open(db.sqlite_url(tmp_path / "g.db"))
    store.ensure_defaults()
    store.create_tenant("nlp")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    acct = Accounting.from_file(fleet)
    t_start = time.time() - 3600
    priced = ServiceSpec.model_validate({"name": "chat", "tenant": "nlp", "model": "qwen-chat",
                                         "llm": "qwen2.5-7b", "command": ["x"]})
    unpriced = ServiceSpec.model_validate({"name": "chat-br", "tenant": "nlp", "model": "qwen-chat-br",
                                           "llm": "qwen2.5-7b", "command": ["x"]})
    sid, jid, aid = serve_replica(store, priced, "h100-0000", "H100", t_start)
    sid2, jid2, aid2 = serve_replica(store, unpriced, "br-0000", "BR100", t_start)
    mgr = ServiceManager(store)
    for spec, s_id, j_id, node, model in ((priced, sid, jid, "h100-0000", "H100"),
                                          (unpriced, sid2, jid2, "br-0000", "BR100")):
        rt = mgr.services[spec.name] = runtime(spec, s_id)
        rt.replicas[j_id] = Replica(j_id, 0, engine, 1, state="running", ready=True, node=node, accelerator=model)
    app = create_app(store, services=mgr)
    app.state.token_flush_s = 0.2
    app.state.metrics.accounting = acct
    tok = store.create_token(admin=False, tenant="nlp")
    hdr = {"Authorization": f"Bearer {tok}"}
    want = {"chat": [0, 0, 0], "chat-br": [0, 0, 0]}  # requests, prompt, completion

    def note(svc: str, p: int, c: int) -> None:
        want[svc][0] += 1
        want[svc][1] += p
        want[svc][2] += c

    with TestClient(app) as c:
        # JSON, by service path and by model; the engine's usage is what is counted
        r = c.post("/v1/services/chat/v1/completions", headers=hdr,
                   json={"model": "qwen-chat", "prompt": "one two three", "max_tokens": 5})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3
        note("chat", 3, 5)
        r = c.post("/v1/chat/completions", headers=hdr,
                   json={"model": "qwen-chat", "messages": [{"role": "user", "content": "a b c d"}], "max_tokens": 7})
        assert r.status_code == 200
        note("chat", 4, 7)
        # SSE with include_usage: the final chunk's usage; the stream reaches the client as it was sent
        with c.stream("POST", "/v1/completions", headers=hdr,
                      json={"model": "qwen-chat", "prompt": "x y", "max_tokens": 4, "stream": True,
                            "stream_options": {"include_usage": True}}) as s:
            events = [ln for ln in s.iter_lines() if ln.startswith("data:")]
        assert len(events) == 6 and json.loads(events[-2][5:])["usage"]["completion_tokens"] == 4
        note("chat", 2, 4)
        # SSE without usage: nothing counted (not guessed from the chunks)
        with c.stream("POST", "/v1/completions", headers=hdr,
                      json={"model": "qwen-chat", "prompt": "x y z", "max_tokens": 3, "stream": True}) as s:
            assert len([ln for ln in s.iter_lines() if ln.startswith("data:")]) == 4
        # an error answer counts nothing
        r = c.post("/v1/completions", headers=hdr, json={"model": "qwen-chat", "prompt": "x", "max_tokens": 0})
        assert r.status_code == 400
        # the unpriced (BR100) service, streamed chat
        with c.stream("POST", "/v1/services/chat-br/v1/chat/completions", headers=hdr,
                      json={"model": "qwen-chat", "messages": [{"role": "user", "content": "p q r s t"}],
                            "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}) as s:
            assert sum(1 for ln in s.iter_lines() if ln.startswith("data:")) == 8
        note("chat-br", 5, 6)
        deadline = time.monotonic() + 20
        while store.token_sums(0, time.time() + 1, ()) != {
                (): {"prompt_tokens": 14, "completion_tokens": 22, "requests": 4}}:
            assert time.monotonic() < deadline, store.token_sums(0, time.time() + 1, ())
            time.sleep(0.1)
        text = c.get("/metrics", headers=hdr).text
    assert 'suanli_tokens_total{model="qwen-chat",tenant="nlp",type="completion"} 16.0' in text
    assert 'suanli_tokens_total{model="qwen-chat-br",tenant="nlp",type="prompt"} 5.0' in text
    # the replicas end (scaled in): their replica-hours enter the records, the tokens meet them in the report
    assert store.usage_records(jid) == [] and store.usage_records(jid2) == []  # running: no record yet
    t_end = time.time()
    for j, a in ((jid, aid), (jid2, aid2)):
        store.finish_attempt(j, a, t_end, O.STOPPED, 0, None, [Step(S.RUNNING, S.CANCELLED, "scaled in")])
    assert store.usage_records(jid)[0]["llm"] == "qwen2.5-7b" and store.usage_records(jid)[0]["kind"] == "serve"
    since, until = t_start - 60, time.time() + 60
    hours = 2 * (t_end - t_start) / 3600.0  # chip-hours of each replica (two chips)
    for by_ in (("tenant",), ("llm",), ("kind",), ("job",), ("model",), ()):
        rep = make_report(store, since=since, until=until, by=by_, acct=acct)
        rows = rep["rows"]
        if by_ in (("tenant",), ("llm",), ("kind",), ()):
            (row,) = rows
            assert (row["prompt_tokens"], row["completion_tokens"], row["tokens"]) == (14, 22, 36), row
            assert row["usd"] is None and row["usd_per_million_tokens"] is None  # BR100: price unknown
            assert rep["total"]["tokens"] == 36
        else:
            k = by_[0]
            got = {r[k]: r for r in rows}
            h100 = got[jid if k == "job" else "H100"]
            br = got[jid2 if k == "job" else "BR100"]
            assert (h100["prompt_tokens"], h100["completion_tokens"]) == (9, 16)
            assert (br["prompt_tokens"], br["completion_tokens"]) == (5, 6)
            assert h100["chip_hours"] == pytest.approx(hours)
            assert h100["usd"] == pytest.approx(hours * H100_USD)
            assert h100["usd_per_million_tokens"] == pytest.approx(hours * H100_USD / 25 * 1e6)
            assert br["usd"] is None and br["usd_per_million_tokens"] is None
    job_row = {r["job"]: r for r in make_report(store, since=since, until=until, by=("job",), acct=acct)["rows"]}
    assert job_row[jid]["job_name"] == "chat-r0"
    # the window is by flush time: a window before the requests has no tokens
    assert make_report(store, since=since, until=t_start, by=("tenant",), acct=acct)["total"]["tokens"] is None
    store.close()


def test_report_route_has_the_token_columns(engine: int, tmp_path: Path) -> None:
    store = Store.open(db.sqlite_url(tmp_path / "r.db"))
    store.ensure_defaults()
    now = time.time()
    store.add_service_tokens("f1", now, [{"service": "s", "tenant": "default", "queue": "default",
                                          "served_model": "m", "llm": "qwen2.5-7b", "job_id": 3, "node": "n",
                                          "model": "H100", "requests": 2, "prompt_tokens": 10,
                                          "completion_tokens": 30}])
    assert not store.add_service_tokens("f1", now, [{"service": "s", "tenant": "default", "queue": "default",
                                                     "served_model": "m", "llm": "", "job_id": 3, "node": "n",
                                                     "model": "H100", "requests": 1, "prompt_tokens": 1,
                                                     "completion_tokens": 1}])
    admin = store.create_token(admin=True, tenant=None)
    with TestClient(create_app(store)) as c:
        r = c.get("/v1/report", params={"since": "1h", "by": "llm"}, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    (row,) = r.json()["rows"]
    assert row["llm"] == "qwen2.5-7b" and row["tokens"] == 40 and row["chip_hours"] == 0
    store.close()
    with httpx.Client() as h:  # the mock engine of the fixture answers usage in JSON (as vLLM does)
        j = h.post(f"http://127.0.0.1:{engine}/v1/completions", json={"model": "qwen-chat", "prompt": "a b"}).json()
    assert j["usage"] == {"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18}
