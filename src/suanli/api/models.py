"""Request and response models of the API: every JSON answer has one, so the OpenAPI schema is typed.

The response models list exactly the keys the API has always returned (users' scripts read them); a key the store
returns that is not listed here is dropped, and a test checks real answers against these models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from suanli.api.deps import NAME
from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import SuanliError

Count = Annotated[int, Field(ge=0, le=10_000_000)]


# -- requests --------------------------------------------------------------------------------------------------
def _resolve_quota(v: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, n in v.items():
        if k == "*":
            out[k] = n
            continue
        try:
            out[resolve_accelerator(k)] = n
        except SuanliError as e:
            raise ValueError(str(e)) from None
    return out


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    weight: float = Field(1.0, gt=0, le=1e6)
    quota: dict[str, Count] = Field(default_factory=dict,
                                    description="devices guaranteed per accelerator model ('*' for any)")
    borrow: bool = True

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int]) -> dict[str, int]:
        return _resolve_quota(v)


class QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float | None = Field(None, gt=0, le=1e6)
    quota: dict[str, Count] | None = None
    borrow: bool | None = None

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        return None if v is None else _resolve_quota(v)


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)


# -- answers ---------------------------------------------------------------------------------------------------
class FieldError(BaseModel):
    field: str = Field(description="where: body.resources.accelerators, query.limit...")
    message: str


class ErrorOut(BaseModel):
    detail: str = Field(description="one line naming the field and what is wrong with it")
    errors: list[FieldError] | None = Field(None, description="each invalid field (validation errors only)")


class JobSummary(BaseModel):
    id: int
    name: str
    tenant: str
    queue: str
    priority: int
    state: str = Field(description="pending, running, succeeded, failed, cancelled...")
    submit_time: float = Field(description="Unix time")
    updated_at: float
    attempts: int
    failures: int = Field(description="failed attempts (counted against max_retries)")
    not_before: float | None = Field(description="retry backoff: not started before this time")
    cancel_requested: bool
    exit_code: int | None
    reason: str | None


class JobSubmitted(JobSummary):
    spec: dict[str, Any] = Field(description="the job as submitted (validated)")


class Attempt(BaseModel):
    n: int
    started_at: float
    ended_at: float | None
    placement: dict[str, Any]
    procs: list[Any] | None
    pgid: int | None
    exit_code: int | None
    outcome: str | None = Field(description="succeeded, failed, cancelled, preempted, stopped, lost, aborted, "
                                "spawn-failed, node-lost")
    stop_reason: str | None = Field(description="why it was stopped: cancel, preempt, shutdown, rank-failed, "
                                    "node-lost, device-unhealthy")


class JobDetail(JobSubmitted):
    attempt_list: list[Attempt]


class JobPage(BaseModel):
    items: list[JobSummary]
    next: int | None = Field(description="cursor for the next page ('after'), None on the last page")


class JobEvent(BaseModel):
    at: float
    kind: str
    message: str


class Node(BaseModel):
    name: str
    accelerator: str = Field(description="accelerator model ('' for CPU only)")
    devices: int
    cpu_milli: int
    memory_mib: int
    domain: str
    rack: str
    declared: bool
    drained: bool
    updated_at: float
    status: str = Field(description="up, or lost (the executor does not report it: nothing is placed on it)")
    last_seen: float | None


class Device(BaseModel):
    node: str
    local_index: int
    model: str
    uuid: str | None
    memory_mib: int | None
    declared: bool
    health: str = Field(description="healthy or unhealthy (unhealthy devices are drained)")
    health_reason: str | None


class Queue(BaseModel):
    name: str
    weight: float
    quota: dict[str, int]
    borrow: bool
    updated_at: float


class Tenant(BaseModel):
    name: str
    created_at: float


class TenantCreated(Tenant):
    token: str = Field(description="the tenant's first token (shown once, stored hashed)")


class TenantToken(BaseModel):
    tenant: str
    token: str


class Health(BaseModel):
    ok: bool
    controller: str = Field(description="ready, starting or none")
    virtual: dict[str, Any] | None = Field(default=None, description="a virtual fleet (suanli up --virtual): its "
                                           "speed (virtual seconds per wall second), size and faults")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": d}
    for code, d in ((401, "no or an invalid bearer token"), (422, "invalid input (the field is named)"))
}
