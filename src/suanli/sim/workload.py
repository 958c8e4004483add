"""A simulated workload: jobs as columns (numpy arrays), so a million jobs cost tens of MB, not gigabytes.

The engine turns a row into a scheduler :class:`~suanli.workload.spec.Job` only when the job arrives.
Durations are *work* in seconds on the reference accelerator (speed 1.0); a job running on a model with relative
speed ``s`` finishes its work in ``duration / s`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from suanli.workload.spec import Job

# Workload.jobs builds Job positionally in this order: a change to Job's fields fails here, not silently
_JOB_ORDER = ("id", "count", "milli", "models", "per_node", "cpu_milli", "mem_mib", "gang", "priority", "queue",
              "tenant", "submit_time", "expected_runtime", "attained", "kind", "preemptible", "partitions", "speeds",
              "llm", "seq")
if tuple(f.name for f in fields(Job))[: len(_JOB_ORDER)] != _JOB_ORDER:  # pragma: no cover - a guard
    raise ImportError("suanli.sim.workload: Job's fields changed order; update Workload.jobs")

KINDS = ("batch", "train", "finetune", "eval", "dev", "serve")


@dataclass(slots=True)
class Workload:
    """Jobs of a simulation, sorted by submit time. ``models[i] == -1``: any accelerator model."""

    name: str
    submit: np.ndarray  # float64 seconds
    duration: np.ndarray  # float64 seconds of work
    count: np.ndarray  # int32 devices (0 = CPU-only)
    milli: np.ndarray  # int32 share of each device
    per_node: np.ndarray  # int32, 0 = the node size
    cpu_milli: np.ndarray  # int64, whole job
    mem_mib: np.ndarray  # int64, whole job
    models: np.ndarray  # int32 index into model_sets, -1 = any
    tenant: np.ndarray  # int32 index into tenants
    kind: np.ndarray  # int8 index into KINDS
    priority: np.ndarray  # int16
    preemptible: np.ndarray  # bool
    estimate: np.ndarray  # float64 user runtime estimate, NaN = none
    gang: np.ndarray  # bool
    partition: np.ndarray  # int32 index into partitions, -1 = no partition named (any node)
    job_type: np.ndarray  # int16 index into job_types, -1 = none (the cluster's per-model speed applies)
    model_sets: list[tuple[str, ...]] = field(default_factory=list)
    tenants: list[str] = field(default_factory=lambda: ["default"])
    partitions: list[str] = field(default_factory=list)  # partition names
    job_types: list[str] = field(default_factory=list)  # e.g. "ResNet-50": jobs of a type share per-model speeds
    type_speeds: list[dict[str, float]] = field(default_factory=list)  # per job type: accelerator -> relative speed
    untimed: bool = False  # the source has no arrival/run times (e.g. openb multigpu pod lists): replay only
    skipped: int = 0  # malformed rows skipped by the reader
    dropped: int = 0  # rows the reader left out on purpose (e.g. CPU-only jobs of a GPU trace)
    messages: list[str] = field(default_factory=list)  # the first few reader warnings (file:line: ...)

    def __len__(self) -> int:
        return int(self.submit.shape[0])

    @property
    def tenant_names(self) -> list[str]:
        return self.tenants

    def job(self, i: int, queue_by_tenant: bool = True) -> Job:
        """The scheduler's record of job ``i`` (a fresh object: the engine owns it from arrival on)."""
        ms = int(self.models[i])
        est = float(self.estimate[i])
        pn = int(self.per_node[i])
        t = self.tenants[int(self.tenant[i])]
        pa = int(self.partition[i])
        jt = int(self.job_type[i])
        return Job(
            id=i,
            count=int(self.count[i]),
            milli=int(self.milli[i]),
            models=self.model_sets[ms] if ms >= 0 else None,
            per_node=pn if pn > 0 else None,
            cpu_milli=int(self.cpu_milli[i]),
            mem_mib=int(self.mem_mib[i]),
            gang=bool(self.gang[i]),
            priority=int(self.priority[i]),
            queue=t if queue_by_tenant else (self.partitions[pa] if pa >= 0 else "default"),
            tenant=t,
            submit_time=float(self.submit[i]),
            expected_runtime=None if est != est else est,
            kind=KINDS[int(self.kind[i])],
            preemptible=bool(self.preemptible[i]),
            partitions=(self.partitions[pa],) if pa >= 0 else None,
            speeds=self.type_speeds[jt] if jt >= 0 else None,
            seq=i,
        )

    def jobs(self, start: int, stop: int, queue_by_tenant: bool = True) -> list[Job]:
        """Jobs ``start..stop-1`` (as :meth:`job`, converted a block at a time: much cheaper per job)."""
        sl = slice(start, stop)
        cols = [getattr(self, f)[sl].tolist() for f in ("count", "milli", "models", "per_node", "cpu_milli",
                                                          "mem_mib", "gang", "priority", "tenant", "submit",
                                                          "estimate", "kind", "preemptible", "partition",
                                                          "job_type")]
        sets, tenants = self.model_sets, self.tenants
        parts = [(p,) for p in self.partitions]
        tsp = self.type_speeds
        out = []
        for k, (cnt, mi, ms, pn, cpu, mem, g, pr, t, sub, est, kd, pre, pa, jt) in enumerate(zip(*cols, strict=True)):
            tn = tenants[t]
            # positional (_JOB_ORDER; keywords cost ~2x as much, and this builds every job of a run)
            out.append(Job(start + k, cnt, mi, sets[ms] if ms >= 0 else None, pn if pn > 0 else None, cpu, mem, g,
                           pr, tn if queue_by_tenant else (self.partitions[pa] if pa >= 0 else "default"), tn, sub,
                           None if est != est else est, 0.0, KINDS[kd], pre, parts[pa] if pa >= 0 else None,
                           tsp[jt] if jt >= 0 else None, None, start + k))
        return out

    def device_seconds(self) -> float:
        """Total work in device-seconds (fractional shares counted as fractions)."""
        return float((self.duration * self.count * self.milli / 1000.0).sum())

    def offered_load(self, capacity_devices: int) -> float:
        """Work / (capacity x arrival span): the load the trace offers this cluster (>1: more than it can do)."""
        if len(self) == 0 or capacity_devices <= 0:
            return 0.0
        span = float(self.submit[-1] - self.submit[0])
        if span <= 0:
            span = float(np.median(self.duration)) or 1.0
        return self.device_seconds() / (capacity_devices * span)

    def take(self, idx: np.ndarray | slice) -> Workload:
        """A sub-workload (rows ``idx``), sharing the name tables."""
        cols = {f: getattr(self, f)[idx] for f in _COLS}
        return Workload(name=self.name, model_sets=self.model_sets, tenants=self.tenants, skipped=self.skipped,
                        dropped=self.dropped, messages=list(self.messages), partitions=self.partitions,
                        untimed=self.untimed, job_types=self.job_types, type_speeds=self.type_speeds, **cols)

    def scaled_to_load(self, load: float, capacity_devices: int) -> Workload:
        """The same jobs with arrival times stretched or compressed so that the offered load is ``load``."""
        cur = self.offered_load(capacity_devices)
        if cur <= 0 or load <= 0:
            return self
        w = self.take(slice(None))
        t0 = float(self.submit[0])
        w.submit = t0 + (self.submit - t0) * (cur / load)
        return w

    def fix_estimates(self, noise: float = 0.0, seed: int = 0) -> Workload:
        """Fill missing runtime estimates with the real duration (optionally x lognormal noise, sigma ``noise``)."""
        w = self.take(slice(None))
        est = np.where(np.isnan(self.estimate), self.duration, self.estimate)
        if noise > 0:
            est = est * np.random.default_rng(seed).lognormal(0.0, noise, len(est))
        w.estimate = est.astype(np.float64)
        return w


