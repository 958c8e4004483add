"""Over time: the controller's samples of allocation, running and waiting jobs (fleet-wide figures, no job names)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import time
from typing import Any, Literal

from fastapi import APIRouter

from suanli.api.deps import CtxDep, Who
from suanli.api.models import ERRORS, History
from suanli.control.store import HISTORY_STEPS_S

router = APIRouter(tags=["meta"], responses=ERRORS)
WINDOWS = {"hour": (3600.0, 0), "day": (86400.0, 1), "week": (7 * 86400.0, 2)}


@router.get("/v1/history", response_model=History)
def history(p: Who, ctx: CtxDep, window: Literal["hour", "day", "week"] = "hour") -> dict[str, Any]:
    """Samples over the last hour (raw), day (five-minute averages) or week (hourly averages)."""
    span, level = WINDOWS[window]
    sampler = ctx.metrics.sampler
    step = HISTORY_STEPS_S[level] or (sampler.interval_s if sampler is not None else None)
    return {"window": window, "step_s": step, "samples": ctx.store.history(time.time() - span, level)}
