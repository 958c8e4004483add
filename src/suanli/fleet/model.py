"""The fleet: devices, nodes, interconnect domains, racks and the cluster.

A :class:`Cluster` is immutable topology. It keeps numpy arrays indexed by node and device so that the scheduler can
work on integers, plus name lookups for people. A multi-die package (BR100, B200, 910C) is *one* device whose die
count is known (``Cluster.model_dies``); placement uses it to keep fractional tasks on one die.

Free capacity is not here: it lives in :class:`suanli.sched.state.ClusterState`, which the simulator and the
controller each own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from suanli.catalog.accelerators import accelerator, is_known_accelerator

CPU_ONLY = ""  # accelerator model name of a node without accelerators


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node as described by a cluster file, a trace's node list, a generator or discovery."""

    name: str
    accelerator: str  # catalog key, or an opaque model name from a trace, or CPU_ONLY
    devices: int
    cpu_milli: int
    memory_mib: int
    domain: str  # interconnect domain (NVLink/BLink/HCCS island of the node, or a supernode spanning nodes)
    rack: str
    labels: tuple[tuple[str, str], ...] = ()
    partitions: tuple[str, ...] = ()  # partitions (Slurm-style) the node belongs to; () = none

    def __post_init__(self) -> None:
        if self.devices < 0 or self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"node {self.name}: negative capacity")
        if self.devices and not self.accelerator:
            raise ValueError(f"node {self.name}: has {self.devices} devices but no accelerator model")


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    node: int
    local_index: int
    model: str
    dies: int


