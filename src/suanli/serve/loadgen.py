"""An MLPerf-style load generator for any OpenAI-compatible endpoint (``suanli bench serve``).

Two scenarios, as MLPerf Inference names them: ``server`` sends requests with Poisson arrivals at ``qps`` for
``duration`` seconds; ``offline`` sends all requests at once. Every request streams (SSE), so the time to first
token (TTFT) and the time per output token after it (TPOT = (last - first) / (tokens - 1)) are measured per
request; the summary has their p50/p90/p99, output tokens/s over the run, request errors and the mean number of
requests in flight (Little's law), which ``suanli plan calibrate`` uses as the batch the engine ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from suanli.errors import SuanliError

SCENARIOS = ("offline", "server")


@dataclass(frozen=True)
class Prompt:
    text: str | None = None  # completions API prompt
    messages: list[dict[str, Any]] | None = None  # chat API messages
    max_tokens: int | None = None
    input_tokens: int = 0  # whitespace words of the prompt (a rough token count)


@dataclass
class BenchConfig:
    endpoint: str
    model: str
    scenario: str = "server"
    qps: float | None = None
    input_tokens: int = 128
    output_tokens: int = 64
    duration_s: float = 30.0
    requests: int | None = None  # offline: how many are sent at once (default 64); server: cap on arrivals
    api: str = "completions"  # completions | chat
    token: str | None = None
    timeout_s: float = 300.0
    seed: int = 0
    prompts: list[Prompt] = field(default_factory=list)  # from a dataset file; empty: synthetic prompts

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise SuanliError(f"--scenario must be offline or server, got {self.scenario!r}")
        if self.scenario == "server" and (self.qps is None or not self.qps > 0):
            raise SuanliError("--qps must be a positive number for the server scenario")
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise SuanliError("--input-tokens and --output-tokens must be >= 1")
        if not self.duration_s > 0:
            raise SuanliError("--duration must be positive")
        if self.requests is not None and self.requests < 1:
            raise SuanliError("--requests must be >= 1")
        if self.api not in ("completions", "chat"):
            raise SuanliError(f"--api must be completions or chat, got {self.api!r}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise SuanliError(f"--endpoint must be an http(s) URL, got {self.endpoint!r}")


@dataclass
class RequestResult:
    start: float
    end: float
    ok: bool
    error: str | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    output_tokens: int = 0
    input_tokens: int = 0


def api_base(endpoint: str) -> str:
    """The ``.../v1`` base of an endpoint: ``http://h:8000`` and ``http://h:8000/v1`` both give ``http://h:8000/v1``;
    a gateway path such as ``http://127.0.0.1:8470/v1/services/mock`` gives ``.../v1/services/mock/v1``."""
    e = endpoint.rstrip("/")
    return e if e.endswith("/v1") else e + "/v1"


