"""Fragmentation-aware packing (after Weng et al., "Beware of Fragmentation", USENIX ATC'23 - FGD).

The fragmentation of a node for a task class ``m`` is the free GPU share on that node that a task of class ``m``
could not use:

- the node cannot take the task at all (CPU, memory, too few GPUs): all its free GPU share;
- a shared-GPU task asking ``d < 1`` GPU: the free share of the GPUs with less than ``d`` free;
- a task of ``k >= 1`` whole GPUs: the free share of partly used GPUs;
- a CPU-only task: nothing.

For the expected workload ``M`` (the popularity ``p_m`` of each task class), ``F_n(M) = sum_m p_m F_n(m)``. A new
task goes where it *increases* ``F(M)`` the least (fragmentation gradient descent); ties go to the fuller node.
The popularity is learned from the submitted tasks (:meth:`observe`, which :class:`~suanli.sched.state.SchedState`
calls on submission, so that ``decide`` stays pure) or given with :meth:`fit`, keeping the ``top`` most popular
classes. Costs O(candidates x classes) vectorized, after folding devices of one node with the
same free share into one candidate.

GPU-model constraints and CPU-only nodes are not part of the measure (the openb evaluation has none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from suanli.sched.alloc import WHOLE, Allocation
from suanli.workload.spec import Job

_Class = tuple[int, int, int, int]  # (count, milli, cpu_milli, mem_mib)


def _cls(job: Job) -> _Class:
    return (job.count, job.milli, job.cpu_milli, job.mem_mib)


class FragmentationPacker:
    """FGD-style packer: fractional device choice (``choose``) and whole-device node choice (``choose_node``)."""

    name = "fgd"

    def __init__(self, top: int = 32, refresh: int = 256, cpu_weight: float = 5.0, cpu_scale: float = 1.5
                 ) -> None:
        self.top = top
        self.cpu_weight = cpu_weight
        self.cpu_scale = cpu_scale
        self.refresh = refresh
        self.counts: Counter[_Class] = Counter()
        self._seen: set[int | str] = set()
        self._new = 0
        self._arrays: tuple[np.ndarray, ...] | None = None

    # -- the workload model ---------------------------------------------------------------------------------
    def fit(self, jobs: Iterable[Job]) -> FragmentationPacker:
        """Set the expected task distribution from a workload (FGD assumes the target workload is known)."""
        self.counts = Counter(_cls(j) for j in jobs)
        self._arrays = None
        return self

    def observe(self, job: Job) -> None:
        if job.id in self._seen:
            return
        if len(self._seen) > 200_000:
            self._seen.clear()
        self._seen.add(job.id)
        self.counts[_cls(job)] += 1
        self._new += 1
        if self._arrays is None or self._new >= self.refresh:
            self._arrays = None

    def _classes(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._new = 0
            top = self.counts.most_common(self.top)
            if not top:
                top = [((1, WHOLE, 0, 0), 1)]
            a = np.array([c for c, _ in top], dtype=np.int64)
            p = np.array([n for _, n in top], dtype=np.float64)
            p /= p.sum()
            # count, milli, cpu, mem, popularity, whole-GPU class, share class
            self._arrays = (a[:, 0], a[:, 1], a[:, 2], a[:, 3], p, (a[:, 0] >= 1) & (a[:, 1] >= WHOLE),
                            (a[:, 0] == 1) & (a[:, 1] < WHOLE))
            gpu = a[:, 0] * a[:, 1]
            # CPU the GPU tasks bring per milli-GPU (popularity-weighted): what free GPUs will need
            self._cpu_per_milli = float((p * a[:, 2])[gpu > 0].sum() / max((p * gpu)[gpu > 0].sum(), 1e-9))
        return self._arrays

    # -- node aggregates ------------------------------------------------------------------------------------
    def _node_terms(self, alloc: Allocation, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node: total free share S, partly-free share P (free < WHOLE), and per class the share on GPUs with
        less free than the class asks (Q, [nodes x classes])."""
        c = alloc.cluster
        cnt, milli = self._classes()[0], self._classes()[1]
        starts = c.node_dev_start[nodes]
        ndev = c.node_devices[nodes].astype(np.int64)
        g = int(ndev.max()) if len(ndev) else 0
        idx = starts[:, None] + np.arange(g)[None, :]
        valid = np.arange(g)[None, :] < ndev[:, None]
        idx = np.where(valid, idx, 0)
        free = np.where(valid & alloc.dev_up[idx], alloc.dev_free[idx], 0).astype(np.int64)  # [N, G]
        s = free.sum(axis=1)
        part = np.where(free < WHOLE, free, 0).sum(axis=1)
        q = (free[:, :, None] * (free[:, :, None] < milli[None, None, :])).sum(axis=1)  # [N, K]
        del cnt
        return s, part, q

    def _frag(self, s: np.ndarray, part: np.ndarray, q: np.ndarray, full: np.ndarray, cpu: np.ndarray,
              mem: np.ndarray) -> np.ndarray:
        """F(M) for candidate states (arrays of one length; ``q`` is [n, classes])."""
        cnt, _, ccpu, cmem, p, whole, share = self._classes()
        fits = (cpu[:, None] >= ccpu[None, :]) & (mem[:, None] >= cmem[None, :])
        fits &= ~whole[None, :] | (full[:, None] >= cnt[None, :])
        fits &= ~share[None, :] | (q < s[:, None])  # some GPU has at least the share free
        f = np.where(whole[None, :], part[:, None], np.where(share[None, :], q, 0))
        f = np.where(fits, f, s[:, None])
        out = f @ p
        if self.cpu_weight:
            # free GPU share that the node's free CPU cannot feed (at the workload's CPU per GPU): stranded soon
            out = out + self.cpu_weight * np.maximum(0.0, s - cpu / max(self._cpu_per_milli * self.cpu_scale, 1e-9))
        return out

    # -- Packer protocol ------------------------------------------------------------------------------------
    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int:
        c = alloc.cluster
        nodes_all = c.dev_node[devs]
        free_d = alloc.dev_free[devs].astype(np.int64)
        # one candidate per (node, free share): devices alike on one node give the same result
        key = nodes_all.astype(np.int64) * (WHOLE + 1) + free_d
        _, first = np.unique(key, return_index=True)
        d = devs[first]
        n = nodes_all[first]
        fd = free_d[first]
        un, inv = np.unique(n, return_inverse=True)
        s, part, q = self._node_terms(alloc, un)
        full = alloc.node_whole[un].astype(np.int64)
        cpu = alloc.node_cpu[un].astype(np.int64)
        mem = alloc.node_mem[un].astype(np.int64)
        before = self._frag(s, part, q, full, cpu, mem)[inv]
        milli = self._classes()[1]
        nf = fd - need
        s2 = s[inv] - need
        part2 = part[inv] - np.where(fd < WHOLE, fd, 0) + nf
        q2 = q[inv] - fd[:, None] * (fd[:, None] < milli[None, :]) + nf[:, None] * (nf[:, None] < milli[None, :])
        full2 = full[inv] - (fd == WHOLE)
        after = self._frag(s2, part2, q2, full2, cpu[inv] - job.cpu_milli, mem[inv] - job.mem_mib)
        # least increase; then the fullest GPU (best fit), then the fuller node
        order = np.lexsort((s2, nf, np.round(after - before, 6)))
        return int(d[order[0]])

    def choose_node(self, alloc: Allocation, job: Job, nodes: np.ndarray, k: int) -> int:
        """A node for ``k`` whole devices among ``nodes`` (each has k free whole devices, CPU and memory)."""
        s, part, q = self._node_terms(alloc, nodes)
        full = alloc.node_whole[nodes].astype(np.int64)
        cpu = alloc.node_cpu[nodes].astype(np.int64)
        mem = alloc.node_mem[nodes].astype(np.int64)
        before = self._frag(s, part, q, full, cpu, mem)
        after = self._frag(s - k * WHOLE, part, q, full - k, cpu - job.cpu_milli, mem - job.mem_mib)
        # least increase; then the node with the least free GPU share left (best fit: for a CPU-only task, a node
        # whose GPUs are taken anyway), then the fewest free whole GPUs
        order = np.lexsort((nodes, cpu, full, s, np.round(after - before, 6)))
        return int(nodes[order[0]])


