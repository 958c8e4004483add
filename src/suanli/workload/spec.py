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
``termination_grace`` (e.g. ``30s``) is how long the job's processes get between SIGTERM (cancel, preemption,
shutdown) and SIGKILL; default: the controller's.

Validation is strict where a typo should be an error: booleans must be booleans (``gang: "yes"`` is refused),
numbers must be numbers (``memory: true`` is refused), numbers must be finite, environment values must be scalars,
and every string that reaches a process (``command``, ``env``) must be one the kernel accepts (no NUL, no lone
surrogate, each argument and ``NAME=value`` under ``MAX_ARG_STRLEN``).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from suanli.catalog.accelerators import resolve_accelerator
from suanli.fleet.loaders import parse_memory_mib

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$", re.I)
_DUR_S = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch: "$" would accept a final "\n"
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
MAX_ARG_STRLEN = 32 * 4096  # Linux: the longest single argument or environment string, its final NUL included
MAX_GRACE_S = 3600.0
MAX_MEMORY_MIB = 2**53 - 1  # what a float (JSON, the scheduler's arrays) still holds exactly


def check_text(v: str) -> str:
    """A string that may reach a process or the database: no NUL, no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in v:
        raise ValueError("NUL characters are not allowed")
    m = _SURROGATE_RE.search(v)
    if m:
        raise ValueError(f"lone surrogate U+{ord(m.group()):04X} at character {m.start()}: not valid Unicode text")
    return v


def _arg(v: str) -> str:
    check_text(v)
    n = len(v.encode("utf-8")) + 1
    if n > MAX_ARG_STRLEN:
        raise ValueError(f"{n - 1} bytes: over the kernel's limit of {MAX_ARG_STRLEN - 1} bytes per argument")
    return v


def _env_value(v: Any) -> Any:
    """Scalars become strings (YAML ``EPOCHS: 3``); a mapping or a list is a mistake, not a string."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("must be a finite number or a string")
        return str(v)
    if isinstance(v, str):
        return v
    raise ValueError(f"must be a string or a number, not a {_kind(v)}")


def _env_name(v: Any) -> Any:
    if not isinstance(v, str) or not _ENV_NAME_RE.fullmatch(v):
        raise ValueError(f"invalid environment variable name {_show(v)}: letters, digits and '_', not starting "
                         "with a digit")
    return v


def _kind(v: Any) -> str:
    return "mapping" if isinstance(v, dict) else "list" if isinstance(v, list) else type(v).__name__


def _show(v: Any) -> str:
    return repr(v)[:80]


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    return v


Text = Annotated[str, AfterValidator(check_text)]
Arg = Annotated[str, AfterValidator(_arg)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(check_text)]
Count = Annotated[int, Field(strict=True)]  # no "3", no 3.0, no true
Number = Annotated[float, BeforeValidator(_no_bool), Field(strict=True, allow_inf_nan=False)]  # ints are fine


def parse_duration_s(v: str | int | float) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``2d``, ``100ms`` -> seconds (finite, not negative)."""
    if isinstance(v, bool):
        raise ValueError("not a duration: true/false (use e.g. 90s, 15m, 6h, 2d)")
    if isinstance(v, int | float):
        out = float(v)
        if not math.isfinite(out):
            raise ValueError("duration must be a finite number")
        if out < 0:
            raise ValueError("duration must not be negative")
        return out
    if not isinstance(v, str):
        raise ValueError(f"not a duration: a {_kind(v)} (use e.g. 90s, 15m, 6h, 2d)")
    m = _DUR_RE.fullmatch(v)
    if not m:
        raise ValueError(f"not a duration: {_show(v)} (use e.g. 90s, 15m, 6h, 2d)")
    out = float(m.group(1)) * _DUR_S[(m.group(2) or "s").lower()]
    if not math.isfinite(out):
        raise ValueError("duration must be a finite number")
    return out


class JobKind(StrEnum):
    TRAIN = "train"
    SERVE = "serve"
    BATCH = "batch"
    DEV = "dev"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: Annotated[Number, Field(ge=0, le=1_000_000)] = 0
    milli: Annotated[Count | None, Field(ge=1, le=1000)] = None
    model: list[str] | None = Field(default=None, description="acceptable accelerator models; omit for any")
    per_node: Annotated[Count | None, Field(ge=1, le=1024)] = None
    cpu: Annotated[Number, Field(ge=0, le=1_000_000)] = 0
    memory: str | int | float = Field(default=0, description="512Gi, 64GB, 2Ti or a number of GiB")

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
            if not isinstance(name, str):
                raise ValueError(f"model names are strings, not a {_kind(name)}")
            out.append(resolve_accelerator(check_text(name)))
        return list(dict.fromkeys(out))

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            what = "true/false" if isinstance(v, bool) else f"a {_kind(v)}"
            raise ValueError(f"must be a size like 512Gi or a number of GiB, not {what}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite size")
        try:
            mib = parse_memory_mib(v)
        except OverflowError:
            mib = MAX_MEMORY_MIB + 1
        if mib > MAX_MEMORY_MIB:
            raise ValueError(f"too large: {_show(v)} (at most {MAX_MEMORY_MIB} MiB)")
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


class Simulate(BaseModel):
    """How a virtual fleet (``suanli up --virtual``) runs the job: its simulated processes run ``duration``
    (default: ``expected_runtime``) and exit with ``exit_code``. Real executors ignore it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    duration: float | None = Field(default=None, description="seconds, or 90s / 15m / 6h / 2d")
    exit_code: Annotated[Count, Field(ge=0, le=255)] = 0

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration_s(v)


