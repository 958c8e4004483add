"""Free capacity of a cluster with an incremental index, so that placement costs O(buckets), not O(nodes).

:class:`Allocation` owns, for every device, its free share in milli-devices (1000 = wholly free) and, for every
node, its free whole devices, CPU and memory. It indexes nodes in buckets by (model, free whole devices) and keeps,
per interconnect domain, how many nodes have at least ``p`` free whole devices. Every change goes
through :meth:`take` / :meth:`give`, which keep the index right in O(devices touched).

A journal (:meth:`begin` / :meth:`rollback`) lets the scheduler try placements on the real index and then put it
back exactly, which keeps ``decide`` a pure function without copying 100,000-device arrays on every pass.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from suanli.fleet.model import Cluster

WHOLE = 1000


@dataclass(slots=True, unsafe_hash=True)
class Placement:
    """Where a job runs: one entry per node it uses. Treat it as immutable (it is hashable by value); it is not a
    frozen dataclass because a frozen one costs several times as much to build, and one is built per start."""

    nodes: tuple[int, ...]
    devices: tuple[tuple[int, ...], ...]  # device ids on each node
    milli: int  # share of each device (1000 = whole device)
    cpu_milli: tuple[int, ...]  # per node
    mem_mib: tuple[int, ...]  # per node
    n_devices: int = field(init=False, compare=False, repr=False)  # devices in all (computed once: read very often)

    def __post_init__(self) -> None:
        self.n_devices = sum(map(len, self.devices))

    @property
    def device_ids(self) -> tuple[int, ...]:
        return tuple(d for ds in self.devices for d in ds)


def _shared(typecode: str, values: np.ndarray) -> tuple[array, np.ndarray]:
    """An array.array holding ``values`` and a numpy view of the same memory."""
    a = array(typecode)
    a.frombytes(np.ascontiguousarray(values).tobytes())
    return a, np.frombuffer(a, dtype=values.dtype)


class Allocation:
    """Mutable free-capacity state of one cluster, with the placement index."""

    def __init__(self, cluster: Cluster) -> None:
        c = cluster
        self.cluster = c
        self.maxd = max(1, c.max_devices_per_node)
        # Each mutable per-device / per-node array is one buffer seen two ways: the numpy array (public, for
        # vectorized reads) and an array.array (private ``_df``...), whose element access is several times cheaper
        # than numpy scalar indexing in the per-device loops below. Both always show the same values.
        self._df, self.dev_free = _shared("i", np.full(c.n_devices, WHOLE, dtype=np.int32))
        self._du, self.dev_up = _shared("b", np.ones(c.n_devices, dtype=bool))
        self._nw, self.node_whole = _shared("i", c.node_devices.astype(np.int32))
        self._ncpu, self.node_cpu = _shared("q", c.node_cpu.astype(np.int64))
        self._nmem, self.node_mem = _shared("q", c.node_mem.astype(np.int64))
        self._nup, self.node_up = _shared("b", np.ones(c.n_nodes, dtype=bool))
        nm = c.n_groups  # the index is per group: an accelerator model, split by partition membership
        self._mf, self.model_free = _shared("q", np.zeros(max(nm, 1), dtype=np.int64))
        self._dom_ge = np.zeros((len(c.domains), self.maxd + 1), dtype=np.int32)
        # changes not yet in _dom_ge, as a difference along p: +v at [domain, a] and -v at [domain, b] adds v to
        # the counts for a <= p < b; flat (domain * (maxd + 2) + p) in an array.array, the cells touched listed
        self._dw = self.maxd + 2
        self._dd, self._dd_np = _shared("i", np.zeros(len(c.domains) * self._dw, dtype=np.int32))
        self._dd_touched: list[int] = []
        # buckets[m][w]: nodes of group m with exactly w free whole devices (w >= 1); dicts keep insertion order
        self.buckets: list[list[dict[int, None]]] = [[{} for _ in range(self.maxd + 1)] for _ in range(nm)]
        self._node_model = c.node_group.tolist()
        self._node_domain = c.node_domain.tolist()
        self._node_dbase = (c.node_domain.astype(np.int64) * self._dw).tolist()  # the node's row in _dd
        self._dev_node = c.dev_node
        self._dev_node_list = c.dev_node.tolist()
        for n in range(c.n_nodes):
            self._index(n, int(self.node_whole[n]), +1)
        self._journal: dict[int, tuple[int, int, int]] | None = None
        self._dev_journal: dict[int, int] | None = None

    # -- index maintenance --------------------------------------------------------------------------------
    @property
    def dom_ge(self) -> np.ndarray:
        """[domain, p]: nodes of the domain (up) with at least ``p`` free whole devices. Changes are collected in
        a dict (a few dict updates per change instead of a numpy slice update) and folded in when it is read."""
        t = self._dd_touched
        if t:
            w = self._dw
            doms = np.unique(np.array(t, dtype=np.int64) // w)
            rows = self._dd_np.reshape(-1, w)
            diff = rows[doms]
            self._dom_ge[doms] += np.cumsum(diff, axis=1, dtype=np.int32)[:, : self.maxd + 1]
            rows[doms] = 0
            t.clear()
        return self._dom_ge

    @dom_ge.setter
    def dom_ge(self, value: np.ndarray) -> None:
        self._dom_ge = value
        self._dd_np[:] = 0
        self._dd_touched.clear()

    def _index(self, n: int, w: int, sign: int) -> None:
        """Add (sign=+1) or remove (-1) node ``n`` with ``w`` free whole devices to/from the index."""
        m = self._node_model[n]
        if m < 0 or not self._nup[n]:
            return
        if w > 0:
            if sign > 0:
                self.buckets[m][w][n] = None
            else:
                del self.buckets[m][w][n]
            self._mf[m] += sign * w
        dd = self._dd
        i = self._node_dbase[n]
        dd[i] += sign
        dd[i + w + 1] -= sign
        self._dd_touched.append(i)

    def _set_whole(self, n: int, w: int) -> None:
        nw = self._nw
        old = nw[n]
        if old == w:
            return
        nw[n] = w
        m = self._node_model[n]
        if m < 0 or not self._nup[n]:
            return
        # same as _index(n, old, -1) then _index(n, w, +1), with one numpy update per array
        b = self.buckets[m]
        if old > 0:
            del b[old][n]
        if w > 0:
            b[w][n] = None
        self._mf[m] += w - old
        dd = self._dd
        i = self._node_dbase[n] + 1
        if w > old:  # counts for p in (old, w] grow by one
            dd[i + old] += 1
            dd[i + w] -= 1
        else:  # ... in (w, old] shrink by one
            dd[i + w] -= 1
            dd[i + old] += 1
        self._dd_touched.append(i)

    def _touch(self, n: int) -> None:
        j = self._journal
        if j is not None and n not in j:
            j[n] = (self._nw[n], self._ncpu[n], self._nmem[n])

    # -- changes ------------------------------------------------------------------------------------------
    def take(self, p: Placement, check: bool = True) -> None:
        """Allocate ``p``; raises ValueError (and changes nothing) if it does not fit. ``check=False``: the caller
        knows it fits (the placer just found it on this allocation) - skips the per-device checks."""
        if check:
            self._check_fits(p)
        dj = self._dev_journal
        j = self._journal
        df = self._df
        milli = p.milli
        # (no strict=: it costs ~1 us a call; a Placement's tuples have one entry per node by construction)
        for n, ds, cpu, mem in zip(p.nodes, p.devices, p.cpu_milli, p.mem_mib):  # noqa: B905
            if j is not None and n not in j:  # _touch(n)
                j[n] = (self._nw[n], self._ncpu[n], self._nmem[n])
            lost = 0
            for d in ds:
                f = df[d]
                if dj is not None and d not in dj:
                    dj[d] = f
                if f == WHOLE:
                    lost += 1
                df[d] = f - milli
            if cpu:
                self._ncpu[n] -= cpu
            if mem:
                self._nmem[n] -= mem
            if lost:
                self._set_whole(n, self._nw[n] - lost)

    def give(self, p: Placement) -> None:
        """Release ``p`` (the inverse of :meth:`take`)."""
        dj = self._dev_journal
        j = self._journal
        df, du = self._df, self._du
        milli = p.milli
        # (no strict=: it costs ~1 us a call; a Placement's tuples have one entry per node by construction)
        for n, ds, cpu, mem in zip(p.nodes, p.devices, p.cpu_milli, p.mem_mib):  # noqa: B905
            if j is not None and n not in j:  # _touch(n)
                j[n] = (self._nw[n], self._ncpu[n], self._nmem[n])
            gained = 0
            for d in ds:
                f = df[d]
                if dj is not None and d not in dj:
                    dj[d] = f
                nf = f + milli
                if nf > WHOLE:
                    raise ValueError(f"device {d} released more than it had allocated")
                df[d] = nf
                if nf == WHOLE and du[d]:
                    gained += 1
            if cpu:
                self._ncpu[n] += cpu
            if mem:
                self._nmem[n] += mem
            if gained:
                self._set_whole(n, self._nw[n] + gained)

    def _check_fits(self, p: Placement) -> None:
        dn, df, du = self._dev_node_list, self._df, self._du
        milli = p.milli
        for n, ds, cpu, mem in zip(p.nodes, p.devices, p.cpu_milli, p.mem_mib, strict=True):
            if not self._nup[n]:
                raise ValueError(f"node {n} is down")
            if (cpu and self._ncpu[n] < cpu) or (mem and self._nmem[n] < mem):  # free CPU/memory never < 0
                raise ValueError(f"node {n} lacks CPU or memory")
            if len(ds) > 1 and len(set(ds)) != len(ds):
                raise ValueError("a device appears twice in one placement")
            for d in ds:
                if dn[d] != n:
                    raise ValueError(f"device {d} is not on node {n}")
                if df[d] < milli or not du[d]:
                    raise ValueError(f"device {d} has {df[d]} milli free, {milli} needed")

    def set_node_up(self, n: int, up: bool) -> None:
        """Take a node out of placement (failure, drain) or put it back; allocations on it stay accounted."""
        if bool(self.node_up[n]) == up:
            return
        self._touch(n)
        if not up:
            self._index(n, int(self.node_whole[n]), -1)
            self.node_up[n] = False
        else:
            self.node_up[n] = True
            self._index(n, int(self.node_whole[n]), +1)

    def set_device_up(self, d: int, up: bool) -> None:
        """Mark one device failed (or repaired); a failed device is never offered to placement."""
        if bool(self.dev_up[d]) == up:
            return
        n = int(self._dev_node[d])
        self._touch(n)
        self.dev_up[d] = up
        if self.dev_free[d] == WHOLE:
            self._set_whole(n, int(self.node_whole[n]) + (1 if up else -1))

    # -- journal ------------------------------------------------------------------------------------------
    def begin(self) -> None:
        if self._journal is not None:
            raise RuntimeError("a trial is already open")
        if len(self._dd_touched) > 4096:  # fold the domain-index changes in: a workload whose placements never
            self.dom_ge  # noqa: B018  read dom_ge (single-node jobs) grew the list by every take/give, forever
        self._journal = {}
        self._dev_journal = {}

    def rollback(self) -> None:
        """Undo every change since :meth:`begin`."""
        j, dj = self._journal, self._dev_journal
        if j is None or dj is None:
            raise RuntimeError("no trial is open")
        self._journal = self._dev_journal = None
        df, ncpu, nmem = self._df, self._ncpu, self._nmem
        for d, f in dj.items():
            df[d] = f
        for n, (w, cpu, mem) in j.items():
            ncpu[n] = cpu
            nmem[n] = mem
            self._set_whole(n, w)

    def commit(self) -> None:
        self._journal = self._dev_journal = None

    # -- queries ------------------------------------------------------------------------------------------
    def free_devices(self, model: int | None = None) -> int:
        """Free whole devices on nodes that are up (of one group index - a model when there are no partitions -,
        or all)."""
        return int(self.model_free.sum() if model is None else self.model_free[model])

    def allocated_milli(self) -> int:
        return int((WHOLE - self.dev_free).sum())

    def snapshot(self) -> tuple[bytes, ...]:
        """A comparable fingerprint of the whole state (for tests of purity)."""
        parts = [self.dev_free, self.node_whole, self.node_cpu, self.node_mem, self.node_up, self.model_free,
                 self.dom_ge]
        b = tuple(np.ascontiguousarray(a).tobytes() for a in parts)
        return (*b, repr([[sorted(x) for x in bm] for bm in self.buckets]).encode())

    def check_consistency(self) -> None:
        """Recompute the index from the arrays and compare (for tests)."""
        c = self.cluster
        assert (self.dev_free >= 0).all() and (self.dev_free <= WHOLE).all(), "device over-allocated"
        assert (self.node_cpu >= 0).all(), "CPU over-allocated"
        assert (self.node_mem >= 0).all(), "memory over-allocated"
        whole = np.zeros(c.n_nodes, dtype=np.int64)
        np.add.at(whole, c.dev_node, ((self.dev_free == WHOLE) & self.dev_up).astype(np.int64))
        assert (whole == self.node_whole).all(), "free-whole count out of sync"
        ref = Allocation.__new__(Allocation)
        ref.cluster = c
        ref.maxd = self.maxd
        ref.node_up, ref._nup = self.node_up, self._nup
        ref._mf, ref.model_free = _shared("q", np.zeros_like(self.model_free))
        ref._dw, ref._node_dbase = self._dw, self._node_dbase
        ref._dd, ref._dd_np = _shared("i", np.zeros_like(self._dd_np))
        ref._dd_touched = []
        ref.dom_ge = np.zeros_like(self.dom_ge)
        ref.buckets = [[{} for _ in range(self.maxd + 1)] for _ in range(c.n_groups)]
        ref._node_model, ref._node_domain = self._node_model, self._node_domain
        for n in range(c.n_nodes):
            ref._index(n, int(self.node_whole[n]), +1)
        assert (ref.model_free == self.model_free).all(), "per-model free count out of sync"
        assert (ref.dom_ge == self.dom_ge).all(), "domain index out of sync"
        for m in range(c.n_groups):
            for w in range(self.maxd + 1):
                assert set(ref.buckets[m][w]) == set(self.buckets[m][w]), "bucket out of sync"
