"""Services (job kind ``service``): create (JSON or YAML), list, read with live replica state, scale, update
(rolled out), delete. A tenant sees and manages only its own; the gateway is in :mod:`.gateway`."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from suanli.api.bodies import parse_body
from suanli.api.deps import Ctx, CtxDep, Name, Who, tenant_scope
from suanli.api.models import ERRORS, ErrorOut
from suanli.errors import SuanliError
from suanli.specfile import printable
from suanli.workload.service import MAX_REPLICAS, ServiceSpec

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such service (for you)"}}

router = APIRouter(tags=["services"], responses=ERRORS)


class ReplicaOut(BaseModel):
    job_id: int
    replica: int
    port: int
    generation: int
    state: str
    ready: bool
    outstanding: int = Field(description="requests in flight through the gateway")
    served: int
    engine_running: float | None = Field(description="the engine's running requests (its /metrics)")
    engine_waiting: float | None = Field(description="the engine's waiting requests (its /metrics)")
    stopping: bool


class AutoscalerOut(BaseModel):
    stable_load: float
    panic_load: float
    panicking: bool
    reason: str


class ServiceEvent(BaseModel):
    at: float
    message: str


class ServiceLive(BaseModel):
    ready: int
    desired: int
    ongoing: int
    waiting_for_replica: int
    load: float
    requests: int
    errors: int
    retries: int
    requests_per_s_1m: float
    ttfb_p50_s: float | None
    ttfb_p99_s: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    autoscaler: AutoscalerOut | None
    replicas: list[ReplicaOut]
    events: list[ServiceEvent]


class ServiceOut(BaseModel):
    name: str
    tenant: str
    model: str = Field(description="the `model` clients send to the OpenAI-style routes")
    generation: int
    min: int
    max: int
    desired: int
    created_at: float
    updated_at: float
    spec: dict[str, Any] = Field(description="the ServiceSpec, after sizing by the planner")
    live: ServiceLive | None = Field(description="replicas and load as the service manager sees them now")
    plan: dict[str, Any] | None = Field(default=None, description="the planner's row (creation with `plan`)")


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: Annotated[int | None, Field(ge=0, le=MAX_REPLICAS, strict=True)] = None
    max: Annotated[int | None, Field(ge=1, le=MAX_REPLICAS, strict=True)] = None


def parse_service(body: bytes, ctype: str) -> tuple[ServiceSpec, dict[str, Any]]:
    """Validate a service spec (JSON or YAML); every problem is a 4xx naming the field."""
    return parse_body(body, ctype, ServiceSpec, "a service")


async def _accepted(request: Request, p: Any, ctx: Ctx) -> tuple[ServiceSpec, dict[str, Any] | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    spec, data = await run_in_threadpool(parse_service, await request.body(), ctype)
    if not p.admin:
        if "tenant" in data and spec.tenant != p.tenant:
            raise HTTPException(403, f"body.tenant: you may only create services as tenant {p.tenant!r}")
        spec = spec.model_copy(update={"tenant": p.tenant})
    if not ctx.store.tenant_exists(spec.tenant):
        raise HTTPException(422, f"body.tenant: no tenant {spec.tenant!r}")
    if not ctx.store.queue_exists(spec.queue):
        raise HTTPException(422, f"body.queue: no queue {spec.queue!r}")
    try:
        sized, plan = await run_in_threadpool(spec.with_plan)
        sized.replica_job(0, 1, above_min=False).to_job(0)
    except (SuanliError, ValueError) as e:
        raise HTTPException(422, printable(f"body.plan: {e}")) from None
    if ctx.controller is not None:
        why = ctx.controller.never_fits(sized.replica_job(0, 1, above_min=False).to_job(0))
        if why is not None:
            raise HTTPException(422, f"body.resources: a replica {why}")
    return sized, plan


def _out(ctx: Ctx, s: dict[str, Any], live: bool = True) -> dict[str, Any]:
    mgr = getattr(ctx, "services", None)
    out = {k: v for k, v in s.items() if k != "id"}
    out["live"] = mgr.describe(s["name"]) if (live and mgr is not None) else None
    return out


@router.post("/v1/services", status_code=201, response_model=ServiceOut,
             responses={403: {"model": ErrorOut, "description": "a tenant creating as another"},
                        409: {"model": ErrorOut, "description": "name or model taken"}})
async def create_service(request: Request, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """Create a service (JSON, or YAML with Content-Type application/yaml); its replicas start shortly."""
    spec, plan = await _accepted(request, p, ctx)
    s = await run_in_threadpool(ctx.store.create_service, spec, spec.initial_replicas)
    out = _out(ctx, s, live=False)
    out["plan"] = plan
    return out


@router.get("/v1/services", response_model=list[ServiceOut])
def list_services(p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    """Services with their live state (ready replicas, load, latency)."""
    return [_out(ctx, s) for s in ctx.store.list_services(tenant_scope(p))]


@router.get("/v1/services/{name}", response_model=ServiceOut, responses=NOT_FOUND)
def get_service(name: Name, p: Who, ctx: CtxDep) -> dict[str, Any]:
    return _out(ctx, ctx.store.get_service(name, tenant_scope(p)))


@router.patch("/v1/services/{name}", response_model=ServiceOut, responses=NOT_FOUND)
def scale_service(name: Name, body: ScaleIn, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """New replica bounds ``{"min": 1, "max": 8}`` (either may be left out)."""
    if body.min is None and body.max is None:
        raise HTTPException(422, "body: give min, max or both")
    return _out(ctx, ctx.store.scale_service(name, tenant_scope(p), body.min, body.max))


@router.put("/v1/services/{name}", response_model=ServiceOut,
            responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "model taken"}})
async def update_service(name: Name, request: Request, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """A new spec for the service: rolled out replica by replica (``rollout.max_surge`` / ``max_unavailable``)."""
    spec, _ = await _accepted(request, p, ctx)
    if spec.name != name:
        raise HTTPException(422, f"body.name: must be {name!r} (the service's name)")
    return _out(ctx, await run_in_threadpool(ctx.store.update_service_spec, name, tenant_scope(p), spec))


@router.delete("/v1/services/{name}", response_model=ServiceOut, responses=NOT_FOUND)
async def delete_service(name: Name, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """Delete the service; its replica jobs are cancelled and the gateway stops routing to it at once."""
    s = await run_in_threadpool(ctx.store.delete_service, name, tenant_scope(p))
    mgr = getattr(ctx, "services", None)
    if mgr is not None:
        mgr.forget(s["name"], s["id"])
    return _out(ctx, s, live=False)
