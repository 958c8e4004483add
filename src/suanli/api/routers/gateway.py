"""The inference gateway: ``/v1/services/NAME/...`` and the OpenAI-style ``/v1/completions``,
``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models`` (the ``model`` field chooses the service).

Tenant tokens apply (a tenant reaches only its own services; an admin all). Requests go to ready replicas only,
chosen by power of two choices on the requests each has in flight (least outstanding requests). The request is
forwarded with httpx and the answer streamed back chunk by chunk (SSE passes through as it comes). A replica that
cannot be reached, or that drops the connection before the first byte of its answer, is marked unready and the
request is sent to another one: a replica dying loses only the requests that had already started streaming. With
no ready replica (scale from zero, all restarting) a request waits up to ``WAIT_S`` for one, and counts as load
meanwhile so the autoscaler starts one.

Tokens served (accounting): the ``usage`` the engine reports ({prompt_tokens, completion_tokens}) is read from what
passes through - a JSON answer's top-level ``usage``, or the last SSE event that carries one (the final chunk with
``stream_options.include_usage``, as vLLM and OpenAI send it) - without holding anything back from the client. An
answer without usage counts nothing (never guessed). The counts are summed per replica in memory
(:class:`TokenBook`) and written every ``FLUSH_S`` seconds and at shutdown, one transaction per flush with a flush id
(a retried flush is not counted twice): a SIGKILL loses at most the last ``FLUSH_S`` seconds of counts.
"""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict

from suanli.api.deps import NAME, bearer, get_ctx
from suanli.control.services import Replica, ServiceManager, ServiceRuntime
from suanli.control.store import Principal

WAIT_S = 60.0  # longest a request waits for a ready replica
MAX_TRIES = 4  # replicas a request is tried on before 502
AUTH_TTL_S = 5.0  # a token's check is reused this long (the gateway's hot path stays off the database)
FLUSH_S = 5.0  # token counts are written this often (and at shutdown)
JSON_KEEP = 1 << 20  # a JSON answer up to this size is parsed whole for its usage; a larger one from its tail
MAX_TOKENS = 1 << 40  # a usage figure above this is not believed
HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
                 "transfer-encoding", "upgrade", "host", "content-length", "authorization"})

router = APIRouter(tags=["gateway"])
log = logging.getLogger(__name__)


class Completion(BaseModel):
    """An OpenAI-style answer as the engine sent it (passed through unchanged; extra keys kept)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str
    service: str
    ready_replicas: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class Proxied(StreamingResponse):
    """The replica's answer, whatever its type (documented as bytes)."""

    media_type = "application/octet-stream"


OPENAI_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"description": "the engine's answer: JSON, or an SSE stream (`\"stream\": true`)",
          "content": {"application/json": {"schema": Completion.model_json_schema()},
                      "text/event-stream": {"schema": {"type": "string"}}}},
    404: {"description": "no service of the caller serves this model"},
    503: {"description": "no ready replica within the wait"}}
