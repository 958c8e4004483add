"""``JobSpec``: what a user submits (validated with pydantic), and ``Job``: the scheduler's compact record.

YAML shape, familiar from Kubernetes and Slurm::

    name: llama-sft
    tenant: nlp
    queue: research
    priority: 10
    kind: train
    resources: {accelerators: 16, model: [BR100, H100], per_node: 8, cpu: 64, memory: 512Gi}
    expected_runtime: 6h
    command: ["python", "train.py"]
    env: {EPOCHS: "3"}

``accelerators`` may be a fraction below 1 (``0.25``) or ``milli: 250`` for a shared slice of one device.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from suanli.catalog.accelerators import resolve_accelerator
from suanli.fleet.loaders import parse_memory_mib

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$", re.I)
_DUR_S = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_duration_s(v: str | int | float) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``2d``, ``100ms`` -> seconds."""
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("duration must not be negative")
        return float(v)
    m = _DUR_RE.match(v)
    if not m:
        raise ValueError(f"not a duration: {v!r} (use e.g. 90s, 15m, 6h, 2d)")
    return float(m.group(1)) * _DUR_S[(m.group(2) or "s").lower()]


class JobKind(StrEnum):
    TRAIN = "train"
    SERVE = "serve"
    BATCH = "batch"
    DEV = "dev"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: Annotated[float, Field(ge=0, le=1_000_000)] = 0
    milli: Annotated[int | None, Field(ge=1, le=1000)] = None
    model: list[str] | None = Field(default=None, description="acceptable accelerator models; omit for any")
    per_node: Annotated[int | None, Field(ge=1, le=1024)] = None
    cpu: Annotated[float, Field(ge=0, le=1_000_000)] = 0
    memory: str | int | float = 0

    @field_validator("model", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        if v is None or v == "any" or v == ["any"]:
            return None
        if isinstance(v, str):
            v = [x for x in (p.strip() for p in v.split(",")) if x]
        if not isinstance(v, list) or not v:
            raise ValueError("model must be a name, a list of names, or 'any'")
        out = []
        for name in v:
            out.append(resolve_accelerator(str(name)))
        return list(dict.fromkeys(out))

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | float) -> str | int | float:
        parse_memory_mib(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> Resources:
        a = self.accelerators
        if self.milli is not None:
            if a not in (0, 1):
                raise ValueError("milli is a share of ONE device: leave accelerators at 1 (or out)")
        elif 0 < a < 1:
            if round(a * 1000) < 1:
                raise ValueError("a fractional request must be at least 0.001 of a device")
        elif a != int(a):
            raise ValueError("more than one device must be a whole number of devices")
        if self.per_node is not None and self.device_count and self.per_node > self.device_count:
            raise ValueError(f"per_node ({self.per_node}) exceeds the number of accelerators ({self.device_count})")
        return self

    @property
    def device_count(self) -> int:
        if self.milli is not None:
            return 1
        a = self.accelerators
        return 1 if 0 < a < 1 else int(a)

    @property
    def milli_per_device(self) -> int:
        if self.milli is not None:
            return self.milli
        a = self.accelerators
        return round(a * 1000) if 0 < a < 1 else 1000


class JobSpec(BaseModel):
    """A job as a user submits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    tenant: str = "default"
    queue: str = "default"
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    kind: JobKind = JobKind.BATCH
    resources: Resources = Field(default_factory=Resources)
    gang: bool | None = Field(default=None, description="all-or-nothing; default true for multi-device jobs")
    expected_runtime: float | None = Field(default=None, description="seconds, or 90s / 15m / 6h / 2d")
    preemptible: bool = True
    max_retries: Annotated[int, Field(ge=0, le=100)] = 0
    llm: str | None = Field(default=None, description="LLM the job trains or serves (for the planner)")
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", "tenant", "queue")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-128 characters: letters, digits, '.', '_' or '-', starting alphanumeric")
        return v

    @field_validator("expected_runtime", mode="before")
    @classmethod
    def _runtime(cls, v: Any) -> Any:
        return None if v is None else parse_duration_s(v)

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: Any) -> Any:
        if isinstance(v, str):
            import shlex

            return shlex.split(v)
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)):
                    raise ValueError(f"invalid environment variable name {k!r}")
                out[str(k)] = "" if x is None else str(x)
            return out
        return v

    @property
    def is_gang(self) -> bool:
        return self.gang if self.gang is not None else self.resources.device_count > 1

    def to_job(self, job_id: int | str, submit_time: float = 0.0) -> Job:
        r = self.resources
        return Job(
            id=job_id,
            tenant=self.tenant,
            queue=self.queue,
            priority=self.priority,
            submit_time=submit_time,
            count=r.device_count,
            milli=r.milli_per_device,
            models=tuple(r.model) if r.model else None,
            per_node=r.per_node,
            cpu_milli=int(r.cpu * 1000),
            mem_mib=parse_memory_mib(r.memory) if r.memory else 0,
            gang=self.is_gang,
            expected_runtime=self.expected_runtime,
            kind=self.kind.value,
            preemptible=self.preemptible,
        )


_seq = itertools.count()


@dataclass(slots=True)
class Job:
    """The scheduler's compact view of a job: what it asks for and what the policies need to order it.

    ``cpu_milli`` and ``mem_mib`` are for the whole job; a multi-node job gets them split in proportion to the
    devices it has on each node.
    """

    id: int | str
    count: int  # devices (0 = CPU-only)
    milli: int = 1000  # share of each device, 1000 = whole device
    models: tuple[str, ...] | None = None  # acceptable accelerator models (None = any)
    per_node: int | None = None
    cpu_milli: int = 0
    mem_mib: int = 0
    gang: bool = True
    priority: int = 0
    queue: str = "default"
    tenant: str = "default"
    submit_time: float = 0.0
    expected_runtime: float | None = None
    attained: float = 0.0  # device-seconds of service received so far (LAS)
    kind: str = "batch"
    preemptible: bool = True
    seq: int = field(default_factory=lambda: next(_seq))  # tie-break: submission order

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        if not 1 <= self.milli <= 1000:
            raise ValueError("milli must be within 1..1000")
        if self.milli < 1000 and self.count != 1:
            raise ValueError("a fractional request (milli < 1000) is for exactly one device")
        if self.per_node is not None and self.per_node < 1:
            raise ValueError("per_node must be positive")

    @property
    def devices_equiv(self) -> float:
        """Devices this job occupies, fractional shares counted as fractions."""
        return self.count * self.milli / 1000.0
