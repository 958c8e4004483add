"""Prometheus metrics of the control plane: jobs by state, queue lengths, device allocation, scheduling latency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from suanli.sched import WHOLE

if TYPE_CHECKING:
    from suanli.control.controller import Controller
    from suanli.control.store import Store


class _Live(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("suanli_jobs", "Jobs in the store by state", labels=["state"])
        if self.m.store is not None:
            for st, n in sorted(self.m.store.job_counts().items()):
                g.add_metric([st], n)
        yield g
        snap = self.m.snapshot
        q = GaugeMetricFamily("suanli_queue_pending_jobs", "Jobs waiting in the scheduler, by queue", labels=["queue"])
        for name, n in sorted(snap.get("queues", {}).items()):
            q.add_metric([name], n)
        yield q
        tot = GaugeMetricFamily("suanli_devices", "Accelerators known to the controller", labels=["model"])
        alloc = GaugeMetricFamily("suanli_devices_allocated", "Accelerators allocated (fractions count as fractions)",
                                  labels=["model"])
        for model, (t, a) in sorted(snap.get("devices", {}).items()):
            tot.add_metric([model], t)
            alloc.add_metric([model], a)
        yield tot
        yield alloc
        r = GaugeMetricFamily("suanli_running_jobs", "Jobs running")
        r.add_metric([], snap.get("running", 0))
        yield r


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.store: Store | None = None
        self.snapshot: dict[str, Any] = {}
        self.sched_latency = Histogram(
            "suanli_scheduling_latency_seconds", "Time of one scheduling decision (sched.decide)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.submissions = Counter("suanli_api_submissions", "Jobs accepted through the API", registry=self.registry)
        self.registry.register(_Live(self))

    def observe_state(self, ctl: Controller) -> None:
        """Called by the reconcile loop after each tick: a snapshot the scrape reads without locking."""
        st = ctl.state
        c = ctl.cluster
        devs: dict[str, tuple[float, float]] = {}
        free = st.alloc.dev_free
        for m, name in enumerate(c.models):
            mask = c.dev_model == m
            total = int(mask.sum())
            used = float((WHOLE - free[mask]).sum()) / WHOLE
            devs[name] = (total, used)
        self.snapshot = {
            "queues": {q: len(v) for q, v in st.pending.by_queue.items()},
            "devices": devs,
            "running": len(st.running),
        }