class JobSpec(BaseModel):
    """A job as a user submits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    tenant: str = "default"
    queue: str = "default"
    priority: Annotated[Count, Field(ge=-1000, le=1000)] = 0
    kind: JobKind = JobKind.BATCH
    resources: Resources = Field(default_factory=Resources)
    gang: StrictBool | None = Field(default=None, description="all-or-nothing; default true for multi-device jobs")
    expected_runtime: float | None = Field(default=None, description="seconds, or 90s / 15m / 6h / 2d")
    termination_grace: float | None = Field(
        default=None, description="seconds (or 30s, 2m) between SIGTERM and SIGKILL when the job is stopped; "
        f"at most {MAX_GRACE_S:g} s; default: the controller's")
    preemptible: StrictBool = True
    max_retries: Annotated[Count, Field(ge=0, le=100)] = 0
    llm: Text | None = Field(default=None, description="LLM the job trains or serves (for the planner)")
    partitions: list[str] | None = Field(default=None, description="partitions whose nodes it may use; omit for "
                                         "its queue's (or any)")
    speeds: dict[str, float] | None = Field(default=None, description="relative speed per accelerator model "
                                            "(heterogeneity-aware policies); omit to let the planner or the "
                                            "catalog say")
    command: list[Arg] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    processes: Literal["device", "node"] = Field(
        default="device", description="one process per device (torchrun style) or one per node (it starts its own "
        "per-device workers)")
    simulate: Simulate | None = Field(default=None, description="virtual fleets only: simulated runtime, exit code")

    @field_validator("name", "tenant", "queue")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("must be 1-128 characters: letters, digits, '.', '_' or '-', starting alphanumeric")
        return v

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("partitions: name at least one, or leave it out")
        for x in v:
            if not _NAME_RE.fullmatch(x):
                raise ValueError(f"partition name {x!r}: letters, digits, '.', '_' or '-', starting alphanumeric")
        return list(dict.fromkeys(v))

    @field_validator("speeds")
    @classmethod
    def _speeds(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        out: dict[str, float] = {}
        for k, x in v.items():
            if not (x > 0) or x == float("inf"):
                raise ValueError(f"speeds.{k}: a positive finite number")
            out[resolve_accelerator(k)] = float(x)
        return out

    @field_validator("expected_runtime", mode="before")
    @classmethod
    def _runtime(cls, v: Any) -> Any:
        return None if v is None else parse_duration_s(v)

    @field_validator("termination_grace", mode="before")
    @classmethod
    def _grace(cls, v: Any) -> Any:
        if v is None:
            return None
        g = parse_duration_s(v)
        if g > MAX_GRACE_S:
            raise ValueError(f"at most {MAX_GRACE_S:g} s")
        return g

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: Any) -> Any:
        if isinstance(v, str):
            import shlex

            check_text(v)
            return shlex.split(v)
        return v

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if v and not v[0]:
            raise ValueError("the program (the first item) must not be empty")
        return v

    @field_validator("env")
    @classmethod
    def _env_size(cls, v: dict[str, str]) -> dict[str, str]:
        for k, x in v.items():
            n = len(k.encode()) + 1 + len(x.encode("utf-8")) + 1
            if n > MAX_ARG_STRLEN:
                raise ValueError(f"{k}: NAME=value is {n - 1} bytes, over the kernel's limit of "
                                 f"{MAX_ARG_STRLEN - 1} bytes per environment string")
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
            partitions=tuple(self.partitions) if self.partitions else None,
            speeds=dict(self.speeds) if self.speeds else None,
            llm=self.llm,
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
    partitions: tuple[str, ...] | None = None  # partitions whose nodes it may use (None: its queue's, else any)
    # relative speed per accelerator model (work per second; a model left out: the cluster's default) - what a
    # heterogeneity-aware policy weighs; None: the job does not say
    speeds: dict[str, float] | None = None
    llm: str | None = None  # the LLM it trains or serves (the planner's per-chip speeds when ``speeds`` is None)
    seq: int = field(default_factory=lambda: next(_seq))  # tie-break: submission order
    # LAS starvation guard (Tiresias promotion): attained service at the last promotion to the top queue (the LAS
    # queue counts service from there) and when the job last went back to the queue (None: at submit_time)
    las_base: float = 0.0
    queued_at: float | None = None
    # run seconds on each accelerator model (index in the cluster), kept only for policies that ask (gavel)
    model_s: dict[int, float] | None = None

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
