"""Request and response models of the API: every JSON answer has one, so the OpenAPI schema is typed.

The response models list exactly the keys the API has always returned (users' scripts read them); a key the store
returns that is not listed here is dropped, and a test checks real answers against these models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from suanli.api.deps import NAME, PARTITION
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
    partitions: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        None, min_length=1, max_length=256, description="partitions its jobs may use (a job may name its own); "
        "omit for any node")

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int]) -> dict[str, int]:
        return _resolve_quota(v)


class QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float | None = Field(None, gt=0, le=1e6)
    quota: dict[str, Count] | None = None
    borrow: bool | None = None
    partitions: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        None, max_length=256, description="[] puts the queue back on any node")

    @field_validator("quota")
    @classmethod
    def _models(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        return None if v is None else _resolve_quota(v)


class NodeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partitions: list[Annotated[str, Field(pattern=PARTITION)]] | None = Field(
        ..., max_length=256, description="the partitions the node belongs to from now on, replacing the ones it "
        "reports (suanli up --partition, the Ray label suanli.io/partitions, the fleet file) until cleared; "
        "[]: in no partition; null: clear, the node's own apply again")


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
    reason: str | None = Field(description="a waiting job: why it waits, a code (capacity, topology, quota, behind, "
                                           "reserved, never, backoff, window); an ended one: why it ended")
    reason_detail: str | None = Field(description="a waiting job: the reason as a sentence (None otherwise)")


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
    lost_device_s: float | None = Field(description="node-lost: device-seconds of work since the last checkpoint")


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
    partitions: list[str] | None = Field(None, description="the partitions the node belongs to, the ones the "
                                         "scheduler uses (None: none): partitions_override when set, else "
                                         "partitions_reported")
    partitions_reported: list[str] | None = Field(None, description="the partitions the node reports (suanli up "
                                                  "--partition, the Ray label suanli.io/partitions, the fleet file)")
    partitions_override: list[str] | None = Field(None, description="the partitions an admin set (PATCH "
                                                  "/v1/nodes/{name}); they win until cleared (None: none set)")


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
    partitions: list[str] | None = None
    updated_at: float


class Tenant(BaseModel):
    name: str
    created_at: float


class TenantCreated(Tenant):
    token: str = Field(description="the tenant's first token (shown once, stored hashed)")


class TenantToken(BaseModel):
    tenant: str
    token: str


class TokenInfo(BaseModel):
    """A token as listed: never its value (shown once) nor its hash."""

    id: int
    tenant: str | None
    admin: bool
    label: str
    created_at: float


class Health(BaseModel):
    ok: bool
    controller: str = Field(description="ready, starting or none")
    virtual: dict[str, Any] | None = Field(default=None, description="a virtual fleet (suanli up --virtual): its "
                                           "speed (virtual seconds per wall second), size and faults")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": d}
    for code, d in ((401, "no or an invalid bearer token"), (422, "invalid input (the field is named)"))
}


# -- dashboard reads -------------------------------------------------------------------------------------------
DeviceCell = tuple[int, str, str, list[int]]


class FleetNode(BaseModel):
    name: str
    rack: str
    domain: str
    accelerator: str
    drained: bool
    lost: bool
    devices: list[DeviceCell] = Field(description="[local index, model, state, job ids]; state is busy, free, "
                                                  "drained, unhealthy or lost; a tenant sees only its own job ids")


class FleetJob(BaseModel):
    name: str
    tenant: str
    queue: str


class FleetTotal(BaseModel):
    vendor: str
    model: str
    total: int
    busy: int
    free: int
    drained: int
    unhealthy: int
    lost: int


class Fleet(BaseModel):
    nodes: list[FleetNode] = Field(description="by rack, then name")
    jobs: dict[str, FleetJob] = Field(description="the running jobs the caller may see, by id")
    totals: list[FleetTotal] = Field(description="devices by vendor and model")


class QueueUsage(Queue):
    used: dict[str, float] = Field(description="devices in use by running jobs, per accelerator model")
    borrowed: dict[str, float] = Field(description="devices in use beyond the quota, per model (queues with a quota)")
    running: int
    pending: int = Field(description="waiting jobs (the caller's own, for a tenant)")


class PlanRow(BaseModel):
    """One accelerator's row of a plan (the planner's fields; see ``suanli plan --json``)."""

    model_config = ConfigDict(extra="allow")
    accelerator: str
    vendor: str
    model: str
    precision: str | None
    chips: int | None
    tokens_per_s: float | None
    usd_per_chip_hour: float | None
    confidence: str | None
    reason: str | None = Field(description="why there is no plan for this accelerator (None: there is one)")
    notes: list[str]


class Me(BaseModel):
    admin: bool
    tenant: str | None = Field(description="None for an admin token")


class Sample(BaseModel):
    at: float = Field(description="Unix time (bucket start for averages)")
    total: float = Field(description="devices the controller schedules")
    allocated: float = Field(description="devices allocated (fractions count as fractions)")
    running: float
    pending: float = Field(description="waiting jobs")
    reasons: dict[str, float] = Field(description="waiting jobs by reason code")


class History(BaseModel):
    window: str
    step_s: float | None = Field(description="seconds between samples (None: not known)")
    samples: list[Sample]


# -- accounting ------------------------------------------------------------------------------------------------
class UsageRow(BaseModel):
    """One row of the accounting report: the grouping key(s) of ``by`` (the others are absent), then the figures
    (null where unknown: a price or TDP missing from the catalog and the fleet file)."""

    model_config = ConfigDict(extra="forbid")
    tenant: str | None = None
    queue: str | None = None
    model: str | None = None
    node: str | None = None
    llm: str | None = Field(default=None, description="the LLM the jobs ran (their spec's `llm`; \"\": none)")
    kind: str | None = None
    job: int | None = None
    job_name: str | None = None
    chip_hours: float
    useful_chip_hours: float
    lost_chip_hours: float
    lost_by_cause: dict[str, float] = Field(description="lost chip-hours per attempt outcome")
    goodput: float | None = Field(description="useful / allocated chip-hours")
    utilisation: float | None = Field(description="allocated / (devices x window); --by model or node only")
    energy_kwh: float | None = Field(description="facility energy (measured or modelled board energy x PUE)")
    energy_measured_share: float | None
    usd: float | None = Field(description="amortised price + energy at the tariff + node-hour overheads")
    usd_per_useful_chip_hour: float | None
    serve_usd: float | None = Field(default=None, description="dollars of the row's service replicas")
    tokens: int | None = Field(description="tokens served through the gateway (prompt + completion, as the "
                               "engines reported them); null: none recorded")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usd_per_million_tokens: float | None = Field(description="serve_usd per million tokens")
    records: int


class UsageSeriesPoint(BaseModel):
    tenant: str
    model: str
    at: float = Field(description="bucket start (epoch seconds), by the records' end time")
    chip_s: float


class UsageReport(BaseModel):
    since: float
    until: float
    by: list[str]
    rows: list[UsageRow]
    total: UsageRow
    series: list[UsageSeriesPoint] | None = None
    by_model: list[UsageRow] | None = None
    mix: list[UsageRow] | None = Field(default=None, description="rows by (llm, kind, model): the work mix "
                                       "'suanli plan migrate' re-plans")