@dataclass(slots=True)
class Cluster:
    """Immutable topology of a fleet, with array views for the scheduler."""

    name: str
    nodes: tuple[NodeSpec, ...]
    models: tuple[str, ...] = field(init=False)  # distinct accelerator models, index = model id
    model_dies: np.ndarray = field(init=False)  # int16 [n_models]
    domains: tuple[str, ...] = field(init=False)
    racks: tuple[str, ...] = field(init=False)
    node_model: np.ndarray = field(init=False)  # int16 [n_nodes], -1 for CPU-only
    node_devices: np.ndarray = field(init=False)  # int16 [n_nodes]
    node_cpu: np.ndarray = field(init=False)  # int64 milli-cores
    node_mem: np.ndarray = field(init=False)  # int64 MiB
    node_domain: np.ndarray = field(init=False)  # int32
    node_rack: np.ndarray = field(init=False)  # int32
    node_dev_start: np.ndarray = field(init=False)  # int64: first device id of node; devices are contiguous
    dev_node: np.ndarray = field(init=False)  # int32 [n_devices]
    dev_model: np.ndarray = field(init=False)  # int16 [n_devices]
    domain_nodes: tuple[np.ndarray, ...] = field(init=False)  # node ids per domain
    rack_nodes: tuple[np.ndarray, ...] = field(init=False)
    domain_rack: np.ndarray = field(init=False)  # rack of a domain's first node
    model_nodes: tuple[np.ndarray, ...] = field(init=False)  # node ids per model
    # Partitions: named sets of nodes (a node may be in several). The scheduler indexes free capacity by *group*:
    # the nodes of one accelerator model with one partition membership. Without partitions a group is a model
    # (same index, same order), so nothing changes for clusters that name none.
    partitions: tuple[str, ...] = field(init=False)
    partition_nodes: dict[str, np.ndarray] = field(init=False)
    group_model: np.ndarray = field(init=False)  # int16 [n_groups] model index of each group
    group_partitions: tuple[frozenset[str], ...] = field(init=False)
    node_group: np.ndarray = field(init=False)  # int16 [n_nodes], -1 for CPU-only
    dev_group: np.ndarray = field(init=False)  # int16 [n_devices]
    group_nodes: tuple[np.ndarray, ...] = field(init=False)
    max_devices_per_node: int = field(init=False)
    _node_by_name: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        nodes = self.nodes
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate node name {dup!r}")
        self._node_by_name = {n: i for i, n in enumerate(names)}
        models: list[str] = []
        for n in nodes:
            if n.devices and n.accelerator not in models:
                models.append(n.accelerator)
        self.models = tuple(models)
        model_id = {m: i for i, m in enumerate(models)}
        self.model_dies = np.array(
            [accelerator(m).dies_or_one if is_known_accelerator(m) else 1 for m in models], dtype=np.int16
        )
        dom_names: dict[str, int] = {}
        rack_names: dict[str, int] = {}
        k = len(nodes)
        self.node_model = np.full(k, -1, dtype=np.int16)
        self.node_devices = np.zeros(k, dtype=np.int16)
        self.node_cpu = np.zeros(k, dtype=np.int64)
        self.node_mem = np.zeros(k, dtype=np.int64)
        self.node_domain = np.zeros(k, dtype=np.int32)
        self.node_rack = np.zeros(k, dtype=np.int32)
        part_names: dict[str, None] = {}
        groups: dict[tuple[int, frozenset[str]], int] = {(m, frozenset()): m for m in range(len(models))}
        self.node_group = np.full(k, -1, dtype=np.int16)
        for i, n in enumerate(nodes):
            self.node_model[i] = model_id[n.accelerator] if n.devices else -1
            self.node_devices[i] = n.devices
            self.node_cpu[i] = n.cpu_milli
            self.node_mem[i] = n.memory_mib
            for pa in n.partitions:
                part_names.setdefault(pa, None)
            if n.devices:
                self.node_group[i] = groups.setdefault((int(self.node_model[i]), frozenset(n.partitions)), len(groups))
            # an interconnect domain split by partition membership is one domain per part (a job uses only its own)
            dom = n.domain if not n.partitions else f"{n.domain}@{'+'.join(sorted(n.partitions))}"
            self.node_domain[i] = dom_names.setdefault(dom, len(dom_names))
            self.node_rack[i] = rack_names.setdefault(n.rack, len(rack_names))
        self.domains = tuple(dom_names)
        self.racks = tuple(rack_names)
        counts = self.node_devices.astype(np.int64)
        self.node_dev_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if k else counts
        self.dev_node = np.repeat(np.arange(k, dtype=np.int32), counts)
        self.dev_model = np.repeat(self.node_model, counts).astype(np.int16)
        order = np.argsort(self.node_domain, kind="stable")
        bounds = np.searchsorted(self.node_domain[order], np.arange(len(self.domains) + 1))
        self.domain_nodes = tuple(order[bounds[d] : bounds[d + 1]] for d in range(len(self.domains)))
        order = np.argsort(self.node_rack, kind="stable")
        bounds = np.searchsorted(self.node_rack[order], np.arange(len(self.racks) + 1))
        self.rack_nodes = tuple(order[bounds[r] : bounds[r + 1]] for r in range(len(self.racks)))
        self.domain_rack = np.array([self.node_rack[nd[0]] for nd in self.domain_nodes], dtype=np.int32)
        for d, nd in enumerate(self.domain_nodes):
            if len(set(self.node_model[nd].tolist())) > 1:
                raise ValueError(f"interconnect domain {self.domains[d]!r} mixes accelerator models")
        self.model_nodes = tuple(np.flatnonzero(self.node_model == m) for m in range(len(models)))
        self.partitions = tuple(part_names)
        self.partition_nodes = {pa: np.array([i for i, n in enumerate(nodes) if pa in n.partitions], dtype=np.int64)
                                for pa in self.partitions}
        used = sorted(set(self.node_group[self.node_group >= 0].tolist()))
        if used != list(range(len(used))):  # models whose every node is in some partition: renumber densely
            remap = np.full(len(groups), -1, dtype=np.int16)
            remap[used] = np.arange(len(used), dtype=np.int16)
            self.node_group = np.where(self.node_group >= 0, remap[self.node_group], -1).astype(np.int16)
            groups = {g: int(remap[i]) for g, i in groups.items() if remap[i] >= 0}
        by_id = sorted(groups.items(), key=lambda t: t[1])
        self.group_model = np.array([m for (m, _), _ in by_id], dtype=np.int16)
        self.group_partitions = tuple(ps for (_, ps), _ in by_id)
        self.dev_group = np.repeat(self.node_group, counts).astype(np.int16)
        self.group_nodes = tuple(np.flatnonzero(self.node_group == g) for g in range(len(by_id)))
        self.max_devices_per_node = int(self.node_devices.max()) if k else 0

    # -- sizes -------------------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_groups(self) -> int:
        return len(self.group_model)

    def groups_of(self, model: int, partitions: frozenset[str] | None) -> list[int]:
        """Groups of ``model`` usable by a job limited to ``partitions`` (None: any node, in or out of partitions)."""
        return [g for g in range(self.n_groups) if self.group_model[g] == model
                and (partitions is None or not self.group_partitions[g].isdisjoint(partitions))]

    @property
    def n_devices(self) -> int:
        return int(self.dev_node.shape[0])

    def devices_of_model(self, model: str) -> int:
        m = self.model_index(model)
        return 0 if m is None else int(self.node_devices[self.node_model == m].sum())

    def model_index(self, model: str) -> int | None:
        try:
            return self.models.index(model)
        except ValueError:
            return None

    def node_index(self, name: str) -> int:
        return self._node_by_name[name]

    def device(self, index: int) -> Device:
        n = int(self.dev_node[index])
        return Device(
            index=index,
            node=n,
            local_index=int(index - self.node_dev_start[n]),
            model=self.models[int(self.dev_model[index])],
            dies=int(self.model_dies[int(self.dev_model[index])]),
        )

    def node_devices_ids(self, node: int) -> range:
        s = int(self.node_dev_start[node])
        return range(s, s + int(self.node_devices[node]))

    def summary(self) -> dict[str, object]:
        """A small description for reports: chips per model, nodes, domains, racks."""
        return {
            "name": self.name,
            "nodes": self.n_nodes,
            "devices": self.n_devices,
            "dies": int(sum(int(self.model_dies[m]) * self.devices_of_model(x) for m, x in enumerate(self.models))),
            "models": {m: self.devices_of_model(m) for m in self.models},
            "domains": len(self.domains),
            "racks": len(self.racks),
            **({"partitions": {pa: int(self.node_devices[nd].sum()) for pa, nd in self.partition_nodes.items()}}
               if self.partitions else {}),
        }


