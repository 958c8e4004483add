"""Placement: where a job fits, if it fits. Never changes the allocation; returns a :class:`Placement` or None.

- Whole devices on one node: best-fit over the (model, free-devices) buckets, O(buckets).
- Several nodes (gang): topology-aware - the fewest nodes (``per_node`` devices each, the node size by default),
  then one interconnect domain if any can hold the job, else one rack, else the fewest racks and domains; inside
  the chosen group, best-fit nodes. Uses the per-domain counters of :class:`Allocation`, O(domains of the model).
- A share of one device (milli < 1000): the fractional packer (best-fit by default, fragmentation-aware ``fgd``).
  A packer with a ``choose_node`` method (``fgd``) also picks the node of a single-node whole-device job and of a
  CPU-only job.
  On a multi-die package (BR100, B200, 910C) a share is rounded up to whole dies so a task never straddles the
  die-to-die link.
- CPU-only jobs: best-fit by CPU, CPU-only nodes first.

Model choice for jobs that accept several accelerator models comes from the caller's ``model_order``.

Partitions: the index ``m`` used below is a *group* (:attr:`Cluster.node_group`): the nodes of one accelerator model
with one partition membership. A job limited to some partitions gets only the groups that meet them as candidates,
so every placement path stays inside its partitions at no extra cost. Without partitions a group is a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from suanli.fleet.model import Cluster
from suanli.sched.alloc import WHOLE, Allocation, Placement
from suanli.workload.spec import Job


def _share(total: int, part: int, whole: int) -> int:
    """Ceil share of ``total`` for ``part`` out of ``whole``."""
    return -(-total * part // whole) if whole else total


class Packer(Protocol):
    """Chooses one device for a fractional request among feasible candidates."""

    name: str

    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int: ...


class BestFitPacker:
    """The device left with the least free share; among equals the node with the fewest free whole devices."""

    name = "best-fit"

    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int:
        free = alloc.dev_free[devs].astype(np.int64)
        nodes = alloc.cluster.dev_node[devs]
        key = (free - need) * 4096 + alloc.node_whole[nodes]
        return int(devs[int(np.argmin(key))])


class RandomPacker:
    """A uniformly random feasible device (the baseline of the FGD paper)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int:
        return int(devs[int(self.rng.integers(len(devs)))])


@dataclass(slots=True)
class PlacementConfig:
    packer: Packer = field(default_factory=BestFitPacker)
    die_aligned: bool = True


