"""Tenants and their tokens (admin only). Tokens are shown once and stored hashed."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Any

from fastapi import APIRouter

from suanli.api.deps import Admin, CtxDep, Name
from suanli.api.models import ERRORS, ErrorOut, Tenant, TenantCreated, TenantIn, TenantToken

router = APIRouter(tags=["admin"], responses={**ERRORS, 403: {"model": ErrorOut, "description": "admin only"}})


@router.get("/v1/tenants", response_model=list[Tenant])
def list_tenants(p: Admin, ctx: CtxDep) -> list[dict[str, Any]]:
    return ctx.store.list_tenants()


@router.post("/v1/tenants", status_code=201, response_model=TenantCreated,
             responses={409: {"model": ErrorOut, "description": "the tenant exists"}})
def create_tenant(t: TenantIn, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """Create a tenant; the answer holds its first token (shown once, stored hashed)."""
    out, tok = ctx.store.create_tenant(t.name)
    return {**out, "token": tok}


@router.post("/v1/tenants/{name}/tokens", status_code=201, response_model=TenantToken,
             responses={404: {"model": ErrorOut, "description": "no such tenant"}})
def new_tenant_token(name: Name, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """Another token for a tenant (shown once)."""
    return {"tenant": name, "token": ctx.store.create_token(admin=False, tenant=name, label="api")}
