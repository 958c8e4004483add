"""What counting tokens costs the gateway per answer: ``TokenTap`` over the bytes of a real mock-engine answer (a
JSON completion, an SSE stream of N tokens with its usage chunk, one chunk per event as uvicorn writes them, and
the same stream arriving in one chunk), plus the
per-replica sum (``TokenBook.add``), CPU time per answer. The end-to-end figure (the ``suanli up`` process's CPU per
proxied request, before and after) is ``bench/serve_gateway.py --parts overhead``.

    .venv/bin/python bench/gateway_tokens.py [--tokens 32] [--answers 20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import httpx

from suanli.api.routers.gateway import TokenBook, TokenTap
from suanli.control.autoscale import Autoscaler
from suanli.control.services import Replica, ServiceRuntime, _policy
from suanli.serve.mock import MockConfig, create_app
from suanli.workload.service import ServiceSpec


async def answer(body: dict[str, Any]) -> tuple[str, list[bytes]]:
    """(content type, the chunks as the mock engine streams them) of one answer."""
    app = create_app(MockConfig(model="m", ttft_s=0.0, tpot_s=0.0))
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock") as c,
                c.stream("POST", "/v1/completions", json=body) as r):
        data = b"".join([x async for x in r.aiter_raw()])
    if r.headers["content-type"].startswith("text/event-stream"):  # one chunk per event, as uvicorn writes them
        return r.headers["content-type"], [e + b"\n\n" for e in data.split(b"\n\n") if e]
    return r.headers["content-type"], [data]


def per_answer(ctype: str, chunks: list[bytes], n: int) -> float:
    """CPU seconds per answer of the tap (feed every chunk, read the result)."""
    t = time.process_time()
    for _ in range(n):
        tap = TokenTap(ctype)
        for ch in chunks:
            tap.feed(ch)
        if tap.result() is None:
            raise SystemExit("no usage read")
    return (time.process_time() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--answers", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    j_type, j_chunks = asyncio.run(answer({"model": "m", "prompt": "hello world", "max_tokens": a.tokens}))
    s_type, s_chunks = asyncio.run(answer({"model": "m", "prompt": "hello world", "max_tokens": a.tokens,
                                           "stream": True, "stream_options": {"include_usage": True}}))
    spec = ServiceSpec.model_validate({"name": "s", "command": ["x"]})
    rt = ServiceRuntime(id=1, name="s", tenant="t", model="m", spec=spec, generation=1, min=1, max=1, desired=1,
                        loaded_at=0.0, autoscaler=Autoscaler(_policy(spec, 1, 1)))
    rep = Replica(1, 0, 1, 1, node="n", accelerator="H100")
    book = TokenBook(None)
    t = time.process_time()
    for _ in range(a.answers):
        book.add(rt, rep, 3, 5)
    add_s = (time.process_time() - t) / a.answers
    out = {"load_avg_1m": os.getloadavg()[0], "tokens": a.tokens,
           "json_bytes": sum(map(len, j_chunks)), "json_chunks": len(j_chunks),
           "json_tap_us": per_answer(j_type, j_chunks, a.answers) * 1e6,
           "sse_bytes": sum(map(len, s_chunks)), "sse_chunks": len(s_chunks),
           "sse_tap_us": per_answer(s_type, s_chunks, a.answers) * 1e6,
           "sse_one_chunk_tap_us": per_answer(s_type, [b"".join(s_chunks)], a.answers) * 1e6,
           "book_add_us": add_s * 1e6}
    if a.json:
        print(json.dumps(out))
        return
    print(f"load average {out['load_avg_1m']:.1f}; CPU per answer: JSON ({out['json_bytes']} B, "
          f"{out['json_chunks']} chunk) {out['json_tap_us']:.1f} us; SSE of {a.tokens} tokens ({out['sse_bytes']} B, "
          f"{out['sse_chunks']} chunks) {out['sse_tap_us']:.1f} us, the same in one chunk "
          f"{out['sse_one_chunk_tap_us']:.1f} us; per-replica sum {out['book_add_us']:.2f} us")


if __name__ == "__main__":
    main()