class Placer:
    """Finds placements on one cluster. Holds only precomputed topology; all state is in the Allocation."""

    def __init__(self, cluster: Cluster, config: PlacementConfig | None = None) -> None:
        self.cluster = c = cluster
        self.config = config or PlacementConfig()
        self.model_ids = {m: i for i, m in enumerate(c.models)}
        nm = c.n_groups  # the per-"model" tables below are per group (a model split by partition membership)
        self.model_domains = [np.flatnonzero(np.bincount(c.node_domain[c.group_nodes[m]],
                                                         minlength=len(c.domains)) > 0) for m in range(nm)]
        self.model_devs = [np.flatnonzero(c.dev_group == m) for m in range(nm)]
        self.model_all_domains = [len(d) == len(c.domains) for d in self.model_domains]  # sorted, unique
        self.model_dom_rack = [c.domain_rack[d] for d in self.model_domains]
        self.model_dom_max_nodes = [max((len(c.domain_nodes[int(x)]) for x in d), default=0)
                                    for d in self.model_domains]
        self.model_maxd = [int(c.node_devices[c.group_nodes[m]].max()) if len(c.group_nodes[m]) else 0
                           for m in range(nm)]
        self.group_dies = [int(c.model_dies[c.group_model[m]]) for m in range(nm)]
        self.partitioned = bool(c.partitions)
        # groups of each model, any partition membership (the candidates of a job not limited to partitions)
        self._model_groups = [[g for g in range(nm) if c.group_model[g] == mi] for mi in range(len(c.models))]
        self._groups_cache: dict[tuple[int, frozenset[str]], list[int]] = {}
        self._mask_cache: dict[frozenset[str], np.ndarray] = {}
        self.cpu_nodes = np.flatnonzero(c.node_devices == 0)
        self.node_dev_start = c.node_dev_start
        self.node_devices = c.node_devices
        self._dev_start = c.node_dev_start.tolist()
        self._ndev = c.node_devices.tolist()

    # -- model choice ------------------------------------------------------------------------------------
    def candidate_models(self, job: Job, order: Sequence[str] | None = None,
                         partitions: frozenset[str] | None = None) -> list[int]:
        """Group indices (models, split by partition) the job accepts that this cluster has, in preference order.
        ``partitions``: only groups on nodes of these partitions (None: any node)."""
        if job.models is None:
            names = list(order) if order is not None else list(self.cluster.models)
        else:
            names = list(job.models)
            if order is not None:
                rank = {m: i for i, m in enumerate(order)}
                names.sort(key=lambda m: rank.get(m, len(rank)))
        ids = [self.model_ids[m] for m in names if m in self.model_ids]
        if not self.partitioned:
            return ids  # a group is a model
        if partitions is None:
            return [g for mi in ids for g in self._model_groups[mi]]
        out: list[int] = []
        for mi in ids:
            k = (mi, partitions)
            gs = self._groups_cache.get(k)
            if gs is None:
                gs = self._groups_cache[k] = self.cluster.groups_of(mi, partitions)
            out += gs
        return out

    def need_milli(self, job: Job, m: int) -> int:
        if job.milli >= WHOLE or not self.config.die_aligned:
            return job.milli
        dies = self.group_dies[m]
        if dies <= 1:
            return job.milli
        step = WHOLE // dies
        return min(WHOLE, -(-job.milli // step) * step)

    # -- entry --------------------------------------------------------------------------------------------
    def place(self, alloc: Allocation, job: Job, models: Sequence[int],
              partitions: frozenset[str] | None = None) -> tuple[Placement, int] | None:
        """A placement and the group index used (-1: CPU-only), or None. ``models``: candidate group indices in
        order (already limited to the job's partitions); ``partitions`` limits a CPU-only job's nodes."""
        if job.count == 0:
            p = self._place_cpu(alloc, job, partitions)
            return (p, -1) if p is not None else None
        if len(models) > 1 and getattr(self.config.packer, "pool_models", False):
            pooled = self._place_pooled(alloc, job, models)
            if pooled is not None:
                return pooled
        mf = alloc._mf
        for m in models:
            if job.milli < WHOLE:
                p = self._place_fraction(alloc, job, m)
            elif job.count > mf[m]:
                continue
            elif not job.gang:
                p = self._place_scattered(alloc, job, m)
            else:
                per = min(job.per_node or self.model_maxd[m], job.count)
                if per > self.model_maxd[m]:
                    continue
                p = self._place_single(alloc, job, m) if per >= job.count else self._place_multi(alloc, job, m, per)
            if p is not None:
                return p, m
        return None

    def _place_pooled(self, alloc: Allocation, job: Job, models: Sequence[int]) -> tuple[Placement, int] | None:
        """One choice over the nodes of every candidate model at once (a packer with ``pool_models``, as a
        kube-scheduler scores all feasible nodes whatever their GPU model): a share of one device, or whole devices
        on one node with a node-choosing packer. None leaves the job to the per-model loop."""
        c = self.cluster
        if job.milli < WHOLE:
            parts = [self.fraction_candidates(alloc, job, m) for m in models]
            if len({need for _, need in parts}) != 1:
                return None
            devs = np.concatenate([d for d, _ in parts])
            if not len(devs):
                return None
            need = parts[0][1]
            d = self.config.packer.choose(alloc, job, devs, need)
            n = int(c.dev_node[d])
            return Placement((n,), ((d,),), need, (job.cpu_milli,), (job.mem_mib,)), int(c.node_group[n])
        choose_node = getattr(self.config.packer, "choose_node", None)
        if choose_node is None or not job.gang or (job.per_node and job.per_node < job.count):
            return None
        k = job.count
        cand_l: list[int] = []
        for m in models:
            if k > alloc.model_free[m] or k > self.model_maxd[m]:
                continue
            buckets = alloc.buckets[m]
            cand_l.extend(n for w in range(k, len(buckets)) for n in buckets[w])
        cand = np.array(cand_l, dtype=np.int64)
        if len(cand):
            cand = cand[(alloc.node_cpu[cand] >= job.cpu_milli) & (alloc.node_mem[cand] >= job.mem_mib)]
        if not len(cand):
            return None
        n = int(choose_node(alloc, job, cand, k))
        p = Placement((n,), (self._free_devs(alloc, n, k),), WHOLE, (job.cpu_milli,), (job.mem_mib,))
        return p, int(c.node_group[n])

    # -- helpers ------------------------------------------------------------------------------------------
    def _free_devs(self, alloc: Allocation, n: int, k: int) -> tuple[int, ...]:
        s = self._dev_start[n]
        out: list[int] = []
        df, du = alloc._df, alloc._du  # the array.array views: cheap element access
        for d in range(s, s + self._ndev[n]):
            if df[d] == WHOLE and du[d]:
                out.append(d)
                if len(out) == k:
                    break
        return tuple(out)

    def _place_single(self, alloc: Allocation, job: Job, m: int) -> Placement | None:
        k = job.count
        cpu, mem = job.cpu_milli, job.mem_mib
        buckets = alloc.buckets[m]
        ncpu_l, nmem_l = alloc._ncpu, alloc._nmem
        choose_node = getattr(self.config.packer, "choose_node", None)
        if choose_node is not None:  # a packer that also picks nodes for whole devices (fgd, random-fit)
            ncpu, nmem = alloc.node_cpu, alloc.node_mem
            cand = np.array([n for w in range(k, len(buckets)) for n in buckets[w]], dtype=np.int64)
            if len(cand):
                cand = cand[(ncpu[cand] >= cpu) & (nmem[cand] >= mem)]
            if not len(cand):
                return None
            n = int(choose_node(alloc, job, cand, k))
            return Placement((n,), (self._free_devs(alloc, n, k),), WHOLE, (cpu,), (mem,))
        for w in range(k, len(buckets)):
            for n in buckets[w]:
                if ncpu_l[n] >= cpu and nmem_l[n] >= mem:
                    return Placement((n,), (self._free_devs(alloc, n, k),), WHOLE, (cpu,), (mem,))
        return None

    def _node_fits(self, alloc: Allocation, job: Job, n: int, k: int) -> bool:
        return (alloc._ncpu[n] >= _share(job.cpu_milli, k, job.count)
                and alloc._nmem[n] >= _share(job.mem_mib, k, job.count))

    def _pick(self, alloc: Allocation, job: Job, cand: np.ndarray, reqs: list[int]) -> Placement | None:
        """Assign ``reqs`` (devices per node, descending) to distinct nodes of ``cand`` (already in preference
        order); each node must have enough free whole devices, CPU and memory."""
        used: set[int] = set()
        nodes: list[int] = []
        w = alloc.node_whole[cand]
        i = 0
        while i < len(reqs):
            r = reqs[i]
            same = reqs.count(r)  # reqs are a run of equal full-node sizes, then one remainder
            got = 0
            for n in cand[w >= r].tolist():
                if n not in used and self._node_fits(alloc, job, n, r):
                    used.add(n)
                    nodes.append(n)
                    got += 1
                    if got == same:
                        break
            if got < same:
                return None
            i += same
        devs = tuple(self._free_devs(alloc, n, r) for n, r in zip(nodes, reqs, strict=True))
        return Placement(
            tuple(nodes), devs, WHOLE,
            tuple(_share(job.cpu_milli, r, job.count) for r in reqs),
            tuple(_share(job.mem_mib, r, job.count) for r in reqs),
        )

    def _place_multi(self, alloc: Allocation, job: Job, m: int, per: int) -> Placement | None:
        c = self.cluster
        full, rem = divmod(job.count, per)
        reqs = [per] * full + ([rem] if rem else [])
        k = len(reqs)
        low = rem or per
        # quick refusal from the buckets (same counts as the per-rack sums below, without touching numpy)
        bk = alloc.buckets[m]
        ge_per = sum(len(bk[w]) for w in range(per, len(bk)))
        if ge_per < full or ge_per + sum(len(bk[w]) for w in range(low, per)) < k:
            return None
        doms = self.model_domains[m]
        dg = alloc.dom_ge
        if self.model_all_domains[m]:  # the model spans every domain, in order: column views, no gathers
            ge_p, ge_r = dg[:, per], dg[:, low]
        else:
            ge_p, ge_r = dg[doms, per], dg[doms, low]
        up = alloc.node_up
        # 1) one interconnect domain: the tightest that holds the whole job
        # (a domain of fewer nodes than the job needs cannot hold it: skip the scan)
        ok = np.flatnonzero((ge_p >= full) & (ge_r >= k)) if self.model_dom_max_nodes[m] >= k else ()
        if len(ok):
            order = ok[np.lexsort((doms[ok], ge_p[ok]))]
            for di in order[:8].tolist():
                nodes = c.domain_nodes[int(doms[di])]
                nodes = nodes[up[nodes]]
                cand = nodes[np.argsort(alloc.node_whole[nodes], kind="stable")]
                p = self._pick(alloc, job, cand, reqs)
                if p is not None:
                    return p
        # 2) one rack; 3) the fewest racks - nodes ordered rack by rack, fullest domains first, best-fit inside
        drack = self.model_dom_rack[m]
        nr = len(c.racks)
        rack_p = np.bincount(drack, weights=ge_p, minlength=nr)
        rack_r = np.bincount(drack, weights=ge_r, minlength=nr)
        if rack_r.sum() < k or rack_p.sum() < full:
            return None
        fit_rack = (rack_p >= full) & (rack_r >= k)
        if fit_rack.any():
            # tightest single rack first, then the others by capacity
            rack_rank = np.where(fit_rack, rack_p, rack_p.max() + 1 + (rack_p.max() - rack_p))
            lead_racks = [int(np.argmin(rack_rank))]  # it holds the job alone
        else:
            rack_rank = -rack_p  # largest racks first: fewest racks
            rorder = np.argsort(rack_rank, kind="stable")  # rank, then rack id
            enough = (np.cumsum(rack_p[rorder]) >= full) & (np.cumsum(rack_r[rorder]) >= k)
            lead_racks = rorder[: int(np.argmax(enough)) + 1].tolist()
        # The order is rack by rack (rank, then rack id). First try only the leading racks that can hold the job:
        # their nodes are a prefix of the full order, so a pick that succeeds there is the pick of the full order,
        # for a sort of a few racks' nodes instead of all of the model's.
        wh = alloc.node_whole
        if len(lead_racks) < nr:
            rn = c.rack_nodes
            sub = rn[lead_racks[0]] if len(lead_racks) == 1 else np.concatenate([rn[r] for r in lead_racks])
            sub = sub[(c.node_group[sub] == m) & up[sub] & (wh[sub] >= low)]
            p = self._pick(alloc, job, self._rack_order(alloc, sub, c.node_rack[sub], rack_rank, low), reqs)
            if p is not None:
                return p
        nodes = c.group_nodes[m]
        nodes = nodes[up[nodes] & (wh[nodes] >= low)]
        return self._pick(alloc, job, self._rack_order(alloc, nodes, c.node_rack[nodes], rack_rank, low), reqs)

    def _rack_order(self, alloc: Allocation, nodes: np.ndarray, nrack: np.ndarray, rack_rank: np.ndarray,
                    low: int) -> np.ndarray:
        """Nodes rack by rack (rank, rack id), fullest domains first, best-fit inside."""
        ndom = self.cluster.node_domain[nodes]
        dom_cnt = alloc.dom_ge[ndom, low]
        order = np.lexsort((nodes, alloc.node_whole[nodes], ndom, -dom_cnt, nrack, rack_rank[nrack]))
        return nodes[order]

    def _place_scattered(self, alloc: Allocation, job: Job, m: int) -> Placement | None:
        """A non-gang multi-device job: devices anywhere, most-packed nodes first (no topology constraint)."""
        nodes = self.cluster.group_nodes[m]
        nodes = nodes[alloc.node_up[nodes] & (alloc.node_whole[nodes] > 0)]
        order = nodes[np.lexsort((nodes, alloc.node_whole[nodes]))]
        reqs: list[int] = []
        chosen: list[int] = []
        left = job.count
        for n in order.tolist():
            take = min(int(alloc.node_whole[n]), left)
            if take and self._node_fits(alloc, job, n, take):
                chosen.append(n)
                reqs.append(take)
                left -= take
                if not left:
                    break
        if left:
            return None
        return Placement(
            tuple(chosen), tuple(self._free_devs(alloc, n, r) for n, r in zip(chosen, reqs, strict=True)), WHOLE,
            tuple(_share(job.cpu_milli, r, job.count) for r in reqs),
            tuple(_share(job.mem_mib, r, job.count) for r in reqs),
        )

    def fraction_candidates(self, alloc: Allocation, job: Job, m: int) -> tuple[np.ndarray, int]:
        need = self.need_milli(job, m)
        devs = self.model_devs[m]
        nodes = self.cluster.dev_node[devs]
        ok = ((alloc.dev_free[devs] >= need) & alloc.dev_up[devs] & alloc.node_up[nodes]
              & (alloc.node_cpu[nodes] >= job.cpu_milli) & (alloc.node_mem[nodes] >= job.mem_mib))
        return devs[ok], need

    def _place_fraction(self, alloc: Allocation, job: Job, m: int) -> Placement | None:
        devs, need = self.fraction_candidates(alloc, job, m)
        if not len(devs):
            return None
        d = self.config.packer.choose(alloc, job, devs, need)
        n = int(self.cluster.dev_node[d])
        return Placement((n,), ((d,),), need, (job.cpu_milli,), (job.mem_mib,))

    def partition_mask(self, partitions: frozenset[str]) -> np.ndarray:
        """Nodes in any of ``partitions``."""
        m = self._mask_cache.get(partitions)
        if m is None:
            m = np.zeros(self.cluster.n_nodes, dtype=bool)
            for pa in partitions:
                nd = self.cluster.partition_nodes.get(pa)
                if nd is not None:
                    m[nd] = True
            self._mask_cache[partitions] = m
        return m

    def _place_cpu(self, alloc: Allocation, job: Job, partitions: frozenset[str] | None = None) -> Placement | None:
        c = self.cluster
        ok = alloc.node_up & (alloc.node_cpu >= job.cpu_milli) & (alloc.node_mem >= job.mem_mib)
        if partitions is not None and self.partitioned:
            ok &= self.partition_mask(partitions)
        cand = np.flatnonzero(ok)
        if not len(cand):
            return None
        choose_node = getattr(self.config.packer, "choose_node", None)
        if choose_node is not None:  # a node-choosing packer weighs what the CPU it takes costs GPU tasks
            n = int(choose_node(alloc, job, cand, 0))
            return Placement((n,), ((),), WHOLE, (job.cpu_milli,), (job.mem_mib,))
        key = (c.node_devices[cand] > 0).astype(np.int64) * (1 << 40) + alloc.node_cpu[cand]
        n = int(cand[int(np.argmin(key))])
        return Placement((n,), ((),), WHOLE, (job.cpu_milli,), (job.mem_mib,))
