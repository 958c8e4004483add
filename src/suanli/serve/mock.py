"""A small OpenAI-compatible mock LLM engine: real HTTP, real queueing, no model.

Like Ray Serve's ``MockVLLMEngine`` or llm-d's inference simulator, it answers ``/v1/models``,
``/v1/completions`` and ``/v1/chat/completions`` (SSE streaming with ``"stream": true``), ``/health`` and
``/metrics`` (vLLM's metric names: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:gpu_cache_usage_perc``). A request waits for one of ``max_num_seqs`` slots (so requests queue for real
and the waiting gauge moves), then sleeps ``ttft`` for the prompt and ``tpot`` per further output token.
The timings are given, or come from the planner's TTFT/TPOT for a model on an accelerator
(:func:`timings_from_planner`).

Run it with ``suanli mock-engine --port 8000`` or ``python -m suanli.serve.mock --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_MODEL = "mock-llm"


@dataclass
class MockConfig:
    model: str = DEFAULT_MODEL
    ttft_s: float = 0.05  # prompt processing + first token (a request alone)
    tpot_s: float = 0.01  # time per further output token
    prefill_s_per_token: float = 0.0  # added to ttft per prompt token (0: ttft does not depend on the prompt)
    max_num_seqs: int = 8  # requests decoded at once; the rest wait (vLLM's max_num_seqs)
    max_tokens: int = 16  # default output length when the request names none
    max_model_len: int = 32768

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tpot_s < 0 or self.prefill_s_per_token < 0:
            raise ValueError("ttft, tpot and prefill time must be >= 0")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


def timings_from_planner(model: str, accelerator: str, *, input_tokens: float = 2000, output_tokens: float = 500,
                         chips: int | None = None) -> tuple[float, float, int]:
    """(TTFT s, TPOT s, batch) the planner predicts for one replica of ``model`` on ``accelerator``."""
    from suanli.errors import SuanliError
    from suanli.perf.api import plan_serve

    row = plan_serve(model, [accelerator], input_tokens=input_tokens, output_tokens=output_tokens,
                     chips=chips)[0]
    if row.reason or row.ttft_s is None or row.tpot_s is None or row.batch is None:
        raise SuanliError(f"the planner has no serving estimate for {model} on {accelerator}: {row.reason}")
    return row.ttft_s, row.tpot_s, row.batch


def _count_tokens(text: str) -> int:
    """Whitespace words: the mock's tokenizer (real engines count more tokens per word; close enough for load)."""
    return len(text.split())


class Engine:
    """The queue and the counters; one per server process."""

    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.slots = asyncio.Semaphore(cfg.max_num_seqs)
        self.running = 0
        self.waiting = 0
        self.started = 0
        self.finished = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.created = int(time.time())

    def metrics_text(self) -> str:
        m = self.cfg.model
        lab = f'{{model_name="{m}"}}'
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{lab} {self.running}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{lab} {self.waiting}",
            "# HELP vllm:gpu_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:gpu_cache_usage_perc gauge",
            f"vllm:gpu_cache_usage_perc{lab} {self.running / self.cfg.max_num_seqs:.4f}",
            "# TYPE vllm:request_success_total counter", f"vllm:request_success_total{lab} {self.finished}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{lab} {self.prompt_tokens}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{lab} {self.generation_tokens}",
        ]
        return "\n".join(lines) + "\n"

    async def generate(self, prompt_tokens: int, max_tokens: int) -> AsyncIterator[int]:
        """Yields the index of each output token when it is due (waits for a slot first)."""
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.started += 1
        self.prompt_tokens += prompt_tokens
        try:
            await asyncio.sleep(self.cfg.ttft_s + self.cfg.prefill_s_per_token * prompt_tokens)
            t0 = time.monotonic()
            for i in range(max_tokens):
                if i:
                    # sleep to the token's due time, so timer slack does not add up over long outputs
                    await asyncio.sleep(max(0.0, t0 + i * self.cfg.tpot_s - time.monotonic()))
                self.generation_tokens += 1
                yield i
            self.finished += 1
        finally:
            self.running -= 1
            self.slots.release()


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": None}}, status_code=status)


def _int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"'{name}' must be a whole number from {lo} to {hi}")
    return v


