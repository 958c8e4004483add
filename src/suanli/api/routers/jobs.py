"""Jobs: submit (JSON or YAML), list, read, cancel, events and logs. A tenant sees and submits only its own."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from suanli.api import logs
from suanli.api.bodies import JSON_TYPES, parse_body
from suanli.api.deps import MAX_ID, NAME, Ctx, CtxDep, JobId, Who, tenant_scope
from suanli.api.models import ERRORS, ErrorOut, JobDetail, JobEvent, JobPage, JobSubmitted
from suanli.control import logs as clogs
from suanli.workload.spec import JobSpec
from suanli.workload.states import TERMINAL, JobState

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such job (for you)"}}

router = APIRouter(tags=["jobs"], responses=ERRORS)
INLINE_PARSE = 16 * 1024  # a JSON body up to this size is validated on the event loop; larger ones (and YAML) in a
# worker thread, so that a hostile body cannot hold the loop


def parse_spec(request_body: bytes, ctype: str) -> tuple[JobSpec, dict[str, Any]]:
    """Parse and validate a submission (CPU work: called in a worker thread, never on the event loop); every
    problem is an HTTPException naming the field."""
    return parse_body(request_body, ctype, JobSpec, "a job")


def check_runnable(ctx: Ctx, spec: JobSpec) -> None:
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
    why = ctx.controller.never_fits(j) if ctx.controller is not None else None
    if why is not None:
        raise HTTPException(422, f"body.resources: {why}")


def check_names(ctx: Ctx, spec: JobSpec) -> None:
    if not ctx.store.tenant_exists(spec.tenant):
        raise HTTPException(422, f"body.tenant: no tenant {spec.tenant!r}")
    if not ctx.store.queue_exists(spec.queue):
        raise HTTPException(422, f"body.queue: no queue {spec.queue!r}")


@router.post("/v1/jobs", status_code=201, response_model=JobSubmitted,
             responses={403: {"model": ErrorOut, "description": "a tenant submitting as another"},
                        415: {"model": ErrorOut, "description": "neither JSON nor YAML"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
                 "application/yaml": {"schema": {"type": "string"}}}}})
async def submit_job(request: Request, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """Submit a job (JSON, or YAML with Content-Type application/yaml). A tenant submits as itself."""
    body = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if len(body) <= INLINE_PARSE and ctype in JSON_TYPES:
        spec, data = parse_spec(body, ctype)  # ~0.1 ms: cheaper than a worker thread's round trip under load
    else:
        spec, data = await run_in_threadpool(parse_spec, body, ctype)
    if not p.admin:
        if "tenant" in data and spec.tenant != p.tenant:
            raise HTTPException(403, f"body.tenant: you may only submit as tenant {p.tenant!r}")
        spec = spec.model_copy(update={"tenant": p.tenant})
    check_runnable(ctx, spec)
    if not ctx.store.names_known(spec.tenant, spec.queue):
        await run_in_threadpool(check_names, ctx, spec)
    out = await ctx.batcher.submit(spec)
    ctx.metrics.submissions.inc()
    return ctx.with_reason(out)


@router.get("/v1/jobs", response_model=JobPage)
def list_jobs(
    p: Who, ctx: CtxDep,
    state: Annotated[list[JobState] | None, Query(description="repeat for several")] = None,
    queue: Annotated[str | None, Query(pattern=NAME)] = None,
    tenant: Annotated[str | None, Query(pattern=NAME)] = None,
    after: Annotated[int | None, Query(ge=1, le=MAX_ID, description="cursor: 'next' of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Jobs, newest first. A tenant sees only its own (a ``tenant`` filter naming another gives nothing)."""
    t = tenant if p.admin else p.tenant
    if not p.admin and tenant is not None and tenant != p.tenant:
        return {"items": [], "next": None}
    items, nxt = ctx.store.list_jobs(tenant=t, state=[s.value for s in state or []], queue=queue, after=after,
                                     limit=limit)
    return {"items": [ctx.with_reason(j) for j in items], "next": nxt}


@router.get("/v1/jobs/{job_id}", response_model=JobDetail, responses=NOT_FOUND)
def get_job(job_id: JobId, p: Who, ctx: CtxDep) -> dict[str, Any]:
    return ctx.with_reason(ctx.store.get_job(job_id, tenant_scope(p)))


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobDetail,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "the job has already ended"}})
def cancel_job(job_id: JobId, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """Ask for a job to be cancelled; the controller stops its processes (if any) and records it."""
    return ctx.with_reason(ctx.store.request_cancel(job_id, tenant_scope(p)))


@router.get("/v1/jobs/{job_id}/events", response_model=list[JobEvent], responses=NOT_FOUND)
def job_events(job_id: JobId, p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    return ctx.store.events(job_id, tenant_scope(p))


@router.get("/v1/jobs/{job_id}/logs", response_class=PlainTextResponse, responses={
    **NOT_FOUND, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the log text"},
    429: {"model": ErrorOut, "description": "too many logs followed at once by this tenant"}})
async def job_logs(
    job_id: JobId, p: Who, ctx: CtxDep,
    tail: Annotated[int, Query(ge=0, le=1_000_000, description="last N lines (0: all)")] = 0,
    follow: bool = False,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """The job's output (stdout and stderr) of one attempt (default: the latest) and rank (default 0).
    ``follow`` streams it as it grows (a tenant may follow a few logs at once; 429 past that)."""
    job = await run_in_threadpool(ctx.store.get_job, job_id, tenant_scope(p))
    if attempt is not None and attempt > job["attempts"] and not follow:
        raise HTTPException(404, f"job {job_id} has no attempt {attempt}")
    n = attempt or job["attempts"]
    root = ctx.data_dir
    if root is None:
        return PlainTextResponse("")
    if not follow:
        path = logs.log_path(root, job_id, n, rank)
        if not n or not path.exists():
            return PlainTextResponse("")
        return StreamingResponse(clogs.tail_chunks(path, tail, path.stat().st_size),
                                 media_type="text/plain; charset=utf-8")
    who = "admin" if p.admin else f"t:{p.tenant}"
    if not ctx.followers.acquire(who, p.admin):
        cap = ctx.followers.per_admin if p.admin else ctx.followers.per_tenant
        raise HTTPException(429, f"follow: at most {cap} logs followed at once per tenant; close one first")

    def state() -> tuple[int, bool]:
        st = ctx.store.get_job(job_id)
        return int(st["attempts"]), JobState(st["state"]) in TERMINAL

    gen = logs.follower(root, job_id, rank, n, state, attempt is not None, tail)
    return logs.FollowResponse(gen, lambda: ctx.followers.release(who), media_type="text/plain; charset=utf-8")
