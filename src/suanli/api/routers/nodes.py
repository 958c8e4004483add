"""Nodes and their devices; drain, undrain and partitions (admin only)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Annotated, Any

from fastapi import APIRouter, Query

from suanli.api.deps import NODE, Admin, CtxDep, NodeName, Who
from suanli.api.models import ERRORS, Device, ErrorOut, Node, NodeUpdate
from suanli.control.types import DeviceHealth, NodeStatus

router = APIRouter(tags=["nodes"], responses=ERRORS)
ADMIN: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut, "description": "admin only"},
                                          404: {"model": ErrorOut, "description": "no such node"}}


@router.get("/v1/nodes", response_model=list[Node])
def list_nodes(
    p: Who, ctx: CtxDep,
    after: Annotated[str | None, Query(pattern=NODE, description="page: the last name of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="at most this many (default: all)")] = None,
    status: Annotated[NodeStatus | None, Query(description="up or lost")] = None,
    accelerator: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict[str, Any]]:
    """Nodes by name. Page with ``limit`` and ``after`` (the last name seen); filter by ``status``, ``accelerator``."""
    return ctx.store.list_nodes(after=after, limit=limit, status=status.value if status else None,
                                accelerator=accelerator)


@router.get("/v1/devices", response_model=list[Device])
def list_devices(
    p: Who, ctx: CtxDep,
    node: Annotated[str | None, Query(pattern=NODE)] = None,
    health: Annotated[DeviceHealth | None, Query(description="healthy or unhealthy")] = None,
    after_node: Annotated[str | None, Query(pattern=NODE, description="page: devices of nodes after this name")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> list[dict[str, Any]]:
    """Devices by node and index; filter by ``node``, ``health``; page with ``limit`` and ``after_node``."""
    return ctx.store.list_devices(node=node, health=health.value if health else None, after_node=after_node,
                                  limit=limit)


@router.post("/v1/nodes/{name}/drain", response_model=Node, responses=ADMIN)
def drain(name: NodeName, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """No new jobs start on the node; running ones go on."""
    return ctx.store.set_drained(name, True)


@router.post("/v1/nodes/{name}/undrain", response_model=Node, responses=ADMIN)
def undrain(name: NodeName, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    return ctx.store.set_drained(name, False)


@router.patch("/v1/nodes/{name}", response_model=Node, responses=ADMIN)
def update_node(name: NodeName, body: NodeUpdate, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    """Set the partitions of a node: ``{"partitions": ["train"]}`` replaces the ones the node reports (``suanli up
    --partition``, the Ray label ``suanli.io/partitions``, the fleet file) and outlives its re-registration and a
    restart; ``[]`` puts it in no partition; ``null`` clears the admin's value. The scheduler sees it in its next
    pass; jobs running on the node go on."""
    out = ctx.store.set_node_partitions(name, body.partitions)
    if ctx.controller is not None:
        ctx.controller.nodes_changed()
    return out
