"""The REST API: jobs, nodes and devices, queues and tenants, metrics. Bearer tokens; tenants see their own jobs.

Every answer to bad input is a 4xx naming the field and what is wrong with it; a write either happens whole or not
at all (each is one store transaction).
"""

# no "from __future__ import annotations": FastAPI resolves the dependency aliases defined in create_app

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli.catalog.accelerators import resolve_accelerator
from suanli.control.metrics import Metrics
from suanli.control.store import Conflict, Invalid, NotFound, Principal, Store
from suanli.errors import SuanliError
from suanli.sched import Allocation
from suanli.specfile import load_bounded, printable, validate
from suanli.workload.spec import JobSpec
from suanli.workload.states import TERMINAL, JobState

log = logging.getLogger("suanli.api")

MAX_BODY = 256 * 1024
MAX_ID = 2**63 - 1
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "")  # no Content-Type: JSON
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NODE = r"^[^\x00-\x1f/]{1,255}$"  # host names: no control characters


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = self.limit + 1
                if n > self.limit:
                    await _too_large(send, self.limit)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, str) and p.startswith("function-"):
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _errors_detail(errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> dict[str, Any]:
    items = [{"field": printable(_loc((*prefix, *e.get("loc", ())))),
              "message": printable(str(e.get("msg", "invalid")).removeprefix("Value error, "))} for e in errors]
    return {"detail": "; ".join(f"{i['field']}: {i['message']}" for i in items[:5]), "errors": items}


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)
    weight: float = Field(1.0, gt=0, le=1e6)
    quota: dict[str, Annotated[int, Field(ge=0, le=10_000_000)]] = Field(
        default_factory=dict, description="devices guaranteed per accelerator model ('*' for any)")
    borrow: bool = True

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int]) -> dict[str, int]:
        return _resolve_quota(v)


class QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float | None = Field(None, gt=0, le=1e6)
    quota: dict[str, Annotated[int, Field(ge=0, le=10_000_000)]] | None = None
    borrow: bool | None = None

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        return None if v is None else _resolve_quota(v)


def _resolve_quota(v: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, n in v.items():
        if k == "*":
            out[k] = n
            continue
        try:
            out[resolve_accelerator(k)] = n
        except SuanliError as e:
            raise ValueError(str(e)) from None
    return out


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)