def build_cluster(name: str, nodes: Iterable[NodeSpec]) -> Cluster:
    return Cluster(name=name, nodes=tuple(nodes))


def canonical_model(name: str) -> str:
    """Catalog key for a known accelerator name, otherwise the name as given (an opaque trace model)."""
    if not name:
        return CPU_ONLY
    return accelerator(name).key if is_known_accelerator(name) else name


def generate_nodes(
    chips: int,
    model: str,
    per_node: int = 8,
    *,
    nodes_per_domain: int = 1,
    nodes_per_rack: int = 4,
    cpu_cores: int = 128,
    memory_gib: int = 2048,
    prefix: str | None = None,
) -> list[NodeSpec]:
    """Nodes for ``chips`` accelerators of ``model``, ``per_node`` each (the last node takes the remainder)."""
    if chips <= 0 or per_node <= 0:
        raise ValueError("chips and per_node must be positive")
    key = canonical_model(model)
    pre = prefix or key.lower()
    out: list[NodeSpec] = []
    left = chips
    i = 0
    while left > 0:
        d = min(per_node, left)
        out.append(
            NodeSpec(
                name=f"{pre}-{i:05d}",
                accelerator=key,
                devices=d,
                cpu_milli=cpu_cores * 1000,
                memory_mib=memory_gib * 1024,
                domain=f"{pre}-dom{i // max(1, nodes_per_domain):05d}",
                rack=f"{pre}-rack{i // max(1, nodes_per_rack):05d}",
            )
        )
        left -= d
        i += 1
    return out


def generate_cluster(
    chips: int,
    models: Sequence[str] | str = "H100",
    per_node: int = 8,
    *,
    nodes_per_domain: int = 1,
    nodes_per_rack: int = 4,
    name: str | None = None,
) -> Cluster:
    """A generated cluster of ``chips`` accelerators split evenly over ``models`` (one pool per model)."""
    ms = [models] if isinstance(models, str) else list(models)
    if not ms:
        raise ValueError("at least one accelerator model is needed")
    nodes: list[NodeSpec] = []
    share = chips // len(ms)
    for i, m in enumerate(ms):
        c = share + (chips - share * len(ms) if i == len(ms) - 1 else 0)
        nodes += generate_nodes(c, m, per_node, nodes_per_domain=nodes_per_domain, nodes_per_rack=nodes_per_rack)
    return build_cluster(name or f"generated-{chips}", nodes)
