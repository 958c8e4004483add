"""What every route shares: the application context (store, controller, metrics, data directory), the caller's
identity from its bearer token, and the validated path and query types."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from suanli.api.batch import Batcher
from suanli.control.logs import FollowerLimit
from suanli.control.metrics import Metrics
from suanli.control.store import Principal, Store
from suanli.workload.spec import Job
from suanli.workload.states import WAITING

WAITING_STATES = frozenset(s.value for s in WAITING)

MAX_ID = 2**63 - 1
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NODE = r"^[^\x00-\x1f/]{1,255}$"  # host names: no control characters
PARTITION = NAME  # partition names: as queues and jobs name them


class ControllerView(Protocol):
    """What the API asks of the controller (it never reaches into its scheduler)."""

    @property
    def serving(self) -> bool: ...

    def never_fits(self, job: Job) -> str | None: ...

    def wait_reason(self, job_id: int) -> tuple[str, str] | None: ...

    def nodes_changed(self) -> None: ...


@dataclass
class Ctx:
    store: Store
    metrics: Metrics
    controller: ControllerView | None = None
    data_dir: Path | None = None  # where job logs live (None: no logs)
    followers: FollowerLimit = field(default_factory=FollowerLimit)  # concurrent log followers per tenant
    services: Any = None  # the service manager (control/services.py); None: no services, no gateway
    metrics_token: bool = False  # /metrics asks for a bearer token
    batcher: Batcher = field(init=False)  # group commit of submissions

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.store)

    def with_reason(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as the API returns it: a waiting job gets the scheduler's ``reason`` (a code) and ``reason_detail``
        (the sentence) from the last pass; other jobs keep their stored ``reason`` (why it ended)."""
        why = None
        if self.controller is not None and job["state"] in WAITING_STATES:
            why = self.controller.wait_reason(int(job["id"]))
        if why is not None:
            job["reason"], job["reason_detail"] = why
        else:
            job.setdefault("reason_detail", None)
        return job

    def controller_state(self) -> str:
        if self.controller is None:
            return "none"
        return "ready" if self.controller.serving else "starting"


def get_ctx(request: Request) -> Ctx:
    ctx: Ctx = request.app.state.ctx
    return ctx


bearer = HTTPBearer(auto_error=False)


async def principal(request: Request,
                    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The caller, from its bearer token: on the event loop when the store answered for the token lately (a sync
    dependency cost every request a worker-thread round trip), else the read in a worker thread."""
    if cred is None or not cred.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    store = get_ctx(request).store
    hit, p = store.authenticate_cached(cred.credentials)
    if not hit:
        p = await run_in_threadpool(store.authenticate, cred.credentials)
    if p is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return p


async def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    if not p.admin:
        raise HTTPException(403, "admin only")
    return p


def tenant_scope(p: Principal) -> str | None:
    """The tenant whose jobs ``p`` may see (None: all, for an admin)."""
    return None if p.admin else p.tenant


CtxDep = Annotated[Ctx, Depends(get_ctx)]
Who = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(admin)]
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="job id")]
Name = Annotated[str, PathParam(pattern=NAME)]
NodeName = Annotated[str, PathParam(pattern=NODE)]
