"""Readers for public GPU-cluster traces, into a :class:`~suanli.sim.workload.Workload`.

Formats (``--format``; ``auto`` detects from the header):

- ``philly``: Microsoft Philly as shipped with the Pollux artifact (``timestamp,duration,num_gpus,gpu_time,cluster``);
  the virtual cluster becomes the tenant.
- ``itp``: Microsoft ITP 2021 raw traces (``job_id,submission_time,duration,num_gpu``).
- ``openb``: Alibaba openb 2023 pod lists (fractional ``gpu_milli``, ``gpu_spec`` model constraints, CPU/memory);
  duration = deletion - scheduled (creation if never scheduled); ``qos`` becomes the tenant.
- ``kalos-converted``: the Tethys-style Kalos subset (``arrival_time, num_iteration`` at 0.5 s per iteration,
  ``gpu_workers`` x ``gpu_per_worker``).
- ``helios``: Helios ``cluster_log.csv`` (job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,...,duration,queue);
  the virtual cluster (``vc``) becomes the tenant.
- ``acme``: AcmeTrace ``trace_seren.csv`` / ``trace_kalos.csv`` (job_id,user,node_num,gpu_num,cpu_num,type,state,
  submit_time,...,duration,...); ``type`` maps to the job kind, the user to the tenant.
- ``pai``: Alibaba PAI 2020 ``pai_job_table.csv`` (no header: job_name,inst_id,user,status,start_time,end_time); if
  ``pai_task_table.csv`` lies next to it, GPU requests come from it (``plan_gpu`` percent x ``inst_num``), else
  1 GPU per job.

Jobs without accelerators (CPU-only) are left out of GPU traces and counted in ``Workload.dropped``. A malformed
row is skipped and counted (``Workload.skipped``, messages name file and line) or, with ``strict=True``, raises
:class:`TraceError`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from suanli.errors import SuanliError
from suanli.fleet.model import canonical_model
from suanli.sim.workload import Workload, WorkloadBuilder

FORMATS = ("auto", "philly", "itp", "openb", "kalos-converted", "helios", "acme", "pai")


class TraceError(SuanliError):
    """A trace that cannot be read: missing file, unknown format, or a malformed row under ``--strict``."""


class _Bad(ValueError):
    pass


def _num(row: dict[str, str], col: str) -> float:
    v = row.get(col)
    if v is None or v.strip() == "":
        raise _Bad(f"{col} is empty")
    try:
        x = float(v)
    except ValueError:
        raise _Bad(f"{col}={v!r} is not a number") from None
    if not math.isfinite(x):
        raise _Bad(f"{col}={v!r} is not finite")
    return x


def _time(v: str | None, col: str) -> float:
    """Seconds: a number, or an ISO date-time (with or without zone)."""
    if v is None or v.strip() == "":
        raise _Bad(f"{col} is empty")
    v = v.strip()
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        raise _Bad(f"{col}={v!r} is neither seconds nor a date-time") from None


def _rows(path: Path, header: bool = True, names: list[str] | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a CSV file") from None
    with fh:
        reader = csv.DictReader(fh, fieldnames=None if header else names)
        first = 2 if header else 1
        for i, row in enumerate(reader):
            yield i + first, row


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            line = fh.readline()
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}:1: not a UTF-8 CSV file") from None
    return [c.strip() for c in next(csv.reader([line]), [])]


def detect_format(path: str | Path) -> str:
    p = Path(path)
    cols = set(_header(p))
    if {"timestamp", "duration", "num_gpus"} <= cols:
        return "philly"
    if {"submission_time", "duration", "num_gpu"} <= cols:
        return "itp"
    if {"gpu_milli", "num_gpu", "creation_time"} <= cols:
        return "openb"
    if {"arrival_time", "num_iteration", "gpu_workers"} <= cols:
        return "kalos-converted"
    if {"vc", "gpu_num", "submit_time", "duration"} <= cols:
        return "helios"
    if {"gpu_num", "submit_time", "duration", "type"} <= cols:
        return "acme"
    if p.name.startswith("pai_job_table") or (len(cols) == 6 and not ({"job_id", "duration"} & cols)):
        return "pai"
    raise TraceError(f"{p}:1: cannot detect the trace format from the header {sorted(cols)}; pass --format "
                     f"({', '.join(FORMATS[1:])})")


def read_trace(path: str | Path, fmt: str = "auto", *, strict: bool = False, limit: int | None = None) -> Workload:
    """Read a trace file. ``limit``: keep only the first ``limit`` jobs (by submit time)."""
    p = Path(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not p.exists():
        raise TraceError(f"{p}: no such file")
    if fmt == "auto":
        fmt = detect_format(p)
    b = WorkloadBuilder(f"{p.name} ({fmt})")
    reader = _READERS[fmt]
    reader(p, b, strict)
    w = b.build()
    if limit is not None and limit < len(w):
        w = w.take(slice(0, limit))
    return w


def _run(p: Path, b: WorkloadBuilder, strict: bool, rows: Iterator[tuple[int, dict[str, str]]],
         one: Callable[[dict[str, str]], None], required: set[str] | None = None) -> None:
    checked = required is None
    for line, row in rows:
        if not checked:
            missing = required - set(row) if required else set()
            if missing:
                raise TraceError(f"{p}:1: missing column(s) {sorted(missing)}")
            checked = True
        try:
            if None in row:  # more fields than the header
                raise _Bad("more fields than the header has")
            one(row)
        except _Bad as e:
            msg = f"{p}:{line}: malformed row skipped: {e}"
            if strict:
                raise TraceError(f"{p}:{line}: malformed row: {e}") from None
            b.warn(msg)


def _gpus(x: float, col: str) -> int:
    if x < 0 or x != int(x):
        raise _Bad(f"{col}={x:g} is not a non-negative whole number")
    return int(x)


def _dur(x: float, col: str = "duration") -> float:
    if x < 0:
        raise _Bad(f"{col}={x:g} is negative")
    return max(x, 1.0)


def _philly(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    def one(r: dict[str, str]) -> None:
        n = _gpus(_num(r, "num_gpus"), "num_gpus")
        d = _dur(_num(r, "duration"))
        t = _time(r.get("timestamp"), "timestamp")
        if n == 0:
            b.dropped += 1
            return
        b.add(submit=t, duration=d, count=n, tenant=b.tenant_id(r.get("cluster") or "default"), kind="train",
              per_node=0)

    _run(p, b, strict, _rows(p), one, {"timestamp", "duration", "num_gpus"})


def _itp(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    tenant = b.tenant_id(p.stem)

    def one(r: dict[str, str]) -> None:
        n = _gpus(_num(r, "num_gpu"), "num_gpu")
        d = _dur(_num(r, "duration"))
        t = _num(r, "submission_time")
        if n == 0:
            b.dropped += 1
            return
        b.add(submit=t, duration=d, count=n, tenant=tenant, kind="train")

    _run(p, b, strict, _rows(p), one, {"submission_time", "duration", "num_gpu"})


def _openb(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    def one(r: dict[str, str]) -> None:
        n = _gpus(_num(r, "num_gpu"), "num_gpu")
        gm = int(_num(r, "gpu_milli")) if n else 0
        cpu = int(_num(r, "cpu_milli"))
        mem = int(_num(r, "memory_mib"))
        created = _num(r, "creation_time")
        deleted = _num(r, "deletion_time")
        sched = r.get("scheduled_time") or ""
        start = float(sched) if sched.strip() else created
        spec = (r.get("gpu_spec") or "").strip()
        models = [canonical_model(x.strip()) for x in spec.split("|") if x.strip()] if spec else None
        milli = 1000
        if n == 1 and 0 < gm < 1000:
            milli = gm
        elif n and not 0 < gm <= 1000:
            raise _Bad(f"gpu_milli={gm} outside 1..1000")
        b.add(submit=created, duration=_dur(deleted - start, "deletion_time - scheduled_time"), count=n, milli=milli,
              per_node=n, cpu_milli=cpu, mem_mib=mem, models=b.models_id(models),
              tenant=b.tenant_id(r.get("qos") or "default"), kind="batch", gang=True)

    _run(p, b, strict, _rows(p), one, {"cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "creation_time",
                                       "deletion_time"})


def _kalos_converted(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    tenant = b.tenant_id("kalos")

    def one(r: dict[str, str]) -> None:
        workers = _gpus(_num(r, "gpu_workers"), "gpu_workers")
        per = _gpus(_num(r, "gpu_per_worker"), "gpu_per_worker")
        it = _num(r, "num_iteration")
        n = workers * per
        if n == 0:
            b.dropped += 1
            return
        b.add(submit=_num(r, "arrival_time"), duration=_dur(it * 0.5, "num_iteration"), count=n, per_node=per,
              tenant=tenant, kind="train")

    _run(p, b, strict, _rows(p), one, {"arrival_time", "num_iteration", "gpu_workers", "gpu_per_worker"})


def _gpus_and_per_node(r: dict[str, str]) -> tuple[int, int]:
    """GPUs of a Helios/Acme row and GPUs per node (0 = unknown) from its ``gpu_num`` and ``node_num``."""
    n = _gpus(_num(r, "gpu_num"), "gpu_num")
    nodes = int(_num(r, "node_num")) if (r.get("node_num") or "").strip() else 0
    return n, (-(-n // nodes) if nodes > 0 and n else 0)


def _helios(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    def one(r: dict[str, str]) -> None:
        n, per = _gpus_and_per_node(r)
        if n == 0:
            b.dropped += 1
            return
        b.add(submit=_time(r.get("submit_time"), "submit_time"), duration=_dur(_num(r, "duration")), count=n,
              per_node=per, cpu_milli=int(_num(r, "cpu_num") * 1000) if (r.get("cpu_num") or "").strip() else 0,
              tenant=b.tenant_id(r.get("vc") or "default"), kind="train")

    _run(p, b, strict, _rows(p), one, {"gpu_num", "submit_time", "duration"})


_ACME_KIND = {"pretrain": "train", "sft": "finetune", "mllm": "train", "evaluation": "eval", "eval": "eval",
              "debug": "dev", "other": "batch"}


def _acme(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    def one(r: dict[str, str]) -> None:
        n, per = _gpus_and_per_node(r)
        if n == 0:
            b.dropped += 1
            return
        kind = _ACME_KIND.get((r.get("type") or "other").strip().lower(), "batch")
        b.add(submit=_time(r.get("submit_time"), "submit_time"), duration=_dur(_num(r, "duration")), count=n,
              per_node=per, tenant=b.tenant_id(r.get("user") or "default"), kind=kind)

    _run(p, b, strict, _rows(p), one, {"gpu_num", "submit_time", "duration"})


_PAI_JOB = ["job_name", "inst_id", "user", "status", "start_time", "end_time"]
_PAI_TASK = ["job_name", "task_name", "inst_num", "status", "start_time", "end_time", "plan_cpu", "plan_mem",
             "plan_gpu", "gpu_type"]


def _pai(p: Path, b: WorkloadBuilder, strict: bool) -> None:
    gpus: dict[str, float] = {}
    task = p.with_name(p.name.replace("pai_job_table", "pai_task_table"))
    if task != p and task.exists():
        for _, r in _rows(task, header=False, names=_PAI_TASK):
            try:
                g = float(r.get("plan_gpu") or 0) / 100.0 * float(r.get("inst_num") or 1)
            except ValueError:
                continue
            gpus[r["job_name"]] = gpus.get(r["job_name"], 0.0) + g
    header = _header(p) == _PAI_JOB

    def one(r: dict[str, str]) -> None:
        st = _num(r, "start_time")
        en = _num(r, "end_time")
        g = gpus.get(r.get("job_name") or "", 1.0) if gpus else 1.0
        if g <= 0:
            b.dropped += 1
            return
        n, milli = (1, max(1, round(g * 1000))) if g < 1 else (math.ceil(g), 1000)
        b.add(submit=st, duration=_dur(en - st, "end_time - start_time"), count=n, milli=milli,
              tenant=b.tenant_id(r.get("user") or "default"), kind="train")

    _run(p, b, strict, _rows(p, header=header, names=None if header else _PAI_JOB), one, None)


_READERS: dict[str, Callable[[Path, WorkloadBuilder, bool], None]] = {
    "philly": _philly, "itp": _itp, "openb": _openb, "kalos-converted": _kalos_converted, "helios": _helios,
    "acme": _acme, "pai": _pai,
}
