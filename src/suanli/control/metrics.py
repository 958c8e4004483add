"""Prometheus metrics of the control plane: jobs by state, queue lengths, device allocation, scheduling pass
duration, pending jobs by reason, API latency by route, store write latency, reconcile lag."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli.sched import WHOLE

if TYPE_CHECKING:
    from suanli.control.controller import Controller
    from suanli.control.history import Sampler
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
        p = GaugeMetricFamily("suanli_pending_jobs", "Jobs the controller holds that are not running, by reason: "
                              "queued (waiting for the scheduler) or backoff (retry delay)", labels=["reason"])
        for reason, n in sorted(snap.get("pending_by_reason", {}).items()):
            p.add_metric([reason], n)
        yield p
        w = GaugeMetricFamily("suanli_waiting_jobs", "Waiting jobs by the scheduler's reason (capacity, topology, "
                              "quota, behind, reserved, never, backoff, window: see docs/dashboard.md)",
                              labels=["reason"])
        for reason, n in sorted(snap.get("waiting_by_reason", {}).items()):
            w.add_metric([reason], n)
        yield w
        lag = GaugeMetricFamily("suanli_reconcile_lag_seconds", "Seconds since the reconcile loop last finished a "
                                "tick (grows when the loop is stuck or slow)")
        last = self.m.last_tick
        lag.add_metric([], max(0.0, time.monotonic() - last) if last is not None else 0.0)
        yield lag


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.store: Store | None = None
        self.snapshot: dict[str, Any] = {}
        self.sched_latency = Histogram(
            "suanli_scheduling_latency_seconds", "Time of one scheduling decision (sched.decide)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.pass_latency = Histogram(
            "suanli_scheduling_pass_seconds", "One whole scheduling pass: the decision, recording its starts in the "
            "store and spawning them", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                               2.5, 10), registry=self.registry)
        self.submissions = Counter("suanli_api_submissions", "Jobs accepted through the API", registry=self.registry)
        self.api_latency = Histogram(
            "suanli_api_request_seconds", "API request time (to the end of the response), by route template",
            ["method", "route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry)
        self.store_write = Histogram(
            "suanli_store_write_seconds", "One store write transaction, begin to commit",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=self.registry)
        self.tick_interval = Histogram(
            "suanli_reconcile_interval_seconds", "Time between the ends of two reconcile ticks (the tick period plus "
            "any lag)", buckets=(0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.last_tick: float | None = None
        self.sampler: Sampler | None = None  # the history sampler, fed each snapshot
        self._store_hooked: set[int] = set()
        self.registry.register(_Live(self))
        self.accounting: Any = None  # accounting.pricing.Accounting of the usage counters (None: defaults)
        from suanli.control.usage import UsageCounters

        self.registry.register(UsageCounters(self))

    def watch_store(self, store: Store) -> None:
        """Time every write transaction of ``store`` (SQLAlchemy engine events; reads are not counted)."""
        from sqlalchemy import event

        eng = store.engine
        if id(eng) in self._store_hooked:
            return
        self._store_hooked.add(id(eng))
        hist = self.store_write

        def begin(conn: Any) -> None:
            if conn.get_execution_options().get("write"):
                conn.info["suanli_t0"] = time.perf_counter()

        def end(conn: Any) -> None:
            t0 = conn.info.pop("suanli_t0", None)
            if t0 is not None:
                hist.observe(time.perf_counter() - t0)

        event.listen(eng, "begin", begin)
        event.listen(eng, "commit", end)
        event.listen(eng, "rollback", end)

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
            "pending_by_reason": {"queued": len(st.pending), "backoff": len(getattr(ctl, "delayed", ()))},
            "waiting_by_reason": ctl.reason_counts(),
        }
        now = time.monotonic()
        if self.last_tick is not None:
            self.tick_interval.observe(now - self.last_tick)
        self.last_tick = now
        if self.sampler is not None:
            self.sampler.observe(self.snapshot)


class RouteTimer:
    """ASGI middleware: every request's time by method and route template (``/v1/jobs/{job_id}``, never the raw
    path: bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [0]

        async def snd(m: Message) -> None:
            if m["type"] == "http.response.start":
                status[0] = m["status"]
            await send(m)

        try:
            await self.app(scope, receive, snd)
        finally:
            route = getattr(scope.get("route"), "path", None) or ("unmatched" if status[0] == 404 else "other")
            self.metrics.api_latency.labels(scope.get("method", ""), route).observe(time.perf_counter() - t0)