PROXIED: dict[int | str, dict[str, Any]] = {
    200: {"description": "whatever the replica answers, streamed through",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    404: {"description": "no such service (for you)"}}


def _usage(u: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object, None when it is not one (absent, null, not
    whole non-negative numbers). Embeddings report no completion tokens: 0."""
    if not isinstance(u, dict):
        return None
    p, c = u.get("prompt_tokens"), u.get("completion_tokens", 0)
    if c is None:
        c = 0
    ok = all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < MAX_TOKENS for x in (p, c))
    return (p, c) if ok else None


class TokenTap:
    """The ``usage`` of one answer, read from the chunks as they pass (they are not held back). SSE: the last
    ``data:`` event with a usage object (only lines that contain ``"usage"`` are parsed; an event split across
    chunks is joined from the unfinished line). JSON: the top-level ``usage`` of the whole body up to
    ``JSON_KEEP`` bytes, else of its last 64 KiB."""

    __slots__ = ("buf", "parts", "size", "sse", "usage")

    def __init__(self, content_type: str) -> None:
        self.sse = content_type.startswith("text/event-stream")
        self.buf = b""
        self.parts: list[bytes] = []
        self.size = 0
        self.usage: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.sse:
            data = self.buf + chunk if self.buf else chunk
            cut = data.rfind(b"\n") + 1
            end = cut
            while end > 0:  # the finished lines' "usage", last first: only the line around one is parsed
                i = data.rfind(b'"usage"', 0, end)
                if i < 0:
                    break
                ls = data.rfind(b"\n", 0, i) + 1
                if data.startswith(b"data:", ls):
                    try:
                        u = _usage(json.loads(data[ls + 5 : data.find(b"\n", i)]).get("usage"))
                    except (ValueError, AttributeError):
                        u = None
                    if u is not None:
                        self.usage = u
                        break
                end = ls
            self.buf = data[cut:] if len(data) - cut <= JSON_KEEP else b""  # an endless line is no usage event
        else:
            self.size += len(chunk)
            self.parts.append(chunk)
            if self.size > JSON_KEEP and len(self.parts) > 2:
                self.parts = self.parts[-2:]

    def result(self) -> tuple[int, int] | None:
        if self.sse:
            if self.buf.startswith(b"data:") and b'"usage"' in self.buf:  # a last event without its newline
                self.feed(b"\n")
            return self.usage
        body = b"".join(self.parts)
        try:
            if self.size <= JSON_KEEP:
                d = json.loads(body)
                return _usage(d.get("usage")) if isinstance(d, dict) else None
            tail = body[-65536:]
            i = tail.rfind(b'"usage"')
            j = tail.find(b":", i + 7) if i >= 0 else -1
            if j < 0 or tail[i + 7 : j].strip():
                return None
            val, _ = json.JSONDecoder().raw_decode(tail[j + 1 :].decode("utf-8").lstrip())
            return _usage(val)
        except (ValueError, UnicodeDecodeError):
            return None


class TokenBook:
    """Tokens served per replica, summed in memory and written to the store every ``flush_s`` seconds and at
    shutdown (``Store.add_service_tokens``: one transaction per flush; a flush that fails is retried with the same
    id, so it is counted once). At most the counts of the last ``flush_s`` seconds are lost to a SIGKILL."""

    def __init__(self, store: Any, flush_s: float = FLUSH_S) -> None:
        self.store = store
        self.flush_s = flush_s
        self.acc: dict[tuple[str, str, str, str, str, int, str, str], list[int]] = {}
        self.pending: list[tuple[str, float, list[dict[str, Any]]]] = []
        self.task: asyncio.Task[None] | None = None
        self.written = 0  # flushes written (tests, /metrics)

    def add(self, rt: ServiceRuntime, rep: Replica, prompt: int, completion: int) -> None:
        k = (rt.name, rt.tenant, rt.spec.queue, rt.model, rt.spec.llm or "", rep.job_id, rep.node or "",
             rep.accelerator or "")
        a = self.acc.get(k)
        if a is None:
            a = self.acc[k] = [0, 0, 0]
        a[0] += 1
        a[1] += prompt
        a[2] += completion
        if self.task is None and self.store is not None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def take(self) -> None:
        """Move the counts into a new pending flush (one id, one time)."""
        if not self.acc:
            return
        acc, self.acc = self.acc, {}
        rows = [{"service": k[0], "tenant": k[1], "queue": k[2], "served_model": k[3], "llm": k[4], "job_id": k[5],
                 "node": k[6], "model": k[7], "requests": v[0], "prompt_tokens": v[1], "completion_tokens": v[2]}
                for k, v in acc.items()]
        self.pending.append((uuid.uuid4().hex, time.time(), rows))

    async def flush(self) -> None:
        self.take()
        while self.pending:
            fid, at, rows = self.pending[0]
            try:
                await asyncio.to_thread(self.store.add_service_tokens, fid, at, rows)
            except Exception as e:  # the store is away: keep the flush and retry it (same id) next time
                log.warning("gateway: token counts not written yet (%s); retrying in %g s", e, self.flush_s)
                return
            self.pending.pop(0)
            self.written += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.store is not None:
            await self.flush()


class Gateway:
    """The HTTP client to the replicas, a short-lived cache of token checks and the token counts (one per app)."""

    def __init__(self, store: Any = None, flush_s: float = FLUSH_S) -> None:
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
            timeout=httpx.Timeout(connect=3.0, read=600.0, write=60.0, pool=60.0))
        self.auth: dict[str, tuple[float, Principal | None]] = {}
        self.tokens = TokenBook(store, flush_s)

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self.client.aclose()


def gateway(request: Request) -> Gateway:
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    if gw is None:
        gw = request.app.state.gateway = Gateway(get_ctx(request).store,
                                                 getattr(request.app.state, "token_flush_s", FLUSH_S))
    return gw


async def caller(request: Request,
                 cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The bearer token's principal, as the rest of the API checks it, cached for AUTH_TTL_S."""
    if cred is None or not cred.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    gw = gateway(request)
    key = hashlib.sha256(cred.credentials.encode("utf-8", "surrogatepass")).hexdigest()
    now = time.monotonic()
    hit = gw.auth.get(key)
    if hit is None or now - hit[0] > AUTH_TTL_S:
        store = get_ctx(request).store
        p = await asyncio.to_thread(store.authenticate, cred.credentials)
        if len(gw.auth) > 10000:
            gw.auth.clear()
        hit = gw.auth[key] = (now, p)
    if hit[1] is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return hit[1]


Caller = Annotated[Principal, Depends(caller)]


def _manager(ctx: Any) -> ServiceManager:
    m: ServiceManager | None = getattr(ctx, "services", None)
    if m is None:
        raise HTTPException(503, "services are not running on this server")
    return m


def _scope(p: Principal) -> str | None:
    return None if p.admin else p.tenant


def _openai_error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": None}}, status_code=status)


async def forward(gw: Gateway, mgr: ServiceManager, rt: ServiceRuntime, path: str, request: Request,
                  body: bytes) -> Response:
    """Send the request to a ready replica (retrying others while nothing has been streamed) and stream back."""
    t0 = time.perf_counter()
    rt.requests += 1
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
    url_tail = path + (f"?{request.url.query}" if request.url.query else "")
    tried: set[int] = set()
    tries = 0
    deadline = t0 + WAIT_S
    while True:
        rep: Replica | None = mgr.pick(rt, tried)
        if rep is None:
            if rt.gone:
                return _openai_error(404, f"service {rt.name} was deleted")
            if time.perf_counter() > deadline:
                rt.errors += 1
                return _openai_error(503, f"service {rt.name}: no ready replica within {WAIT_S:g} s")
            rt.waiting += 1
            try:
                await asyncio.sleep(0.05)
            finally:
                rt.waiting -= 1
            if tried and not mgr.pick(rt, tried):
                tried.clear()  # every ready replica has been tried: they may have come back
            continue
        rep.outstanding += 1
        resp: httpx.Response | None = None
        try:
            req = gw.client.build_request(request.method, rep.url + url_tail, headers=headers, content=body)
            resp = await gw.client.send(req, stream=True)
            chunks = resp.aiter_raw()
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = b""
        except httpx.TransportError as e:
            rep.outstanding -= 1
            if resp is not None:
                await resp.aclose()
            mgr.mark_unreachable(rt, rep, f"{type(e).__name__}")
            tried.add(rep.job_id)
            tries += 1
            rt.retries += 1
            if tries >= MAX_TRIES:
                rt.errors += 1
                return _openai_error(502, f"service {rt.name}: {tries} replicas failed ({type(e).__name__})")
            continue
        break
    ttfb = time.perf_counter() - t0
    if resp.status_code >= 500:
        rt.errors += 1
    out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
    out_headers["x-suanli-replica"] = str(rep.idx)
    ctype = resp.headers.get("content-type", "")
    tap = TokenTap(ctype) if resp.status_code == 200 and (
        ctype.startswith("application/json") or ctype.startswith("text/event-stream")) else None

    async def stream() -> AsyncIterator[bytes]:
        try:
            if first:
                if tap is not None:
                    tap.feed(first)
                yield first
            async for chunk in chunks:
                if tap is not None:
                    tap.feed(chunk)
                yield chunk
        except httpx.TransportError:
            rt.errors += 1  # the replica died while streaming: the client sees the stream end early

    done = False

    async def release() -> None:  # once, however the response ends (even never started: the client went away)
        nonlocal done
        if done:
            return
        done = True
        rep.outstanding -= 1
        rep.served += 1
        rt.latencies.append((time.monotonic(), ttfb, time.perf_counter() - t0))
        if tap is not None:
            u = tap.result()
            if u is not None:
                gw.tokens.add(rt, rep, *u)
        await resp.aclose()

    return Relay(stream(), release, status_code=resp.status_code, headers=out_headers)


class Relay(StreamingResponse):
    """A streamed answer that calls ``release`` when it is over, whether it was sent whole, cut short, or never
    started (the replica's in-flight count must not leak)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()


async def by_service(name: str, path: str, request: Request, p: Caller) -> Response:
    """``/v1/services/NAME/v1/chat/completions`` goes to ``/v1/chat/completions`` of one of NAME's replicas."""
    import re

    if not re.fullmatch(NAME.strip("^$"), name):
        raise HTTPException(404, f"no service {name!r}")
    mgr = _manager(get_ctx(request))  # not a Depends: a sync dependency costs a thread hop per request
    rt = mgr.find(name, _scope(p))
    if rt is None:
        raise HTTPException(404, f"no service {name!r}")
    return await forward(gateway(request), mgr, rt, "/" + path, request, await request.body())


for _m in ("GET", "POST", "PUT", "PATCH", "DELETE"):
    router.add_api_route("/v1/services/{name}/{path:path}", by_service, methods=[_m],
                         operation_id=f"service_proxy_{_m.lower()}", responses=PROXIED, response_model=None,
                         response_class=Proxied,
                         summary="Forward a request to a ready replica of service NAME")


async def _by_model(request: Request, p: Principal) -> Response:
    mgr = _manager(get_ctx(request))
    body = await request.body()
    try:
        data = json.loads(body)
    except ValueError:
        return _openai_error(400, "request body is not valid JSON")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        return _openai_error(400, "'model' is required: the model of one of your services", "model")
    rt = mgr.find_model(model, _scope(p))
    if rt is None:
        return _openai_error(404, f"The model `{model}` does not exist (no service of yours serves it).", "model")
    return await forward(gateway(request), mgr, rt, request.url.path, request, body)


@router.post("/v1/completions", responses=OPENAI_ANSWER, response_model=None,
             summary="OpenAI completions, routed by `model` to a service")
async def completions(request: Request, p: Caller) -> Response:
    return await _by_model(request, p)


@router.post("/v1/chat/completions", responses=OPENAI_ANSWER, response_model=None,
             summary="OpenAI chat completions, routed by `model` to a service")
async def chat_completions(request: Request, p: Caller) -> Response:
    return await _by_model(request, p)


@router.post("/v1/embeddings", responses=OPENAI_ANSWER, response_model=None,
             summary="OpenAI embeddings, routed by `model` to a service")
async def embeddings(request: Request, p: Caller) -> Response:
    return await _by_model(request, p)


@router.get("/v1/models", response_model=ModelList,
            summary="The models of the services the caller may use (OpenAI list format)")
async def models(request: Request, p: Caller) -> dict[str, Any]:
    mgr = _manager(get_ctx(request))
    return {"object": "list", "data": [
        {"id": rt.model, "object": "model", "owned_by": rt.tenant, "service": rt.name,
         "ready_replicas": len(rt.ready_replicas())} for rt in mgr.visible(_scope(p))]}
