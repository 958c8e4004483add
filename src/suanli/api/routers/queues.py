"""Queues: weights, quotas per accelerator model, borrowing. Everyone reads them; admins change them."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from typing import Any

from fastapi import APIRouter

from suanli.api.deps import Admin, CtxDep, Name, Who
from suanli.api.models import ERRORS, ErrorOut, Queue, QueueIn, QueueUpdate, QueueUsage

router = APIRouter(tags=["admin"], responses=ERRORS)
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut, "description": "admin only"}}


@router.get("/v1/queues", response_model=list[Queue])
def list_queues(p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    return ctx.store.list_queues()


@router.post("/v1/queues", status_code=201, response_model=Queue,
             responses={**FORBIDDEN, 409: {"model": ErrorOut, "description": "the queue exists"}})
def create_queue(q: QueueIn, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    return ctx.store.create_queue(q.name, q.weight, q.quota, q.borrow, q.partitions)


@router.patch("/v1/queues/{name}", response_model=Queue,
              responses={**FORBIDDEN, 404: {"model": ErrorOut, "description": "no such queue"}})
def update_queue(name: Name, q: QueueUpdate, p: Admin, ctx: CtxDep) -> dict[str, Any]:
    return ctx.store.update_queue(name, q.model_dump(exclude_none=True))


@router.get("/v1/queues/usage", response_model=list[QueueUsage])
def queue_usage(p: Who, ctx: CtxDep) -> list[dict[str, Any]]:
    """Each queue's devices in use against its quota per accelerator model, what it borrows beyond the quota, and
    its running and waiting jobs."""
    usage = ctx.store.queue_usage(None if p.admin else p.tenant)
    out = []
    for q in ctx.store.list_queues():
        u = usage.get(q["name"], {"used": {}, "running": 0, "pending": 0})
        quota = q["quota"] or {}
        borrowed = {}
        for m, n in u["used"].items() if quota else ():  # a queue with no quota at all: nothing to borrow against
            over = n - quota.get(m, quota.get("*", 0))
            if over > 0:
                borrowed[m] = over
        out.append({**q, "used": u["used"], "borrowed": borrowed, "running": u["running"], "pending": u["pending"]})
    return out