class RandomFitPacker:
    """Random-fit for every task, as the FGD artifact's ``RandomScore`` with ``gpuSelMethod: random``: a feasible node
    drawn uniformly, then on it a feasible device drawn uniformly for a shared-GPU task (whole devices: the node's
    first free ones). ``RandomPacker`` randomizes only shared tasks."""

    name = "random-fit"
    pool_models = False  # the replay sets it: one draw over the nodes of every GPU model

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int:
        nodes = alloc.cluster.dev_node[devs]
        un = np.unique(nodes)
        n = un[int(self.rng.integers(len(un)))]
        on = devs[nodes == n]
        return int(on[int(self.rng.integers(len(on)))])

    def choose_node(self, alloc: Allocation, job: Job, nodes: np.ndarray, k: int) -> int:
        return int(nodes[int(self.rng.integers(len(nodes)))])


MAX_SPEC_CPU = 128_000  # milli-CPU: the FGD artifact's normalizers for BestFit (open-gpu-share utils/const.go)
MAX_SPEC_GPU = 8 * WHOLE


class BestFitNodePacker:
    """Best-fit for every task, as the FGD artifact's ``BestFitScore`` plugin: a node scores
    ``int(100 * (1 - (0.5 (free CPU - asked) / 128 CPU + 0.5 (free GPU share - asked) / 8 GPU)))`` (the int
    truncation included), the highest score wins and ties are drawn at random (kube-scheduler's ``selectHost``); on
    the node, a shared task takes the GPU with the least free share that fits (first index on ties) and whole
    devices are the node's first free ones. Memory is not scored. The scheduler's own ``best-fit`` packer only
    chooses GPUs for shared tasks and leaves whole-GPU and CPU-only tasks to the placer's defaults."""

    name = "best-fit-node"
    pool_models = False  # the replay sets it: one choice over the nodes of every GPU model

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def _score(self, alloc: Allocation, nodes: np.ndarray, gpu_take: int, cpu_take: int) -> np.ndarray:
        c = alloc.cluster
        starts = c.node_dev_start[nodes]
        ndev = c.node_devices[nodes].astype(np.int64)
        g = max(int(ndev.max()) if len(ndev) else 0, 1)
        idx = starts[:, None] + np.arange(g)[None, :]
        valid = np.arange(g)[None, :] < ndev[:, None]
        free = np.where(valid, alloc.dev_free[np.where(valid, idx, 0)], 0).sum(axis=1)
        left = (0.5 * (alloc.node_cpu[nodes] - cpu_take) / MAX_SPEC_CPU
                + 0.5 * (free - gpu_take) / MAX_SPEC_GPU)
        return ((1.0 - left) * 100).astype(np.int64)

    def _pick_node(self, alloc: Allocation, nodes: np.ndarray, gpu_take: int, cpu_take: int) -> int:
        score = self._score(alloc, nodes, gpu_take, cpu_take)
        best = nodes[score == score.max()]
        return int(best[int(self.rng.integers(len(best)))])

    def choose(self, alloc: Allocation, job: Job, devs: np.ndarray, need: int) -> int:
        nodes = alloc.cluster.dev_node[devs]
        n = self._pick_node(alloc, np.unique(nodes), need, job.cpu_milli)
        on = devs[nodes == n]
        order = np.lexsort((on, alloc.dev_free[on]))
        return int(on[order[0]])

    def choose_node(self, alloc: Allocation, job: Job, nodes: np.ndarray, k: int) -> int:
        return self._pick_node(alloc, nodes, k * WHOLE, job.cpu_milli)