_COLS = ("submit", "duration", "count", "milli", "per_node", "cpu_milli", "mem_mib", "models", "tenant", "kind",
         "priority", "preemptible", "estimate", "gang", "partition", "job_type")
_DTYPES = {"submit": np.float64, "duration": np.float64, "count": np.int32, "milli": np.int32, "per_node": np.int32,
           "cpu_milli": np.int64, "mem_mib": np.int64, "models": np.int32, "tenant": np.int32, "kind": np.int8,
           "priority": np.int16, "preemptible": bool, "estimate": np.float64, "gang": bool, "partition": np.int32,
           "job_type": np.int16}
_DEFAULTS: dict[str, float | int | bool] = {"milli": 1000, "per_node": 0, "cpu_milli": 0, "mem_mib": 0, "models": -1,
                                            "tenant": 0, "kind": 0, "priority": 0, "preemptible": True,
                                            "estimate": float("nan"), "gang": True, "partition": -1,
                                            "job_type": -1}


class WorkloadBuilder:
    """Collects rows (plain Python lists, cheap to append) and freezes them into a sorted :class:`Workload`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cols: dict[str, list[float | int | bool]] = {c: [] for c in _COLS}
        self._model_ids: dict[tuple[str, ...], int] = {}
        self._tenant_ids: dict[str, int] = {}
        self._partition_ids: dict[str, int] = {}
        self.job_types: list[str] = []
        self.type_speeds: list[dict[str, float]] = []
        self.chunks: list[dict[str, np.ndarray]] = []  # column blocks from add_columns
        self.untimed = False
        self.skipped = 0
        self.dropped = 0
        self.messages: list[str] = []

    def tenant_id(self, name: str) -> int:
        t = self._tenant_ids.get(name)
        if t is None:
            t = self._tenant_ids[name] = len(self._tenant_ids)
        return t

    def job_type_id(self, name: str, speeds: dict[str, float] | None = None) -> int:
        """Index of job type ``name``; ``speeds`` (accelerator -> relative speed) given with its first use."""
        if name in self.job_types:
            return self.job_types.index(name)
        self.job_types.append(name)
        self.type_speeds.append(dict(speeds or {}))
        return len(self.job_types) - 1

    def partition_id(self, name: str) -> int:
        p = self._partition_ids.get(name)
        if p is None:
            p = self._partition_ids[name] = len(self._partition_ids)
        return p

    def models_id(self, models: Sequence[str] | None) -> int:
        if not models:
            return -1
        key = tuple(models)
        m = self._model_ids.get(key)
        if m is None:
            m = self._model_ids[key] = len(self._model_ids)
        return m

    def add(self, *, submit: float, duration: float, count: int, milli: int = 1000, per_node: int = 0,
            cpu_milli: int = 0, mem_mib: int = 0, models: int = -1, tenant: int = 0, kind: str = "batch",
            priority: int = 0, preemptible: bool = True, estimate: float = float("nan"), gang: bool = True,
            partition: int = -1, job_type: int = -1) -> None:
        c = self.cols
        c["submit"].append(submit)
        c["duration"].append(duration)
        c["count"].append(count)
        c["milli"].append(milli)
        c["per_node"].append(per_node)
        c["cpu_milli"].append(cpu_milli)
        c["mem_mib"].append(mem_mib)
        c["models"].append(models)
        c["tenant"].append(tenant)
        c["kind"].append(KINDS.index(kind))
        c["priority"].append(priority)
        c["preemptible"].append(preemptible)
        c["estimate"].append(estimate)
        c["gang"].append(gang)
        c["partition"].append(partition)
        c["job_type"].append(job_type)

    def add_columns(self, **cols: object) -> None:
        """Many jobs at once: arrays of one length (``submit`` sets it) or scalars for every row; ``kind`` as names.
        Columns left out take the defaults of :meth:`add`."""
        n = len(np.asarray(cols["submit"]))
        block: dict[str, np.ndarray] = {}
        for c in _COLS:
            v = cols.get(c, _DEFAULTS.get(c))
            if c == "kind":
                v = np.asarray(v)
                v = (np.full(n, KINDS.index(str(v))) if v.ndim == 0
                     else np.array([KINDS.index(str(x)) for x in v.tolist()], dtype=np.int8) if n else v)
            a = np.asarray(v, dtype=_DTYPES[c])
            block[c] = np.full(n, a, dtype=_DTYPES[c]) if a.ndim == 0 else a
        self.chunks.append(block)

    def warn(self, msg: str) -> None:
        self.skipped += 1
        if len(self.messages) < 20:
            self.messages.append(msg)

    def build(self, rebase: bool = True, start: float | None = None, end: float | None = None) -> Workload:
        """Freeze into a :class:`Workload` sorted by submit time; ``start``/``end``: keep submits in [start, end)
        (before rebasing); ``rebase``: time 0 = the first kept submit."""
        arrs = {c: np.concatenate([np.asarray(v, dtype=_DTYPES[c])] + [b[c] for b in self.chunks])
                for c, v in self.cols.items()}
        order = np.argsort(arrs["submit"], kind="stable")
        if start is not None or end is not None:
            sub = arrs["submit"][order]
            lo = np.searchsorted(sub, start, "left") if start is not None else 0
            hi = np.searchsorted(sub, end, "left") if end is not None else len(sub)
            order = order[lo:hi]
        arrs = {c: a[order] for c, a in arrs.items()}
        if rebase and len(order):
            arrs["submit"] = arrs["submit"] - arrs["submit"][0]
        tenants = list(self._tenant_ids) or ["default"]
        return Workload(name=self.name, model_sets=list(self._model_ids), tenants=tenants, skipped=self.skipped,
                        dropped=self.dropped, messages=self.messages, partitions=list(self._partition_ids),
                        untimed=self.untimed, job_types=self.job_types, type_speeds=self.type_speeds, **arrs)


def from_jobs(name: str, rows: Sequence[dict[str, object]]) -> Workload:
    """A small workload from dicts (tests, examples): keys as :meth:`WorkloadBuilder.add`, plus ``tenant`` names,
    ``models`` lists, ``partition`` names, and ``speeds`` (accelerator -> relative speed) with an optional
    ``job_type`` name."""
    b = WorkloadBuilder(name)
    for r in rows:
        kw = dict(r)
        kw["tenant"] = b.tenant_id(str(kw.get("tenant", "default")))
        ms = kw.get("models")
        kw["models"] = b.models_id(list(ms)) if ms else -1  # type: ignore[call-overload]
        pa = kw.get("partition")
        kw["partition"] = b.partition_id(str(pa)) if pa not in (None, -1) else -1
        sp = kw.pop("speeds", None)
        jt = kw.get("job_type")
        if jt not in (None, -1) or sp:
            kw["job_type"] = b.job_type_id(str(jt) if jt not in (None, -1) else repr(sorted(sp.items())), sp)
        b.add(**kw)  # type: ignore[arg-type]
    return b.build(rebase=False)
