"""Clusters from a YAML file, from a real trace's node list, or from a generator."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import SpecError
from suanli.fleet.model import CPU_ONLY, Cluster, NodeSpec, build_cluster, canonical_model
from suanli.specfile import load_yaml, parse_yaml

_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$", re.I)
_MEM_MIB = {"k": 1 / 1024, "ki": 1 / 1024, "kb": 1 / 1024, "kib": 1 / 1024, "m": 1, "mi": 1, "mb": 1, "mib": 1,
            "g": 1024, "gi": 1024, "gb": 1024, "gib": 1024, "t": 1024**2, "ti": 1024**2, "tb": 1024**2,
            "tib": 1024**2}


def parse_memory_mib(value: str | int | float) -> int:
    """``512Gi``, ``2Ti``, ``64GB`` or a bare number of GiB -> MiB."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("memory must not be negative")
        return int(value * 1024)
    m = _MEM_RE.match(str(value))
    if not m:
        raise ValueError(f"not a memory size: {value!r} (use e.g. 512Gi, 2Ti, or a number of GiB)")
    unit = (m.group(2) or "gi").lower()
    return int(float(m.group(1)) * _MEM_MIB[unit])


_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Grouping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: Annotated[int, Field(ge=1, description="nodes per group")] = 1
    name: str | None = None


