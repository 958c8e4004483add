"""``ServiceSpec``: a long-running, load-following inference service (job kind ``service``).

YAML shape::

    name: mock
    kind: service
    tenant: default
    queue: default
    priority: 10                      # replicas up to `min` run at this priority (may preempt lower batch jobs)
    model: mock-llm                   # the `model` the OpenAI-style /v1/... routes choose it by (default: name)
    llm: qwen2.5-7b                   # catalog LLM behind it (for `plan`)
    command: [python, -m, suanli.serve.mock, --model, mock-llm]   # serves HTTP on $PORT
    resources: {accelerators: 1, cpu: 0.5}                         # per replica (a gang of N devices)
    replicas: {min: 1, max: 4}        # `initial` defaults to min (or the planner's count with `plan`)
    readiness: {path: /health, period: 1s, timeout: 2s}
    rollout: {max_surge: 1, max_unavailable: 0}
    autoscaling: {target_ongoing_requests: 2, stable_window: 60s, panic_window: 6s, panic_threshold: 2}
    plan: {accelerator: H100, qps: 20, input_tokens: 2000, output_tokens: 500}   # optional sizing from the planner

Each replica becomes an ordinary job (kind ``serve``) with ``PORT`` in its environment (and ``SUANLI_PYTHON``, the
interpreter suanli runs on), so the scheduler places it, the queue's quota counts it and the controller restarts it
like any job.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from suanli.workload.spec import (
    _NAME_RE,
    Arg,
    Count,
    EnvName,
    EnvValue,
    JobKind,
    JobSpec,
    Number,
    Resources,
    Text,
    parse_duration_s,
)

MAX_REPLICAS = 1000


def _dur(v: Any) -> Any:
    return None if v is None else parse_duration_s(v)


class Replicas(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: Annotated[Count, Field(ge=0, le=MAX_REPLICAS)] = 1
    max: Annotated[Count, Field(ge=1, le=MAX_REPLICAS)] | None = None
    initial: Annotated[Count, Field(ge=0, le=MAX_REPLICAS)] | None = None

    @model_validator(mode="after")
    def _order(self) -> Replicas:
        hi = self.max if self.max is not None else max(self.min, 1)
        if self.min > hi:
            raise ValueError(f"min ({self.min}) is above max ({hi})")
        if self.initial is not None and not self.min <= self.initial <= hi:
            raise ValueError(f"initial ({self.initial}) must be between min ({self.min}) and max ({hi})")
        return self

    @property
    def upper(self) -> int:
        return self.max if self.max is not None else max(self.min, 1)


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Text = "/health"
    period: float = Field(default=1.0, description="seconds between probes (1s, 500ms)")
    timeout: float = Field(default=2.0, description="seconds a probe may take")
    failure_threshold: Annotated[Count, Field(ge=1, le=100)] = 2

    _d = field_validator("period", "timeout", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("period", "timeout")
    @classmethod
    def _pos(cls, v: float) -> float:
        if not 0.05 <= v <= 600:
            raise ValueError("must be between 50ms and 600s")
        return v


class Rollout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_surge: Annotated[Count, Field(ge=0, le=MAX_REPLICAS)] = 1
    max_unavailable: Annotated[Count, Field(ge=0, le=MAX_REPLICAS)] = 0

    @model_validator(mode="after")
    def _progress(self) -> Rollout:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0 (a rollout could never progress)")
        return self


class Autoscaling(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    target_ongoing_requests: Annotated[Number, Field(gt=0, le=100_000)] = 2.0
    stable_window: float = Field(default=60.0, description="seconds (60s)")
    panic_window: float = Field(default=6.0, description="seconds (6s)")
    panic_threshold: Annotated[Number, Field(ge=1, le=1000)] = 2.0
    engine_queue: StrictBool = Field(default=True, description="also read the engine's running + waiting requests "
                                     "from its /metrics (vLLM names)")
    metrics_path: Text = "/metrics"

    _d = field_validator("stable_window", "panic_window", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @model_validator(mode="after")
    def _windows(self) -> Autoscaling:
        if not 0 < self.panic_window <= self.stable_window <= 86400:
            raise ValueError("need 0 < panic_window <= stable_window <= 1d")
        return self


class PlanSizing(BaseModel):
    """Size replicas with ``suanli plan serve``: chips per replica and the initial replica count."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerator: Text
    qps: Annotated[Number, Field(gt=0, le=1e7)]
    input_tokens: Annotated[Number, Field(gt=0, le=1e7)] = 2000
    output_tokens: Annotated[Number, Field(ge=1, le=1e7)] = 500