def create_app(cfg: MockConfig | None = None) -> Starlette:
    cfg = cfg or MockConfig()
    eng = Engine(cfg)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": cfg.model, "object": "model", "created": eng.created, "owned_by": "suanli-mock",
             "max_model_len": cfg.max_model_len}]})

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(eng.metrics_text(), media_type="text/plain; version=0.0.4")

    async def complete(request: Request, chat: bool) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        model = body.get("model", cfg.model)
        if model != cfg.model:
            return _error(404, f"The model `{model}` does not exist.", "model")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return _error(400, "'messages' must be a non-empty list", "messages")
            text = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
        else:
            p = body.get("prompt", "")
            text = " ".join(map(str, p)) if isinstance(p, list) else str(p)
        try:
            max_tokens = _int_field(body, "max_completion_tokens" if "max_completion_tokens" in body
                                    else "max_tokens", cfg.max_tokens, 1, cfg.max_model_len)
        except ValueError as e:
            return _error(400, str(e), "max_tokens")
        ntok = max(1, _count_tokens(text))
        stream = bool(body.get("stream", False))
        opts = body.get("stream_options")
        usage_in_stream = isinstance(opts, dict) and bool(opts.get("include_usage"))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        obj = "chat.completion" if chat else "text_completion"
        created = int(time.time())
        usage = {"prompt_tokens": ntok, "completion_tokens": max_tokens, "total_tokens": ntok + max_tokens}

        def piece(i: int) -> str:
            return f"tok{i} " if i + 1 < max_tokens else f"tok{i}"

        if not stream:
            out = [piece(i) async for i in eng.generate(ntok, max_tokens)]
            text_out = "".join(out)
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text_out},
                                       "finish_reason": "length"} if chat else
                                      {"index": 0, "text": text_out, "logprobs": None, "finish_reason": "length"})
            return JSONResponse({"id": rid, "object": obj, "created": created, "model": cfg.model,
                                 "choices": [choice], "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            chunk_obj = "chat.completion.chunk" if chat else "text_completion"
            async for i in eng.generate(ntok, max_tokens):
                last = i + 1 == max_tokens
                if chat:
                    delta: dict[str, Any] = {"content": piece(i)}
                    if i == 0:
                        delta["role"] = "assistant"
                    ch: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": "length" if last else None}
                else:
                    ch = {"index": 0, "text": piece(i), "logprobs": None, "finish_reason": "length" if last else None}
                ev = {"id": rid, "object": chunk_obj, "created": created, "model": cfg.model, "choices": [ch]}
                yield b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"
            if usage_in_stream:
                ev = {"id": rid, "object": chunk_obj, "created": created, "model": cfg.model, "choices": [],
                      "usage": usage}
                yield b"data: " + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    app = Starlette(routes=[
        Route("/v1/models", models),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ])
    app.state.engine = eng
    return app


def serve(cfg: MockConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the mock engine until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m suanli.serve.mock", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ttft", type=float, default=None, help="seconds to the first token (default 0.05)")
    ap.add_argument("--tpot", type=float, default=None, help="seconds per further output token (default 0.01)")
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--profile", default=None, help="MODEL@ACCELERATOR: TTFT/TPOT from the planner")
    a = ap.parse_args(argv)
    cfg = config_from(model=a.model, ttft=a.ttft, tpot=a.tpot, max_num_seqs=a.max_num_seqs, max_tokens=a.max_tokens,
                      profile=a.profile)
    serve(cfg, a.host, a.port)


def config_from(*, model: str, ttft: float | None, tpot: float | None, max_num_seqs: int, max_tokens: int,
                profile: str | None) -> MockConfig:
    """A MockConfig from command-line values (``profile`` = ``MODEL@ACCELERATOR`` takes the planner's timings)."""
    from suanli.errors import SuanliError

    if profile:
        llm, sep, acc = profile.partition("@")
        if not sep or not llm or not acc:
            raise SuanliError(f"--profile must be MODEL@ACCELERATOR, e.g. qwen2.5-7b@H100, got {profile!r}")
        p_ttft, p_tpot, _ = timings_from_planner(llm, acc)
        ttft = p_ttft if ttft is None else ttft
        tpot = p_tpot if tpot is None else tpot
    try:
        return MockConfig(model=model, ttft_s=0.05 if ttft is None else ttft, tpot_s=0.01 if tpot is None else tpot,
                          max_num_seqs=max_num_seqs, max_tokens=max_tokens)
    except ValueError as e:
        raise SuanliError(str(e)) from None


if __name__ == "__main__":
    main()
