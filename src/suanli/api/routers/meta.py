"""Health and Prometheus metrics (no token needed)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suanli.api.deps import CtxDep, Who
from suanli.api.models import ERRORS, Health, Me

router = APIRouter(tags=["meta"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True)  # "virtual" only on a virtual fleet
def healthz(ctx: CtxDep) -> Health:
    ex = getattr(ctx.controller, "ex", None)
    describe = getattr(ex, "describe", None)
    return Health(ok=True, controller=ctx.controller_state(), virtual=describe() if callable(describe) else None)


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}})
def prom(ctx: CtxDep) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/whoami", response_model=Me, responses=ERRORS)
def whoami(p: Who) -> Me:
    """Who the token belongs to (the pages show admin actions only to admins; the API checks them anyway)."""
    return Me(admin=p.admin, tenant=p.tenant)