class ServiceSpec(BaseModel):
    """A service as a user submits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["service"] = "service"
    tenant: str = "default"
    queue: str = "default"
    priority: Annotated[Count, Field(ge=-1000, le=1000)] = 0
    model: Text | None = Field(default=None, description="model name clients send (default: the service name)")
    llm: Text | None = Field(default=None, description="catalog LLM it serves (for the planner)")
    resources: Resources = Field(default_factory=Resources)
    command: list[Arg]
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    replicas: Replicas = Field(default_factory=Replicas)
    readiness: Readiness = Field(default_factory=Readiness)
    rollout: Rollout = Field(default_factory=Rollout)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    plan: PlanSizing | None = None
    max_retries: Annotated[Count, Field(ge=0, le=100)] = 3
    preemptible: StrictBool = False
    termination_grace: float | None = None

    _grace = field_validator("termination_grace", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @field_validator("name", "tenant", "queue")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("must be 1-128 characters: letters, digits, '.', '_' or '-', starting alphanumeric")
        return v

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: Any) -> Any:
        if isinstance(v, str):
            import shlex

            return shlex.split(v)
        return v

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v or not v[0]:
            raise ValueError("a service needs a command that serves HTTP on $PORT")
        return v

    @field_validator("env")
    @classmethod
    def _no_port(cls, v: dict[str, str]) -> dict[str, str]:
        if "PORT" in v:
            raise ValueError("PORT is assigned by suanli per replica; do not set it")
        return v

    @property
    def served_model(self) -> str:
        return self.model or self.name

    @property
    def initial_replicas(self) -> int:
        r = self.replicas
        return r.initial if r.initial is not None else r.min

    def replica_job(self, index: int, port: int, *, above_min: bool) -> JobSpec:
        """The job spec of replica ``index`` listening on ``port``. Replicas above ``min`` (autoscaled) run at
        ``min(priority, 0)`` and are preemptible: they never preempt batch jobs and may be preempted."""
        return JobSpec(
            name=f"{self.name}-r{index}"[:128], tenant=self.tenant, queue=self.queue,
            priority=min(self.priority, 0) if above_min else self.priority, kind=JobKind.SERVE,
            resources=self.resources, preemptible=True if above_min else self.preemptible,
            max_retries=self.max_retries, llm=self.llm, command=self.command,
            env={**self.env, "PORT": str(port), "SUANLI_SERVICE": self.name, "SUANLI_REPLICA": str(index),
                 "SUANLI_PYTHON": sys.executable},
            termination_grace=self.termination_grace)

    def with_plan(self) -> tuple[ServiceSpec, dict[str, Any] | None]:
        """With ``plan``: chips per replica and the initial count from the planner (``suanli plan serve``);
        returns the sized spec and the planner's row (None without ``plan``). Needs ``llm``."""
        if self.plan is None:
            return self, None
        from suanli.errors import SpecError
        from suanli.perf.api import plan_serve

        if not self.llm:
            raise SpecError("plan: needs `llm` (the catalog model the service runs)")
        p = self.plan
        row = plan_serve(self.llm, [p.accelerator], input_tokens=p.input_tokens, output_tokens=p.output_tokens,
                         qps=p.qps)[0]
        if row.reason or row.chips_per_replica is None or row.replicas is None:
            raise SpecError(f"plan: the planner cannot size {self.llm} on {p.accelerator}: {row.reason}")
        upper = self.replicas.upper
        initial = min(max(row.replicas, self.replicas.min), upper)
        res = self.resources.model_copy(update={"accelerators": row.chips_per_replica,
                                                "model": self.resources.model or [row.accelerator]})
        sized = self.model_copy(update={"resources": Resources.model_validate(res.model_dump()),
                                        "replicas": Replicas(min=self.replicas.min, max=upper, initial=initial)})
        return sized, row.to_dict()
