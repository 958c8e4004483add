"""Nodes and their devices; drain and undrain (admin only)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Any

from fastapi import APIRouter

from suanli.api.deps import Admin, CtxDep, NodeName, Who
from suanli.api.models import ERRORS, Device, ErrorOut, Node

router = APIRouter(tags=["nodes"], responses=ERRORS)
ADMIN: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut, "description": "admin only"},
                                          404: {"model": ErrorOut, "description": "no such node"}}


@router.get("/v1/nodes", response_model=list[Node])
def list_nodes(p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    return ctx.store.list_nodes()


@router.get("/v1/devices", response_model=list[Device])
def list_devices(p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    return ctx.store.list_devices()


@router.post("/v1/nodes/{name}/drain", response_model=Node, responses=ADMIN)
def drain(name: NodeName, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """No new jobs start on the node; running ones go on."""
    return ctx.store.set_drained(name, True)


@router.post("/v1/nodes/{name}/undrain", response_model=Node, responses=ADMIN)
def undrain(name: NodeName, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    return ctx.store.set_drained(name, False)