def create_app(store: Store, *, data_dir: str | Path | None = None, controller: Any = None,
               metrics: Metrics | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """The API over ``store``. ``controller`` (optional) gives feasibility checks and live metrics;
    ``data_dir`` is where job logs live."""
    app = FastAPI(title="suanli control plane", version="1", description=__doc__)
    app.add_middleware(BodyLimit, limit=max_body)
    metrics = metrics or Metrics()
    metrics.store = store
    root = Path(data_dir).resolve() if data_dir is not None else None
    bearer = HTTPBearer(auto_error=False)
    app.state.store = store
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_errors_detail(list(exc.errors())), status_code=422)

    @app.exception_handler(NotFound)
    async def _nf(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _cf(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(sa_exc.DataError)
    async def _data(_: Request, exc: sa_exc.DataError) -> JSONResponse:
        # a value the database refuses (a safety net: input validation should have caught it first)
        log.warning("database refused a value: %s", exc.orig)
        return JSONResponse({"detail": f"a value was refused by the database: {exc.orig}"}, status_code=422)

    @app.exception_handler(Invalid)
    async def _iv(_: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def principal(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        if cred is None or not cred.credentials:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        p = store.authenticate(cred.credentials)
        if p is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        return p

    def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if not p.admin:
            raise HTTPException(403, "admin only")
        return p

    Who = Annotated[Principal, Depends(principal)]
    Admin = Annotated[Principal, Depends(admin)]
    JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="job id")]

    # -- jobs -------------------------------------------------------------------------------------------------
    def _parse_spec(request_body: bytes, ctype: str) -> tuple[JobSpec, dict[str, Any]]:
        """Parse and validate a submission (CPU work: called in a worker thread, never on the event loop)."""
        if ctype not in YAML_TYPES and ctype not in JSON_TYPES:
            raise HTTPException(415, f"Content-Type {printable(ctype)!r}: send application/json or application/yaml")
        try:
            text = request_body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "body: not UTF-8 text") from None
        if "\x00" in text:
            raise HTTPException(422, "body: NUL characters are not allowed")
        try:
            if ctype in YAML_TYPES:
                data, root = load_bounded(text, "body")  # refuses alias bombs before anything walks the data
                if not isinstance(data, dict):
                    raise HTTPException(422, "body: a job is a mapping")
                spec = validate(data, root, JobSpec, "body")
            else:
                try:
                    data = json.loads(text) if text.strip() else None
                except (json.JSONDecodeError, RecursionError) as e:
                    raise HTTPException(400, f"body: not valid JSON: {e}") from None
                if not isinstance(data, dict):
                    raise HTTPException(422, "body: a job is a JSON object")
                spec = JobSpec.model_validate(data)
        except ValidationError as e:
            raise HTTPException(422, _errors_detail(list(e.errors()), ("body",))["detail"]) from None
        except (SuanliError, ValueError, TypeError, OverflowError, RecursionError) as e:
            raise HTTPException(422, printable(f"body: {e}")) from None
        return spec, data

    def _check_runnable(spec: JobSpec) -> None:
        if not spec.command:
            raise HTTPException(422, "body.command: a job needs a command to run")
        try:
            j = spec.to_job(0)
        except (ValueError, OverflowError) as e:
            raise HTTPException(422, f"body.resources: {e}") from None
        for name, v in (("cpu", j.cpu_milli), ("memory", j.mem_mib)):
            if v >= 2**53:
                raise HTTPException(422, f"body.resources.{name}: too large")
        if spec.expected_runtime is not None and not math.isfinite(spec.expected_runtime):
            raise HTTPException(422, "body.expected_runtime: must be finite")
        ctl = controller
        if ctl is not None and getattr(ctl, "ready", None) is not None and ctl.ready.is_set() and ctl.error is None:
            cl = ctl.cluster
            try:
                cands = ctl.sched.placer.candidate_models(j, None) if j.count else []
                ok = ctl.sched.placer.place(Allocation(cl), j, cands) is not None
            except Exception:
                ok = True  # let the scheduler judge
            if not ok:
                inv = ", ".join(f"{n}x{m}" for m, n in cl.summary()["models"].items()) or "no accelerators"
                raise HTTPException(422, f"body.resources: can never run on this cluster ({inv}, "
                                    f"{int(cl.node_cpu.sum()) // 1000} CPUs, {int(cl.node_mem.sum())} MiB)")

    @app.post("/v1/jobs", status_code=201, tags=["jobs"], openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
            "application/yaml": {"schema": {"type": "string"}}}}})
    async def submit_job(request: Request, p: Who) -> JSONResponse:
        """Submit a job (JSON, or YAML with Content-Type application/yaml). A tenant submits as itself."""
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        spec, data = await run_in_threadpool(_parse_spec, body, ctype)
        if not p.admin:
            if "tenant" in data and spec.tenant != p.tenant:
                raise HTTPException(403, f"body.tenant: you may only submit as tenant {p.tenant!r}")
            spec = spec.model_copy(update={"tenant": p.tenant})
        _check_runnable(spec)
        if ("t", spec.tenant) not in store._exists or ("q", spec.queue) not in store._exists:
            await run_in_threadpool(_check_names, spec)
        out = await batcher.submit(spec)
        metrics.submissions.inc()
        return JSONResponse(out, status_code=201)

    def _check_names(spec: JobSpec) -> None:
        if not store.tenant_exists(spec.tenant):
            raise HTTPException(422, f"body.tenant: no tenant {spec.tenant!r}")
        if not store.queue_exists(spec.queue):
            raise HTTPException(422, f"body.queue: no queue {spec.queue!r}")

    batcher = _Batcher(store)

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(
        p: Who,
        state: Annotated[list[JobState] | None, Query(description="repeat for several")] = None,
        queue: Annotated[str | None, Query(pattern=_NAME)] = None,
        tenant: Annotated[str | None, Query(pattern=_NAME)] = None,
        after: Annotated[int | None, Query(ge=1, le=MAX_ID, description="cursor: 'next' of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Jobs, newest first. A tenant sees only its own (a ``tenant`` filter naming another gives nothing)."""
        t = tenant if p.admin else p.tenant
        if not p.admin and tenant is not None and tenant != p.tenant:
            return {"items": [], "next": None}
        items, nxt = store.list_jobs(tenant=t, state=[s.value for s in state or []], queue=queue, after=after,
                                     limit=limit)
        return {"items": items, "next": nxt}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: JobId, p: Who) -> dict[str, Any]:
        return store.get_job(job_id, None if p.admin else p.tenant)

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, tags=["jobs"])
    def cancel_job(job_id: JobId, p: Who) -> dict[str, Any]:
        """Ask for a job to be cancelled; the controller stops its processes (if any) and records it."""
        return store.request_cancel(job_id, None if p.admin else p.tenant)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"])
    def job_events(job_id: JobId, p: Who) -> list[dict[str, Any]]:
        return store.events(job_id, None if p.admin else p.tenant)

    @app.get("/v1/jobs/{job_id}/logs", tags=["jobs"], response_class=PlainTextResponse)
    def job_logs(
        job_id: JobId, p: Who,
        tail: Annotated[int, Query(ge=0, le=1_000_000, description="last N lines (0: all)")] = 0,
        follow: bool = False,
        attempt: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> Response:
        """The job's output (stdout and stderr) of one attempt (default: the latest) and rank (default 0)."""
        job = store.get_job(job_id, None if p.admin else p.tenant)
        if attempt is not None and attempt > job["attempts"] and not follow:
            raise HTTPException(404, f"job {job_id} has no attempt {attempt}")
        n = attempt or job["attempts"]
        if root is None:
            return PlainTextResponse("")

        def log_path(k: int) -> Path:
            return root / "jobs" / str(job_id) / "logs" / f"attempt-{k}.rank-{rank}.log"

        if not follow:
            if not n or not log_path(n).exists():
                return PlainTextResponse("")
            if tail:
                return PlainTextResponse(_tail(log_path(n), tail))
            return StreamingResponse(_file_chunks(log_path(n)), media_type="text/plain; charset=utf-8")

        def gen() -> Iterator[bytes]:
            """Stream the log as it grows; without ``attempt``, wait for the first attempt and go on to the next
            ones (retries, requeues) until the job is final."""
            cur, pos = n, 0
            if cur and log_path(cur).exists():
                pos = log_path(cur).stat().st_size
                if tail:
                    yield _last_lines(log_path(cur), tail, pos)
                else:
                    yield from _file_chunks(log_path(cur), pos)
            idle_since = time.monotonic()
            while True:
                if cur and log_path(cur).exists():
                    with open(log_path(cur), "rb") as f:
                        f.seek(pos)
                        chunk = f.read(1 << 16)
                    if chunk:
                        pos += len(chunk)
                        idle_since = time.monotonic()
                        yield chunk
                        continue
                st = store.get_job(job_id)
                if attempt is None and st["attempts"] > cur:  # the next attempt, one by one
                    if cur:
                        if log_path(cur).exists():  # what it wrote between our last read and its end
                            with open(log_path(cur), "rb") as f:
                                f.seek(pos)
                                yield f.read()
                        yield f"--- attempt {cur + 1} ---\n".encode()
                    cur, pos = cur + 1, 0
                    continue
                if JobState(st["state"]) in TERMINAL or (attempt is not None and st["attempts"] != attempt):
                    if cur and log_path(cur).exists():
                        with open(log_path(cur), "rb") as f:
                            f.seek(pos)
                            yield f.read()
                    return
                if time.monotonic() - idle_since > 3600:
                    return
                time.sleep(0.2)

        return StreamingResponse(gen(), media_type="text/plain")

    # -- nodes and devices ----------------------------------------------------------------------------------
    @app.get("/v1/nodes", tags=["nodes"])
    def list_nodes(p: Who) -> list[dict[str, Any]]:
        return store.list_nodes()

    @app.get("/v1/devices", tags=["nodes"])
    def list_devices(p: Who) -> list[dict[str, Any]]:
        return store.list_devices()

    @app.post("/v1/nodes/{name}/drain", tags=["nodes"])
    def drain(name: Annotated[str, PathParam(pattern=_NODE)], p: Admin) -> dict[str, Any]:
        """No new jobs start on the node; running ones go on."""
        return store.set_drained(name, True)

    @app.post("/v1/nodes/{name}/undrain", tags=["nodes"])
    def undrain(name: Annotated[str, PathParam(pattern=_NODE)], p: Admin) -> dict[str, Any]:
        return store.set_drained(name, False)

    # -- queues and tenants ---------------------------------------------------------------------------------
    @app.get("/v1/queues", tags=["admin"])
    def list_queues(p: Who) -> list[dict[str, Any]]:
        return store.list_queues()

    @app.post("/v1/queues", status_code=201, tags=["admin"])
    def create_queue(q: QueueIn, p: Admin) -> dict[str, Any]:
        return store.create_queue(q.name, q.weight, q.quota, q.borrow)

    @app.patch("/v1/queues/{name}", tags=["admin"])
    def update_queue(name: Annotated[str, PathParam(pattern=_NAME)], q: QueueUpdate, p: Admin) -> dict[str, Any]:
        return store.update_queue(name, q.model_dump(exclude_none=True))

    @app.get("/v1/tenants", tags=["admin"])
    def list_tenants(p: Admin) -> list[dict[str, Any]]:
        return store.list_tenants()

    @app.post("/v1/tenants", status_code=201, tags=["admin"])
    def create_tenant(t: TenantIn, p: Admin) -> dict[str, Any]:
        """Create a tenant; the answer holds its first token (shown once, stored hashed)."""
        out, tok = store.create_tenant(t.name)
        return {**out, "token": tok}

    @app.post("/v1/tenants/{name}/tokens", status_code=201, tags=["admin"])
    def new_tenant_token(name: Annotated[str, PathParam(pattern=_NAME)], p: Admin) -> dict[str, Any]:
        """Another token for a tenant (shown once)."""
        return {"tenant": name, "token": store.create_token(admin=False, tenant=name, label="api")}

    # -- health and metrics ---------------------------------------------------------------------------------
    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        ready = controller is not None and controller.ready.is_set() and controller.error is None
        return {"ok": True, "controller": "ready" if ready else ("none" if controller is None else "starting")}

    @app.get("/metrics", tags=["meta"], response_class=PlainTextResponse)
    def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        js = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for k, v in js.pop("$defs", {}).items():
            comps[k] = v
        comps["JobSpec"] = js
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


class _Batcher:
    """Group commit: submissions that arrive while a commit is in flight go together in the next transaction.
    Each request is answered only after its job is committed."""

    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self.pending: list[tuple[JobSpec, asyncio.Future[dict[str, Any]]]] = []
        self.running = False
        self.task: asyncio.Future[None] | None = None

    async def submit(self, spec: JobSpec) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending.append((spec, fut))
        if not self.running:
            self.running = True
            self.task = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    out = await run_in_threadpool(self.store.submit_many, [s for s, _ in batch])
                except Exception as e:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), o in zip(batch, out, strict=True):
                    if not f.done():
                        f.set_result(o)
        finally:
            self.running = False


def _last_lines(path: Path, n: int, end: int | None = None) -> bytes:
    """The last ``n`` lines of the first ``end`` bytes of a file, reading backwards (logs can be large)."""
    with open(path, "rb") as f:
        size = end if end is not None else f.seek(0, 2)
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:]) if n > 0 else data


def _tail(path: Path, n: int) -> str:
    return _last_lines(path, n).decode("utf-8", "replace")


def _file_chunks(path: Path, end: int | None = None) -> Iterator[bytes]:
    """A file (its first ``end`` bytes) in chunks, without reading it all into memory."""
    left = end if end is not None else path.stat().st_size
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


CleanUp = Callable[[], None]
