"""Accounting: the usage report (chip-hours, useful and lost work, energy, cost) per tenant, queue, model, node or
job. A tenant sees only its own usage; an admin sees everyone's."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from suanli.accounting.report import parse_by, parse_since
from suanli.api.deps import CtxDep, Who, tenant_scope
from suanli.api.models import ERRORS, UsageReport
from suanli.control.usage import make_report
from suanli.errors import SuanliError

router = APIRouter(tags=["accounting"], responses=ERRORS)


@router.get("/v1/report", response_model=UsageReport, response_model_exclude_unset=False)
def report(p: Who, ctx: CtxDep,
           since: Annotated[str, Query(max_length=64, description="30d, 12h, 2w or an ISO date")] = "30d",
           until: Annotated[str | None, Query(max_length=64, description="as since; default now")] = None,
           by: Annotated[str, Query(max_length=64, description="comma-separated: tenant, queue, model, node, "
                                    "llm, kind, job; empty: one total row")] = "",
           series_step_s: Annotated[float | None, Query(ge=60, le=30 * 86400, description="also the usage "
                                                        "over time in buckets of this many seconds")] = None
           ) -> dict[str, Any]:
    """The accounting report of the usage records ending in the window."""
    now = time.time()
    try:
        t0 = parse_since(since, now, name="since")
        t1 = parse_since(until, now, name="until") if until else now
        keys = parse_by(by)
    except SuanliError as e:
        raise HTTPException(422, str(e).replace("--", "")) from None
    if t1 < t0:
        raise HTTPException(422, "until: before since")
    acct = ctx.metrics.accounting
    return make_report(ctx.store, since=t0, until=t1, by=keys, acct=acct, tenant=tenant_scope(p),
                       series_step_s=series_step_s)
