"""The executor interface: what the controller asks of whatever runs a job's processes.

The controller decides (``sched``) and records (the store); an executor carries out exactly the placement it is
given and reports what happened. Implementations: :mod:`.local` (processes on this machine), the Ray executor
(processes on the nodes of a Ray cluster) and a virtual one (simulated, for the scale issue).

The contract, in the controller's order:

- :meth:`Executor.nodes`: the nodes the executor can run on now, with their devices and device health (its
  membership). The controller registers them and marks the others lost.
- :meth:`Executor.start`: start one attempt: every rank of :meth:`AttemptSpec.ranks` on its node with the
  environment of :func:`rank_env`. All ranks start or none (raise: nothing is left running). The controller has
  recorded the attempt before it calls this, and records :meth:`Handle.record` right after.
- :meth:`Executor.poll`: has the attempt ended, with which exit code. The first failing rank stops the others
  (gang semantics); an executor that loses a node sets ``handle.stopping = StopReason.NODE_LOST`` before it reports
  the end.
- :meth:`Executor.stop`: SIGTERM (or the executor's equivalent) now, SIGKILL after the grace period.
- :meth:`Executor.adopt`: after a controller restart, rebuild the handles of the attempts the store still marks
  running (from what :meth:`Handle.record` returned, and from what the executor can find by itself) and say, per
  attempt, whether all its ranks were started, some or none.
- :meth:`Executor.log_path`: where the log of one rank of one attempt can be read on this machine (an executor
  with remote ranks copies their output there as it comes).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from suanli.control.types import DeviceHealth, StopReason
from suanli.errors import SuanliError

__all__ = [
    "PARTITIONS_LABEL",
    "AdoptVerdict",
    "Adoption",
    "AttemptRecord",
    "AttemptSpec",
    "DeviceInfo",
    "Executor",
    "Handle",
    "NodeInfo",
    "NodeUnavailable",
    "RankPlan",
    "StopReason",
    "parse_partitions",
    "rank_env",
    "termination_grace",
]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    index: int  # local index, as the vendor's visible-devices variable counts
    model: str
    uuid: str | None = None
    memory_mib: int | None = None
    declared: bool = False
    health: DeviceHealth | None = None  # None: the executor does not know (the store's record stands)
    health_reason: str | None = None


PARTITIONS_LABEL = "suanli.io/partitions"  # Ray node label: the partitions a node belongs to, comma-separated
_PARTITION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # as queues and jobs name partitions


def parse_partitions(values: str | Sequence[str] | None, what: str = "--partition") -> tuple[str, ...]:
    """Partition names from ``values`` (each item may hold several, comma-separated; blanks ignored, duplicates
    dropped, order kept). A bad name raises :class:`SuanliError` naming ``what``."""
    items = [values] if isinstance(values, str) else list(values or ())
    out: dict[str, None] = {}
    for item in items:
        for x in str(item).split(","):
            x = x.strip()
            if not x:
                continue
            if not _PARTITION_RE.fullmatch(x):
                raise SuanliError(f"{what}: partition name {x!r}: 1-128 letters, digits, '.', '_' or '-', starting "
                                  "with a letter or digit")
            out[x] = None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as an executor sees it."""

    name: str
    devices: tuple[DeviceInfo, ...]
    cpu_milli: int
    memory_mib: int
    domain: str
    rack: str
    address: str = "127.0.0.1"  # where its ranks listen (MASTER_ADDR when rank 0 runs there)
    partitions: tuple[str, ...] = ()  # partitions it reports (suanli up --partition, Ray label, fleet file)

    @property
    def accelerator(self) -> str:
        return self.devices[0].model if self.devices else ""

    @property
    def declared(self) -> bool:
        return bool(self.devices) and all(d.declared for d in self.devices)

    def store_spec(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(node row, device rows) as :meth:`suanli.control.store.Store.upsert_node` takes them."""
        spec = {"name": self.name, "accelerator": self.accelerator, "devices": len(self.devices),
                "cpu_milli": self.cpu_milli, "memory_mib": self.memory_mib, "domain": self.domain, "rack": self.rack,
                "declared": self.declared, "partitions": list(self.partitions) or None}
        rows = [{"local_index": d.index, "model": d.model, "uuid": d.uuid, "memory_mib": d.memory_mib,
                 "declared": d.declared} for d in self.devices]
        return spec, rows


@dataclass(frozen=True, slots=True)
class RankPlan:
    """One process of an attempt."""

    rank: int
    node: str
    node_rank: int
    local_rank: int
    local_world: int
    devices: tuple[int, ...]  # local device indices the process sees (all of the job's devices on its node)


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """Attempt ``n`` of a job, placed by the scheduler: ``devices[i]`` are local indices on ``nodes[i]``."""

    job_id: int
    attempt_id: int
    n: int
    spec: dict[str, Any]  # the JobSpec as stored (command, env, name...)
    model: str  # accelerator model ("" for CPU-only)
    nodes: tuple[str, ...]
    devices: tuple[tuple[int, ...], ...]
    milli: int = 1000  # share of each device

    def ranks(self) -> list[RankPlan]:
        """One process per device of a whole-device job (torchrun style), one per node when the job asks for it
        (``processes: node``), one per node for a CPU-only or fractional job."""
        per_node = self.spec.get("processes", "device") == "node"
        out: list[RankPlan] = []
        for nr, (node, devs) in enumerate(zip(self.nodes, self.devices, strict=True)):
            k = 1 if per_node or not devs or self.milli < 1000 else len(devs)
            for lr in range(k):
                out.append(RankPlan(len(out), node, nr, lr, k, tuple(devs)))
        return out

    @property
    def world(self) -> int:
        return len(self.ranks())


def rank_env(a: AttemptSpec, r: RankPlan, world: int, master_addr: str, master_port: int,
             checkpoint_dir: str, work_dir: str) -> dict[str, str]:
    """The suanli and torchrun variables of one rank (the job's own ``env`` and the vendor's visible-devices
    variable are added by the executor)."""
    return {
        "SUANLI_JOB_ID": str(a.job_id), "SUANLI_JOB_NAME": str(a.spec.get("name", "")), "SUANLI_ATTEMPT": str(a.n),
        "SUANLI_CHECKPOINT_DIR": checkpoint_dir, "SUANLI_WORK_DIR": work_dir,
        "SUANLI_DEVICES": ",".join(map(str, r.devices)), "SUANLI_DEVICE_MILLI": str(a.milli),
        "WORLD_SIZE": str(world), "RANK": str(r.rank), "LOCAL_RANK": str(r.local_rank),
        "LOCAL_WORLD_SIZE": str(r.local_world), "NODE_RANK": str(r.node_rank), "GROUP_RANK": str(r.node_rank),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
    }


def termination_grace(spec: dict[str, Any]) -> float | None:
    """The job's ``termination_grace`` in seconds (None: the executor's default)."""
    g = spec.get("termination_grace")
    return None if g is None else float(g)


@dataclass
class Handle:
    """A running (or adopted) attempt, as the controller holds it. Executors subclass it with their own state."""

    job_id: int
    attempt_id: int
    n: int
    stopping: StopReason | None = None  # why it is being stopped (None: it runs, or ends by itself)
    kill_at: float | None = None  # monotonic time of the SIGKILL after the grace period
    codes: dict[int, int | None] = field(default_factory=dict)  # rank -> exit code once ended (None: unknown)
    lost_at: float | None = None  # node-lost: wall-clock time the lost node was last heard of (lost work ends there)
    grace_s: float | None = None  # the job's termination_grace (None: the executor's)

    def record(self) -> tuple[list[Any], int | None]:
        """What the store keeps to find the processes again after a restart: (``procs`` JSON, ``pgid``)."""
        return [], None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """An attempt the store marks running, as :meth:`Executor.adopt` gets it after a restart."""

    job_id: int
    attempt_id: int
    n: int
    nodes: tuple[str, ...]
    devices: tuple[tuple[int, ...], ...]
    milli: int
    spec: dict[str, Any]
    procs: list[Any] | None  # Handle.record() as stored; None when the controller died before storing it
    pgid: int | None

    @property
    def world(self) -> int:
        return AttemptSpec(self.job_id, self.attempt_id, self.n, self.spec, "", self.nodes, self.devices,
                           self.milli).world


class NodeUnavailable(RuntimeError):
    """:meth:`Executor.start` could not reach a node of the placement (lost, or its agent is gone): the attempt is
    requeued without counting a failure, and the node is taken out of placement by the next membership check."""


class AdoptVerdict(StrEnum):
    ADOPTED = "adopted"  # every rank was started (alive, or ended with a known exit code): watch it
    NOT_STARTED = "not-started"  # no rank was ever started: requeue, nothing ran
    PARTIAL = "partial"  # some ranks started (the controller died while starting them): they were killed


@dataclass
class Adoption:
    verdict: AdoptVerdict
    handle: Handle | None  # for ADOPTED
    alive: bool = False  # some rank still runs (else it ended while the controller was down)
    started: int = 0  # ranks found started
    world: int = 0


class Executor(abc.ABC):
    """Runs attempts; see the module docstring for the contract."""

    grace_s: float = 5.0
    #: True when the executor reports nodes joining and leaving after start (the controller then polls nodes())
    dynamic_membership: bool = False

    @abc.abstractmethod
    def nodes(self) -> list[NodeInfo]:
        """The nodes this executor can run on now (membership), with their devices and device health."""

    @abc.abstractmethod
    def start(self, a: AttemptSpec) -> Handle:
        """Start every rank of ``a`` (all or none: on an error nothing of it is left running, and it raises)."""

    @abc.abstractmethod
    def poll(self, h: Handle) -> tuple[bool, int | None]:
        """(ended, exit code). The code is the first failing rank's (negative: killed by that signal), 0 when all
        succeeded, None when nobody knows. A failing rank stops the others."""

    @abc.abstractmethod
    def stop(self, h: Handle, why: StopReason, grace_s: float | None = None) -> None:
        """Ask every rank to stop now; kill what is left after the grace period (``poll`` carries it out)."""

    @abc.abstractmethod
    def kill(self, h: Handle) -> None:
        """Kill every rank now, without grace."""

    @abc.abstractmethod
    def adopt(self, records: list[AttemptRecord]) -> dict[int, Adoption]:
        """After a restart: attempt id -> what was found. PARTIAL attempts are killed before this returns."""

    @abc.abstractmethod
    def log_path(self, job_id: int, n: int, rank: int = 0) -> Path:
        """The local file holding the output of rank ``rank`` of attempt ``n``."""

    def energy_mj(self, node: str, model: str, local_indices: Sequence[int]) -> list[float | None]:
        """Energy counters (mJ) of a node's devices where this executor can read them (accounting); None: not
        measured. The default measures nothing."""
        return [None for _ in local_indices]

    def last_checkpoint(self, job_id: int) -> float | None:
        """When the job last wrote its checkpoint (the newest file's mtime; None: never or not known). Lost work
        on a node loss is counted from it, as the twin counts it (time since the last checkpoint)."""
        return None

    def read_log(self, job_id: int, n: int, rank: int = 0, offset: int = 0, size: int = 1 << 20) -> bytes:
        """Up to ``size`` bytes of a rank's log from ``offset`` (empty if there is none yet)."""
        try:
            with open(self.log_path(job_id, n, rank), "rb") as f:
                f.seek(offset)
                return f.read(size)
        except FileNotFoundError:
            return b""

    def due(self, handles: Mapping[int, Handle]) -> Iterable[int]:
        """The job ids among ``handles`` whose attempts may have ended since the last call: the controller polls
        only these each tick. The default is all of them; an executor that knows when its processes end (virtual)
        names fewer, and must name every handle whose ``poll`` would now answer ended."""
        return list(handles)

    def wait(self, h: Handle, timeout: float) -> tuple[bool, int | None]:
        """Poll until the attempt ended or ``timeout`` passed."""
        import time

        end = time.monotonic() + timeout
        while True:
            done, code = self.poll(h)
            if done or time.monotonic() >= end:
                return done, code
            time.sleep(0.02)

    def at_tick(self, now: float) -> None:  # noqa: B027 - a hook: most executors live on the wall clock
        """The controller's tick begins at wall time ``now``: everything it observes and starts in this tick is
        stamped ``now``. An executor with its own clock (virtual) acts as of this instant, so that its processes'
        times and the store's agree; real executors ignore it."""

    def close(self) -> None:
        """Release what the executor holds (connections, actors); running attempts are left alone."""
        return None
