"""The mock OpenAI-compatible engine and the endpoint benchmark, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from servehelp import serving
from suanli.errors import SuanliError
from suanli.serve.loadgen import BenchConfig, api_base, load_dataset, percentile, run
from suanli.serve.mock import MockConfig, create_app, timings_from_planner


def test_models_health_and_plain_completion() -> None:
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.0))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["m1"]
        r = httpx.post(f"{url}/v1/completions", json={"model": "m1", "prompt": "a b c d", "max_tokens": 5})
        body = r.json()
        assert r.status_code == 200
        assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
        assert len(body["choices"][0]["text"].split()) == 5
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "m1", "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "hi"}]})
        assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_bad_requests_are_openai_style_4xx() -> None:
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.0))) as url:
        r = httpx.post(f"{url}/v1/completions", json={"model": "other", "prompt": "x"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        r = httpx.post(f"{url}/v1/completions", json={"model": "m1", "prompt": "x", "max_tokens": -3})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "m1", "messages": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = httpx.post(f"{url}/v1/completions", content=b"{nope")
        assert r.status_code == 400


def test_streaming_follows_ttft_and_tpot() -> None:
    cfg = MockConfig(model="m1", ttft_s=0.1, tpot_s=0.02, max_num_seqs=4)
    with serving(create_app(cfg)) as url:
        res = asyncio.run(run(BenchConfig(endpoint=url, model="m1", scenario="offline", requests=2,
                                          output_tokens=20, input_tokens=8)))
    assert res["errors"] == 0 and res["completed"] == 2
    assert res["mean_output_tokens"] == 20
    assert 0.1 <= res["ttft_p50_s"] < 0.3
    assert 0.018 <= res["tpot_p50_s"] < 0.03


def test_requests_beyond_max_num_seqs_wait_and_the_queue_is_exported() -> None:
    cfg = MockConfig(model="m1", ttft_s=0.6, tpot_s=0.0, max_num_seqs=2)
    with serving(create_app(cfg)) as url:

        async def go() -> tuple[dict, list[str]]:
            task = asyncio.create_task(run(BenchConfig(endpoint=url, model="m1", scenario="offline", requests=6,
                                                       output_tokens=1, input_tokens=4)))
            seen: list[str] = []
            async with httpx.AsyncClient() as c:
                for _ in range(50):  # until all six arrived (within the first wave)
                    await asyncio.sleep(0.01)
                    text = (await c.get(f"{url}/metrics")).text
                    seen = [ln for ln in text.splitlines() if ln.startswith("vllm:num_requests_")]
                    if 'vllm:num_requests_waiting{model_name="m1"} 4' in seen:
                        break
            return await task, seen

        res, seen = asyncio.run(go())
    assert seen == ['vllm:num_requests_running{model_name="m1"} 2', 'vllm:num_requests_waiting{model_name="m1"} 4']
    # three waves of two: the last requests see ~1.8 s to their first token
    assert res["ttft_p99_s"] >= 1.75
    assert res["ttft_p50_s"] < res["ttft_p99_s"]


def test_server_scenario_poisson_arrivals_and_chat_api() -> None:
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.001, max_num_seqs=64))) as url:
        res = asyncio.run(run(BenchConfig(endpoint=url + "/v1", model="m1", scenario="server", qps=40,
                                          duration_s=1.5, output_tokens=4, api="chat")))
    # Poisson with mean 60 arrivals in 1.5 s: far outside 30..90 would mean the arrivals are wrong
    assert 30 <= res["requests"] <= 90
    assert res["errors"] == 0
    assert res["output_tokens_per_s"] == pytest.approx(res["requests_per_s"] * 4)
    for key in ("requests", "errors", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s"):
        assert key in res


def test_errors_are_counted_not_raised() -> None:
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.0))) as url:
        res = asyncio.run(run(BenchConfig(endpoint=url, model="wrong", scenario="offline", requests=3)))
    assert res["errors"] == 3 and res["completed"] == 0
    assert any("HTTP 404" in k for k in res["error_kinds"])


def test_dataset_formats(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a b c", "max_tokens": 3}\n{"messages": [{"role": "user", "content": "x y"}]}\n'
                 '{"conversations": [{"from": "human", "value": "q r s t"}, {"from": "gpt", "value": "ans"}]}\n')
    ds = load_dataset(p)
    assert [d.input_tokens for d in ds] == [3, 2, 4]
    assert ds[0].max_tokens == 3
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": 1}]')
    with pytest.raises(SuanliError, match="item 0"):
        load_dataset(bad)
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.0))) as url:
        res = asyncio.run(run(BenchConfig(endpoint=url, model="m1", scenario="offline", requests=3, prompts=ds,
                                          output_tokens=2)))
    assert res["errors"] == 0
    assert res["mean_output_tokens"] == pytest.approx((3 + 2 + 2) / 3)


def test_config_validation_and_helpers() -> None:
    with pytest.raises(SuanliError, match="--qps"):
        BenchConfig(endpoint="http://x", model="m", scenario="server")
    with pytest.raises(SuanliError, match="--scenario"):
        BenchConfig(endpoint="http://x", model="m", scenario="single", qps=1)
    with pytest.raises(SuanliError, match="--endpoint"):
        BenchConfig(endpoint="x:80", model="m", scenario="offline")
    assert api_base("http://h:1/") == "http://h:1/v1"
    assert api_base("http://h:1/v1/services/mock") == "http://h:1/v1/services/mock/v1"
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 99) is None


def test_planner_timings() -> None:
    ttft, tpot, batch = timings_from_planner("qwen2.5-7b", "H100")
    assert 0 < ttft < 5 and 0 < tpot < 1 and batch >= 1
    with pytest.raises(SuanliError):
        timings_from_planner("qwen2.5-7b", "no-such-chip")


def test_cli_bench_serve_json_and_bad_input(tmp_path: Path) -> None:
    with serving(create_app(MockConfig(model="m1", ttft_s=0.0, tpot_s=0.001))) as url:
        out = tmp_path / "r.json"
        p = subprocess.run([sys.executable, "-m", "suanli.cli.main", "bench", "serve", "--endpoint", url, "--model",
                            "m1", "--scenario", "offline", "--requests", "5", "--output-tokens", "3", "--json",
                            "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["requests"] == 5 and res["errors"] == 0
    assert json.loads(out.read_text())["completed"] == 5
    p = subprocess.run([sys.executable, "-m", "suanli.cli.main", "bench", "serve", "--endpoint", "http://x",
                        "--model", "m", "--scenario", "server"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--qps" in p.stderr and "Traceback" not in p.stderr