class PoolSpec(BaseModel):
    """A node pool of a cluster file: ``count`` identical nodes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    count: Annotated[int, Field(ge=1, le=1_000_000)]
    accelerator: str | None = Field(default=None, description="catalog name; omit for CPU-only nodes")
    per_node: Annotated[int, Field(ge=0, le=1024)] = 8
    cpu: Annotated[float, Field(gt=0, description="CPU cores per node")] = 128
    memory: str | int | float = "2048Gi"
    domain: Grouping = Field(default_factory=Grouping, description="nodes per interconnect domain")
    rack: Grouping = Field(default_factory=lambda: Grouping(nodes=4))
    # accounting (suanli report): facility overhead and the operator's own prices for this pool
    pue: Annotated[float | None, Field(ge=1.0, le=5.0, description="power usage effectiveness of this pool "
                                       "(facility / IT energy); default: accounting.pue")] = None
    price_usd: Annotated[float | None, Field(gt=0, description="purchase price per accelerator (the operator's "
                                             "figure; default: the catalog estimate)")] = None
    node_hour_usd: Annotated[float | None, Field(ge=0, description="overhead per node-hour (hosting, network, "
                                                 "support), charged to the chips used pro rata")] = None
    nodes: list[str] | None = Field(default=None, description="shell patterns of real node names in this pool "
                                    "(default: POOL-*)")
    partitions: list[str] = Field(default_factory=list, description="partitions the pool's nodes belong to")

    @field_validator("partitions", mode="before")
    @classmethod
    def _parts(cls, v: object) -> object:
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, list):
            for x in v:
                if not isinstance(x, str) or not _PART_RE.fullmatch(x):
                    raise ValueError(f"partition name {x!r}: 1-128 letters, digits, '.', '_' or '-'")
            return list(dict.fromkeys(v))
        return v

    @field_validator("accelerator")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return resolve_accelerator(v)  # UnknownName is a ValueError-like KeyError; re-raised below

    @field_validator("memory")
    @classmethod
    def _mem(cls, v: str | int | float) -> str | int | float:
        parse_memory_mib(v)
        return v


class AccountingSpec(BaseModel):
    """How chip-time becomes energy and money in ``suanli report`` (defaults: the planner's ``Money``)."""

    model_config = ConfigDict(extra="forbid")
    usd_per_kwh: Annotated[float, Field(ge=0, description="electricity tariff")] = 0.10
    pue: Annotated[float, Field(ge=1.0, le=5.0, description="default PUE of pools that do not say")] = 1.3
    amortisation_years: Annotated[float, Field(gt=0)] = 4.0
    utilisation: Annotated[float, Field(gt=0, le=1, description="amortisation base: share of the service life "
                                        "the chips are busy")] = 0.8
    busy: Annotated[float, Field(ge=0, le=1, description="modelled tensor-unit busy share where power is not "
                                 "measured (board power = TDP x (idle + (1 - idle) x busy))")] = 0.6
    idle_power_frac: Annotated[float, Field(ge=0, le=1)] = 0.3


class ClusterFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "cluster"
    pools: Annotated[list[PoolSpec], Field(min_length=1)]
    accounting: AccountingSpec = Field(default_factory=AccountingSpec)


def nodes_from_pools(pools: list[PoolSpec]) -> list[NodeSpec]:
    out: list[NodeSpec] = []
    for p in pools:
        mem = parse_memory_mib(p.memory)
        dname = p.domain.name or f"{p.name}-dom"
        rname = p.rack.name or f"{p.name}-rack"
        devices = p.per_node if p.accelerator else 0
        for i in range(p.count):
            out.append(
                NodeSpec(
                    name=f"{p.name}-{i:04d}",
                    accelerator=p.accelerator or CPU_ONLY,
                    devices=devices,
                    cpu_milli=int(p.cpu * 1000),
                    memory_mib=mem,
                    domain=f"{dname}{i // p.domain.nodes:04d}",
                    rack=f"{rname}{i // p.rack.nodes:04d}",
                    partitions=tuple(p.partitions),
                )
            )
    return out


def cluster_from_yaml_text(text: str, source: str = "<string>") -> Cluster:
    try:
        spec = parse_yaml(text, ClusterFile, source)
    except KeyError as e:  # UnknownName raised inside a validator surfaces unwrapped
        raise SpecError(f"{source}: {e}") from None
    names = [p.name for p in spec.pools]
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: pool names must be unique, got {names}")
    return build_cluster(spec.name, nodes_from_pools(spec.pools))


def load_cluster_file(path: str | Path) -> ClusterFile:
    """The cluster file itself (pools with their accounting fields), validated."""
    spec = load_yaml(path, ClusterFile)
    names = [p.name for p in spec.pools]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: pool names must be unique, got {names}")
    return spec


def load_cluster_yaml(path: str | Path) -> Cluster:
    spec = load_yaml(path, ClusterFile)
    names = [p.name for p in spec.pools]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: pool names must be unique, got {names}")
    return build_cluster(spec.name, nodes_from_pools(spec.pools))


def _read_csv(path: Path, required: set[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    with fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        missing = required - cols
        if missing:
            raise SpecError(f"{path}:1: missing column(s) {sorted(missing)}; has {sorted(cols)}")
        return [(i + 2, row) for i, row in enumerate(reader)]


def load_openb_nodes(path: str | Path, *, nodes_per_rack: int = 16, gpu_only: bool = False) -> Cluster:
    """Nodes of the Alibaba openb 2023 trace (``openb_node_list_*.csv``: sn,cpu_milli,memory_mib,gpu,model).

    The trace gives no topology: every node is its own interconnect domain, racks group ``nodes_per_rack`` nodes.
    """
    p = Path(path)
    rows = _read_csv(p, {"sn", "cpu_milli", "memory_mib", "gpu", "model"})
    nodes: list[NodeSpec] = []
    for line, r in rows:
        try:
            gpus = int(r["gpu"] or 0)
            node = NodeSpec(
                name=r["sn"],
                accelerator=canonical_model(r["model"]) if gpus else CPU_ONLY,
                devices=gpus,
                cpu_milli=int(float(r["cpu_milli"])),
                memory_mib=int(float(r["memory_mib"])),
                domain=r["sn"],
                rack=f"rack{len(nodes) // nodes_per_rack:04d}",
            )
        except (ValueError, TypeError) as e:
            raise SpecError(f"{p}:{line}: bad node row: {e}") from None
        if gpu_only and not gpus:
            continue
        nodes.append(node)
    return build_cluster(p.stem, nodes)


def load_gfs_nodes(path: str | Path, *, memory_gib_per_cpu: int = 8, nodes_per_rack: int = 16) -> Cluster:
    """Nodes of the Alibaba GFS 2026 trace (``node_info_df.csv``: gpu_model,gpu_capacity_num,cpu_num,node_name).

    The trace has no memory column: each node gets ``memory_gib_per_cpu`` GiB per vCPU (documented assumption).
    """
    p = Path(path)
    rows = _read_csv(p, {"gpu_model", "gpu_capacity_num", "cpu_num", "node_name"})
    nodes: list[NodeSpec] = []
    for line, r in rows:
        try:
            gpus = int(float(r["gpu_capacity_num"] or 0))
            cpus = int(float(r["cpu_num"]))
            nodes.append(
                NodeSpec(
                    name=f"gfs-{r['node_name']}",
                    accelerator=canonical_model(r["gpu_model"]) if gpus else CPU_ONLY,
                    devices=gpus,
                    cpu_milli=cpus * 1000,
                    memory_mib=cpus * memory_gib_per_cpu * 1024,
                    domain=f"gfs-{r['node_name']}",
                    rack=f"rack{len(nodes) // nodes_per_rack:04d}",
                )
            )
        except (ValueError, TypeError) as e:
            raise SpecError(f"{p}:{line}: bad node row: {e}") from None
    return build_cluster(p.stem, nodes)


def load_cluster(path: str | Path) -> Cluster:
    """A cluster from a YAML file or a known node-list CSV (detected from its header)."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        return load_cluster_yaml(p)
    if p.suffix.lower() == ".csv":
        try:
            header = p.open(encoding="utf-8").readline().strip().split(",")
        except FileNotFoundError:
            raise SpecError(f"{p}: no such file") from None
        if {"sn", "gpu", "model"} <= set(header):
            return load_openb_nodes(p)
        if {"gpu_model", "gpu_capacity_num", "node_name"} <= set(header):
            return load_gfs_nodes(p)
        raise SpecError(f"{p}:1: unknown node-list format (columns {header}); expected openb or GFS node list")
    raise SpecError(f"{p}: expected a .yaml cluster file or a .csv node list")
