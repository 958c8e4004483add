"""Tenants and their tokens (admin only). Tokens are shown once and stored hashed; they can be listed (without
their value), revoked one by one, or rotated (all of a tenant's revoked, one new issued). A revoked token stops
working at once."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam

from suanli.api.deps import MAX_ID, NAME, Admin, CtxDep, Name, Who
from suanli.api.models import ERRORS, ErrorOut, Tenant, TenantCreated, TenantIn, TenantToken, TokenInfo

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


@router.post("/v1/tenants/{name}/tokens/rotate", status_code=201, response_model=TenantToken,
             responses={404: {"model": ErrorOut, "description": "no such tenant"}})
def rotate_tenant_tokens(name: Name, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """Revoke every token of the tenant and issue a new one (shown once)."""
    return {"tenant": name, "token": ctx.store.rotate_tokens(tenant=name, label="rotated")}


@router.get("/v1/tokens", response_model=list[TokenInfo])
def list_tokens(p: Admin, ctx: CtxDep,
                tenant: Annotated[str | None, Query(pattern=NAME)] = None) -> list[dict[str, Any]]:
    """Tokens (id, tenant, label, when): never their value."""
    return ctx.store.list_tokens(tenant)


@router.delete("/v1/tokens/self", response_model=TokenInfo, tags=["jobs"])
def revoke_own_token(request: Request, p: Who, ctx: CtxDep) -> dict[str, Any]:
    """Revoke the token this request carries (a holder who fears it leaked); ask an admin for a new one."""
    return ctx.store.revoke_by_value(request.headers.get("authorization", "").partition(" ")[2].strip())


@router.delete("/v1/tokens/{token_id}", response_model=TokenInfo,
               responses={404: {"model": ErrorOut, "description": "no such token"}})
def revoke_token(token_id: Annotated[int, PathParam(ge=1, le=MAX_ID)], p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """Revoke one token: it stops working at once."""
    return ctx.store.revoke_token(token_id)
