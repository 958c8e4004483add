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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

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
        d = datetime.fromisoformat(v)
    except ValueError:
        raise _Bad(f"{col}={v!r} is neither seconds nor a date-time") from None
    return (d if d.tzinfo is not None else d.replace(tzinfo=UTC)).timestamp()  # naive: UTC, as the fast path


def parse_when(v: str) -> float:
    """A ``--from/--to`` bound: seconds as the trace counts them, or a date / date-time (UTC unless it says)."""
    try:
        return _time(v, "time")
    except _Bad:
        raise TraceError(f"not seconds nor a date-time: {v!r} (use e.g. 2017-10-03 or 2017-10-03T12:00)") from None


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
    if {"gpu_milli", "num_gpu", "cpu_milli"} <= cols:  # with creation/deletion times, or the multigpu lists without
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


def read_trace(path: str | Path, fmt: str = "auto", *, strict: bool = False, limit: int | None = None,
               start: float | None = None, end: float | None = None, partition_by: str | None = None,
               estimate_column: str | None = None, estimates: str | Path | None = None) -> Workload:
    """Read a trace file.

    ``start``/``end``: keep jobs submitted in ``[start, end)`` (seconds as the trace counts them; date-times as
    epoch seconds, see :func:`parse_when`). ``limit``: then keep only the first ``limit`` jobs (by submit time).
    ``partition_by``: a column whose value names each job's partition (``vc``: the trace's virtual-cluster column).
    ``estimate_column`` / ``estimates``: runtime estimates (seconds) from a column of the trace or from a side CSV
    (``estimate`` plus ``job_id`` or ``row``, the 0-based data row of the trace), e.g. QSSF-style predictions;
    jobs without one get NaN (the caller decides).

    Well-formed files are read column-wise with polars; a file with any malformed row is read again row by row,
    which skips and counts those rows (file:line messages) or raises under ``strict``.
    """
    p = Path(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not p.exists():
        raise TraceError(f"{p}: no such file")
    if fmt == "auto":
        fmt = detect_format(p)
    extras = _Extras(partition_by, estimate_column, Path(estimates) if estimates is not None else None)
    b: WorkloadBuilder | None = None
    fast = _FAST.get(fmt)
    if fast is not None:
        b = WorkloadBuilder(f"{p.name} ({fmt})")
        try:
            _read_fast(p, b, fast, extras)
        except _Fallback:
            b = None
    if b is None:
        if extras.wanted:
            what = "--partition-by" if partition_by else "runtime estimates"
            raise TraceError(f"{p}: {what} need(s) a well-formed {fmt} trace (this one has malformed rows or a "
                             f"format read row by row); run with --strict to see the first bad row")
        b = WorkloadBuilder(f"{p.name} ({fmt})")
        _READERS[fmt](p, b, strict)
    w = b.build(start=start, end=end)
    if limit is not None and limit < len(w):
        w = w.take(slice(0, limit))
    return w


class _Fallback(Exception):
    """The column-wise reader met something only the row-by-row reader handles (and reports)."""


@dataclass(slots=True)
class _Extras:
    partition_by: str | None
    estimate_column: str | None
    estimates: Path | None

    @property
    def wanted(self) -> bool:
        return bool(self.partition_by or self.estimate_column or self.estimates)


_VC_COLUMNS = ("vc", "cluster", "virtual_cluster")


def _frame(p: Path, required: set[str]) -> Any:
    import polars as pl

    try:
        df = pl.read_csv(p, infer_schema=False, encoding="utf8")
    except Exception:  # ragged lines, bad encoding...: the row reader says exactly what and where
        raise _Fallback from None
    missing = required - set(df.columns)
    if missing:
        raise TraceError(f"{p}:1: missing column(s) {sorted(missing)}")
    df = df.with_row_index("__row")
    data = [c for c in df.columns if c != "__row"]
    return df.filter(~pl.all_horizontal(pl.col(data).is_null()))  # blank lines (the csv module skips them)


def _fnum(df: Any, col: str, optional: bool = False) -> np.ndarray:
    """A numeric column as float64; falls back on an empty or malformed value (NaN if ``optional``)."""
    import polars as pl

    if col not in df.columns:
        if optional:
            return np.full(df.height, np.nan)
        raise _Fallback
    s = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    a = s.to_numpy().astype(np.float64, copy=False)
    if not optional and (s.null_count() or not np.isfinite(a).all()):
        raise _Fallback
    return a


def _ftime(df: Any, col: str) -> np.ndarray:
    """Seconds or ISO date-times (naive = UTC) as epoch seconds."""
    import polars as pl

    s = df[col].str.strip_chars()
    num = s.cast(pl.Float64, strict=False)
    if not num.null_count():
        return num.to_numpy().astype(np.float64)
    d = s.str.to_datetime(strict=False, time_unit="us")
    if d.null_count():
        raise _Fallback
    if d.dtype.time_zone is None:  # type: ignore[attr-defined]
        d = d.dt.replace_time_zone("UTC")
    return d.dt.epoch("us").to_numpy().astype(np.float64) / 1e6


def _fwhole(x: np.ndarray) -> np.ndarray:
    if ((x < 0) | (x != np.floor(x))).any():
        raise _Fallback
    return x.astype(np.int64)


def _fdur(x: np.ndarray) -> np.ndarray:
    if (x < 0).any():
        raise _Fallback
    return np.maximum(x, 1.0)


def _codes(df: Any, col: str | None, ids: Callable[[str], int], keep: np.ndarray,
           default: str = "default") -> np.ndarray:
    """Ids of a string column's values on the kept rows (first-appearance order), empty or missing = ``default``."""
    import polars as pl

    if col is None or col not in df.columns:
        return np.full(int(keep.sum()), ids(default), dtype=np.int64)
    s = df[col].filter(pl.Series(keep)).str.strip_chars().fill_null("")
    s = pl.Series(col, s).replace("", default)
    uniq = s.unique(maintain_order=True).to_list()
    return s.replace_strict(uniq, [ids(u) for u in uniq], return_dtype=pl.Int64).to_numpy()


def _read_fast(p: Path, b: WorkloadBuilder, fast: tuple[set[str], _Fast], ex: _Extras) -> None:
    import polars as pl

    required, reader = fast
    df = _frame(p, required)
    keep, cols = reader(p, df, b)
    if ex.partition_by:
        col = ex.partition_by
        if col == "vc":
            col = next((c for c in _VC_COLUMNS if c in df.columns), col)
        if col not in df.columns:
            raise TraceError(f"{p}: --partition-by {ex.partition_by!r}: no such column; columns: "
                             f"{', '.join(c for c in df.columns if c != '__row')}")
        cols["partition"] = _codes(df, col, b.partition_id, keep)
    est = None
    if ex.estimate_column:
        if ex.estimate_column not in df.columns:
            raise TraceError(f"{p}: estimate column {ex.estimate_column!r} not in the trace")
        est = _fnum(df, ex.estimate_column, optional=True)
    elif ex.estimates is not None:
        try:
            side = pl.read_csv(ex.estimates, infer_schema=False)
        except Exception as e:
            raise TraceError(f"{ex.estimates}: cannot read the estimates file: {e}") from None
        if "estimate" not in side.columns or not ({"job_id", "row"} & set(side.columns)):
            raise TraceError(f"{ex.estimates}:1: need columns estimate and job_id (or row)")
        key = "job_id" if "job_id" in side.columns and "job_id" in df.columns else "row"
        if key not in side.columns:
            raise TraceError(f"{ex.estimates}:1: the trace has no job_id column; give row (0-based data row)")
        side = side.select(pl.col(key).str.strip_chars(),
                           pl.col("estimate").str.strip_chars().cast(pl.Float64, strict=False))
        left = df.select(pl.col("job_id").str.strip_chars() if key == "job_id"
                         else pl.col("__row").cast(pl.String).alias("row"))
        est = left.join(side.unique(key, keep="first"), on=key, how="left", maintain_order="left")[
            "estimate"].to_numpy().astype(np.float64)
    if est is not None:
        est = np.where(np.isfinite(est) & (est > 0), est, np.nan)
        cols["estimate"] = est[keep]
    b.add_columns(**cols)


def _fast_philly(p: Path, df: Any, b: WorkloadBuilder) -> tuple[np.ndarray, dict[str, Any]]:
    n = _fwhole(_fnum(df, "num_gpus"))
    d = _fdur(_fnum(df, "duration"))
    t = _ftime(df, "timestamp")
    keep = n > 0
    b.dropped += int((~keep).sum())
    return keep, {"submit": t[keep], "duration": d[keep], "count": n[keep], "per_node": 0, "kind": "train",
                  "tenant": _codes(df, "cluster", b.tenant_id, keep)}


def _fast_itp(p: Path, df: Any, b: WorkloadBuilder) -> tuple[np.ndarray, dict[str, Any]]:
    n = _fwhole(_fnum(df, "num_gpu"))
    d = _fdur(_fnum(df, "duration"))
    t = _fnum(df, "submission_time")
    keep = n > 0
    b.dropped += int((~keep).sum())
    return keep, {"submit": t[keep], "duration": d[keep], "count": n[keep], "kind": "train",
                  "tenant": b.tenant_id(p.stem)}


def _fast_gpus_per_node(df: Any) -> tuple[np.ndarray, np.ndarray]:
    n = _fwhole(_fnum(df, "gpu_num"))
    nodes = np.nan_to_num(_fnum(df, "node_num", optional=True), nan=0.0).astype(np.int64)
    per = np.where((nodes > 0) & (n > 0), -(-n // np.maximum(nodes, 1)), 0)
    return n, per


def _fast_helios(p: Path, df: Any, b: WorkloadBuilder) -> tuple[np.ndarray, dict[str, Any]]:
    n, per = _fast_gpus_per_node(df)
    t = _ftime(df, "submit_time")
    d = _fdur(_fnum(df, "duration"))
    cpu = np.nan_to_num(_fnum(df, "cpu_num", optional=True), nan=0.0)
    keep = n > 0
    b.dropped += int((~keep).sum())
    return keep, {"submit": t[keep], "duration": d[keep], "count": n[keep], "per_node": per[keep],
                  "cpu_milli": (cpu[keep] * 1000).astype(np.int64), "kind": "train",
                  "tenant": _codes(df, "vc", b.tenant_id, keep)}


def _fast_acme(p: Path, df: Any, b: WorkloadBuilder) -> tuple[np.ndarray, dict[str, Any]]:
    import polars as pl

    n, per = _fast_gpus_per_node(df)
    t = _ftime(df, "submit_time")
    d = _fdur(_fnum(df, "duration"))
    keep = n > 0
    b.dropped += int((~keep).sum())
    typ = df["type"].str.strip_chars().str.to_lowercase().fill_null("other") if "type" in df.columns else None
    kinds = (typ.replace_strict(list(_ACME_KIND), list(_ACME_KIND.values()), default="batch", return_dtype=pl.String)
             .to_numpy() if typ is not None else np.full(df.height, "batch"))
    return keep, {"submit": t[keep], "duration": d[keep], "count": n[keep], "per_node": per[keep],
                  "kind": kinds[keep], "tenant": _codes(df, "user", b.tenant_id, keep)}


def _fast_openb(p: Path, df: Any, b: WorkloadBuilder) -> tuple[np.ndarray, dict[str, Any]]:
    n = _fwhole(_fnum(df, "num_gpu"))
    gm = np.where(n > 0, _fnum(df, "gpu_milli"), 0).astype(np.int64)
    cpu = _fnum(df, "cpu_milli").astype(np.int64)
    mem = _fnum(df, "memory_mib").astype(np.int64)
    if ((n > 0) & ((gm <= 0) | (gm > 1000))).any():
        raise _Fallback
    milli = np.where((n == 1) & (gm > 0) & (gm < 1000), gm, 1000)
    timed = "creation_time" in df.columns and "deletion_time" in df.columns
    if timed:
        created = _fnum(df, "creation_time")
        deleted = _fnum(df, "deletion_time")
        sched = _fnum(df, "scheduled_time", optional=True)
        start = np.where(np.isnan(sched), created, sched)
        dur = _fdur(deleted - start)
    else:  # the multigpu lists: no times (only the placement replay can use them)
        created = np.zeros(df.height)
        dur = np.full(df.height, np.nan)
        b.untimed = True
    models = np.full(df.height, -1, dtype=np.int64)
    if "gpu_spec" in df.columns:
        spec = df["gpu_spec"].fill_null("").str.strip_chars()
        uniq = spec.unique(maintain_order=True).to_list()
        ids = {u: b.models_id([canonical_model(x.strip()) for x in u.split("|") if x.strip()] if u else None)
               for u in uniq}
        models = spec.replace_strict(uniq, [ids[u] for u in uniq]).to_numpy().astype(np.int64)
    keep = np.ones(df.height, dtype=bool)
    return keep, {"submit": created, "duration": dur, "count": n, "milli": milli, "per_node": n,
                  "cpu_milli": cpu, "mem_mib": mem, "models": models, "kind": "batch", "gang": True,
                  "tenant": _codes(df, "qos", b.tenant_id, keep)}


_Fast = Callable[[Path, Any, WorkloadBuilder], tuple[np.ndarray, dict[str, Any]]]
_FAST: dict[str, tuple[set[str], _Fast]] = {
    "philly": ({"timestamp", "duration", "num_gpus"}, _fast_philly),
    "itp": ({"submission_time", "duration", "num_gpu"}, _fast_itp),
    "helios": ({"gpu_num", "submit_time", "duration"}, _fast_helios),
    "acme": ({"gpu_num", "submit_time", "duration"}, _fast_acme),
    "openb": ({"cpu_milli", "memory_mib", "num_gpu", "gpu_milli"}, _fast_openb),
}


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
        if timed:
            created = _num(r, "creation_time")
            deleted = _num(r, "deletion_time")
            sched = r.get("scheduled_time") or ""
            start = float(sched) if sched.strip() else created
            dur = _dur(deleted - start, "deletion_time - scheduled_time")
        else:  # the multigpu lists carry no times: only the placement replay, which needs none, can use them
            created, dur = 0.0, math.nan
        spec = (r.get("gpu_spec") or "").strip()
        models = [canonical_model(x.strip()) for x in spec.split("|") if x.strip()] if spec else None
        milli = 1000
        if n == 1 and 0 < gm < 1000:
            milli = gm
        elif n and not 0 < gm <= 1000:
            raise _Bad(f"gpu_milli={gm} outside 1..1000")
        b.add(submit=created, duration=dur, count=n, milli=milli,
              per_node=n, cpu_milli=cpu, mem_mib=mem, models=b.models_id(models),
              tenant=b.tenant_id(r.get("qos") or "default"), kind="batch", gang=True)

    cols = set(_header(p))
    timed = {"creation_time", "deletion_time"} <= cols
    b.untimed = not timed
    _run(p, b, strict, _rows(p), one, {"cpu_milli", "memory_mib", "num_gpu", "gpu_milli"})


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