def load_dataset(path: Path) -> list[Prompt]:
    """Prompts from a JSON list or JSON-lines file. Each item: ``{"prompt": ...}``, ``{"messages": [...]}`` or a
    ShareGPT record (``{"conversations": [{"from": "human", "value": ...}, ...]}``), optionally with
    ``max_tokens`` / ``output_tokens``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SuanliError(f"--dataset {path}: {e.strerror or e}") from None
    try:
        stripped = text.lstrip()
        items = json.loads(text) if stripped.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise SuanliError(f"--dataset {path}: not JSON or JSON lines ({e})") from None
    out: list[Prompt] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise SuanliError(f"--dataset {path}: item {i} is not an object")
        mt = it.get("max_tokens", it.get("output_tokens"))
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise SuanliError(f"--dataset {path}: item {i}: max_tokens must be a whole number >= 1")
        if isinstance(it.get("prompt"), str):
            out.append(Prompt(text=it["prompt"], max_tokens=mt, input_tokens=len(it["prompt"].split())))
        elif isinstance(it.get("messages"), list):
            words = sum(len(str(m.get("content", "")).split()) for m in it["messages"] if isinstance(m, dict))
            out.append(Prompt(messages=it["messages"], max_tokens=mt, input_tokens=words))
        elif isinstance(it.get("conversations"), list):
            human = [c.get("value", "") for c in it["conversations"] if isinstance(c, dict)
                     and c.get("from") in ("human", "user")]
            if human:
                out.append(Prompt(text=str(human[0]), max_tokens=mt, input_tokens=len(str(human[0]).split())))
        else:
            raise SuanliError(f"--dataset {path}: item {i} has no 'prompt', 'messages' or 'conversations'")
    if not out:
        raise SuanliError(f"--dataset {path}: no prompts in it")
    return out


def synthetic_prompt(n_tokens: int, i: int) -> Prompt:
    """A prompt of ``n_tokens`` short words (distinct per request so no prefix cache serves it whole)."""
    words = [f"w{(i * 7919 + k) % 1000}" for k in range(n_tokens)]
    return Prompt(text=" ".join(words), input_tokens=n_tokens)


def _body(cfg: BenchConfig, p: Prompt) -> dict[str, Any]:
    max_tokens = p.max_tokens or cfg.output_tokens
    body: dict[str, Any] = {"model": cfg.model, "max_tokens": max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}, "temperature": 0.0,
                            "ignore_eos": True}  # vLLM/SGLang: generate exactly max_tokens
    if cfg.api == "chat":
        body["messages"] = p.messages or [{"role": "user", "content": p.text or ""}]
    else:
        body["prompt"] = p.text if p.text is not None else " ".join(
            str(m.get("content", "")) for m in (p.messages or []))
    return body


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str],
                      input_tokens: int) -> RequestResult:
    """Send one streaming request; time its first and last token."""
    t0 = time.perf_counter()
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                detail = (await r.aread())[:200].decode(errors="replace")
                return RequestResult(t0, time.perf_counter(), False, f"HTTP {r.status_code}: {detail}",
                                     input_tokens=input_tokens)
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    ev = json.loads(data)
                except ValueError:
                    continue
                if isinstance(ev.get("usage"), dict) and ev["usage"].get("completion_tokens") is not None:
                    usage_tokens = int(ev["usage"]["completion_tokens"])
                if "error" in ev:
                    return RequestResult(t0, time.perf_counter(), False, f"stream error: {str(ev['error'])[:200]}",
                                         input_tokens=input_tokens)
                for ch in ev.get("choices") or ():
                    piece = ch.get("text")
                    if piece is None:
                        piece = (ch.get("delta") or {}).get("content")
                    if piece:
                        now = time.perf_counter()
                        first = now if first is None else first
                        last = now
                        chunks += 1
    except httpx.HTTPError as e:
        return RequestResult(t0, time.perf_counter(), False, f"{type(e).__name__}: {e}"[:200],
                             input_tokens=input_tokens)
    end = time.perf_counter()
    if first is None or last is None:
        return RequestResult(t0, end, False, "no tokens in the response", input_tokens=input_tokens)
    n = usage_tokens if usage_tokens is not None else chunks
    tpot = (last - first) / (n - 1) if n > 1 else None
    return RequestResult(t0, end, True, ttft_s=first - t0, tpot_s=tpot, output_tokens=n, input_tokens=input_tokens)


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``None`` for no values."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarise(cfg: BenchConfig, results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    lat = [r.end - r.start for r in ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = (r.error or "error")[:120]
            errors[key] = errors.get(key, 0) + 1
    summary: dict[str, Any] = {
        "endpoint": cfg.endpoint, "model": cfg.model, "scenario": cfg.scenario, "api": cfg.api, "qps": cfg.qps,
        "input_tokens": cfg.input_tokens, "output_tokens": cfg.output_tokens,
        "mean_input_tokens": in_tokens / len(ok) if ok else None,
        "mean_output_tokens": out_tokens / len(ok) if ok else None,
        "duration_s": wall_s, "requests": len(results), "completed": len(ok), "errors": len(results) - len(ok),
        "error_kinds": errors,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens_per_s": out_tokens / wall_s if wall_s > 0 else None,
        "input_tokens_per_s": in_tokens / wall_s if wall_s > 0 else None,
        # Little's law: the mean number of requests in flight over the run (the batch an engine ran)
        "mean_concurrency": sum(lat) / wall_s if wall_s > 0 else None,
    }
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("latency", lat)):
        for q in (50, 90, 99):
            summary[f"{name}_p{q}_s"] = percentile(xs, q)
    return summary


async def run(cfg: BenchConfig, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; ``progress(done, expected)`` is called as requests finish."""
    rng = random.Random(cfg.seed)
    url = api_base(cfg.endpoint) + ("/chat/completions" if cfg.api == "chat" else "/completions")
    headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}

    def prompt(i: int) -> Prompt:
        return cfg.prompts[i % len(cfg.prompts)] if cfg.prompts else synthetic_prompt(cfg.input_tokens, i)

    if cfg.scenario == "offline":
        expected = cfg.requests or 64
    else:
        assert cfg.qps is not None
        expected = min(cfg.requests or 1 << 62, max(1, round(cfg.qps * cfg.duration_s)))
    done = 0
    results: list[RequestResult] = []

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(cfg.timeout_s, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def go(i: int) -> None:
            nonlocal done
            p = prompt(i)
            results.append(await one_request(client, url, _body(cfg, p), headers, p.input_tokens))
            done += 1
            if progress:
                progress(done, expected)

        t_start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        if cfg.scenario == "offline":
            tasks = [asyncio.create_task(go(i)) for i in range(expected)]
        else:
            assert cfg.qps is not None
            t_next = t_start
            i = 0
            while i < (cfg.requests or 1 << 62):
                t_next += rng.expovariate(cfg.qps)
                if t_next - t_start >= cfg.duration_s:
                    break
                await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
                tasks.append(asyncio.create_task(go(i)))
                i += 1
            expected = len(tasks)
        if tasks:
            await asyncio.wait(tasks)
        wall = time.perf_counter() - t_start
    return summarise(cfg, results, wall)
