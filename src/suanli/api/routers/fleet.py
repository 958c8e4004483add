"""The fleet at a glance: every device's state and the jobs on it, totals by vendor and model."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import functools
import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from suanli.api.deps import CtxDep, Who
from suanli.api.models import ERRORS, Fleet
from suanli.catalog.accelerators import accelerator, is_known_accelerator

router = APIRouter(tags=["nodes"], responses=ERRORS)
STATES = ("busy", "free", "drained", "unhealthy", "lost")


@functools.lru_cache(maxsize=1024)
def vendor_of(model: str) -> str:
    return accelerator(model).vendor if model and is_known_accelerator(model) else "unknown"


def fleet_view(raw: dict[str, Any], tenant: str | None) -> dict[str, Any]:
    """``Store.fleet()`` as the caller may see it (a tenant: only its own jobs), with totals by vendor and model."""
    jobs = {str(k): v for k, v in raw["jobs"].items() if tenant is None or v["tenant"] == tenant}
    totals: dict[str, dict[str, Any]] = {}
    for n in raw["nodes"]:
        if tenant is not None:
            n["devices"] = [[i, m, st, [j for j in js if str(j) in jobs]] for i, m, st, js in n["devices"]]
        for _, m, st, _ in n["devices"]:
            t = totals.get(m)
            if t is None:
                t = totals[m] = {"vendor": vendor_of(m), "model": m, "total": 0, **dict.fromkeys(STATES, 0)}
            t[st] += 1
    for t in totals.values():
        t["total"] = sum(t[s] for s in STATES)
    return {"nodes": raw["nodes"], "jobs": jobs,
            "totals": sorted(totals.values(), key=lambda t: (t["vendor"], t["model"]))}


@router.get("/v1/fleet", response_model=Fleet)
async def fleet(p: Who, ctx: CtxDep) -> Response:
    """Every node (by rack) and device with its state and the running jobs on it; a tenant sees which devices are
    busy but only its own jobs."""

    def build() -> bytes:
        # built from the store's rows as they are (a test checks them against the Fleet schema): validating 10,000
        # device tuples through the response model would cost several times the query
        return json.dumps(fleet_view(ctx.store.fleet(), None if p.admin else p.tenant),
                          separators=(",", ":")).encode()

    return Response(await run_in_threadpool(build), media_type="application/json")
