"""The service manager: keeps each service's replicas running, probes them, autoscales them, and tells the
gateway which replicas are ready and how loaded they are.

A service (job kind ``service``, :class:`suanli.workload.service.ServiceSpec`) is a row in the store; each of its
replicas is an ordinary job (kind ``serve``) that the controller schedules, counts against the queue's quota,
preempts and restarts like any other, with ``PORT`` in its environment. This module only decides how many replica
jobs there should be and submits or cancels them through the store:

* **replicas**: ``desired`` (the autoscaler's answer, between ``min`` and ``max``) live replica jobs of the current
  generation; one that ends for good (no retries left, cancelled by hand) is forgotten and replaced, with a
  crash-loop back-off (1, 2, 4 ... 60 s after failures). Replicas up to ``min`` run at the service's priority (they
  may preempt lower-priority batch jobs); the ones above it at ``min(priority, 0)``, preemptible.
* **readiness**: a replica whose job runs is probed at ``readiness.path`` every ``readiness.period``; it is ready
  after one success and unready after ``failure_threshold`` failures in a row (or at once when the gateway could
  not connect to it). The same pass reads the engine's ``/metrics`` (vLLM's ``num_requests_running`` and
  ``num_requests_waiting``) when ``autoscaling.engine_queue`` is set.
* **autoscaling**: :mod:`suanli.control.autoscale` on the requests in flight through the gateway (or the engine's
  running + waiting requests when larger); scale in only after one stable window since the service was loaded, so
  the initial count (``replicas.initial`` or the planner's) holds at first.
* **rollout**: a spec change is a new generation: new replicas are started up to ``max_surge`` above the desired
  count, and old ones stopped as long as at least ``desired - max_unavailable`` replicas stay ready.

It runs on its own thread with an asyncio loop (httpx probes); the controller starts and stops it. A replica is
reached at the address of the node its job runs on (``address_of``, from the executor: 127.0.0.1 for the local
executor, the node's IP for the Ray executor); its port is chosen free on the controller's machine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from suanli.control.autoscale import AutoscalePolicy, Autoscaler, Decision
from suanli.workload.service import ServiceSpec
from suanli.workload.states import JobState

log = logging.getLogger("suanli.services")

LIVE = {JobState.PENDING.value, JobState.REQUEUED.value, JobState.RUNNING.value, JobState.PREEMPTED.value}
ENDED = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    job_id: int
    idx: int
    port: int
    generation: int
    host: str = "127.0.0.1"
    state: str = JobState.PENDING.value
    cancel_requested: bool = False
    ready: bool = False
    fails: int = 0
    outstanding: int = 0  # requests in flight through the gateway
    served: int = 0
    engine_running: float | None = None
    engine_waiting: float | None = None
    next_probe: float = 0.0
    ready_since: float | None = None
    node: str | None = None  # where its running attempt is (first rank), for the token counts
    accelerator: str | None = None  # that attempt's accelerator model

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "replica": self.idx, "port": self.port, "generation": self.generation,
                "state": self.state, "ready": self.ready, "outstanding": self.outstanding, "served": self.served,
                "engine_running": self.engine_running, "engine_waiting": self.engine_waiting,
                "stopping": self.cancel_requested}


@dataclass
class ServiceRuntime:
    id: int
    name: str
    tenant: str
    model: str
    spec: ServiceSpec
    generation: int
    min: int
    max: int
    desired: int
    loaded_at: float
    autoscaler: Autoscaler
    replicas: dict[int, Replica] = field(default_factory=dict)
    waiting: int = 0  # gateway requests waiting for a ready replica (scale from zero, all replicas busy dying)
    requests: int = 0
    errors: int = 0
    retries: int = 0
    latencies: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=4096))
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    next_add: float = 0.0
    decision: Decision | None = None
    events: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=50))
    gone: bool = False  # deleted: requests still waiting for a replica of it end with 404

    def ready_replicas(self) -> list[Replica]:
        return [r for r in list(self.replicas.values()) if r.ready and not r.cancel_requested]

    def ongoing(self) -> int:
        return sum(r.outstanding for r in list(self.replicas.values())) + self.waiting

    def note(self, msg: str) -> None:
        self.events.append((time.time(), msg))
        log.info("service %s: %s", self.name, msg)


def _policy(spec: ServiceSpec, lo: int, hi: int) -> AutoscalePolicy:
    a = spec.autoscaling
    return AutoscalePolicy(min_replicas=lo, max_replicas=hi, target_ongoing_requests=a.target_ongoing_requests,
                           stable_window_s=a.stable_window, panic_window_s=a.panic_window,
                           panic_threshold=a.panic_threshold)


def parse_engine_metrics(text: str) -> tuple[float | None, float | None]:
    """(running, waiting) requests from Prometheus text with vLLM's (or SGLang's) metric names."""
    running = waiting = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, rest = line.partition(" ")
        base = name.split("{", 1)[0]
        try:
            v = float(rest.split()[0]) if rest.split() else float(line.rsplit(" ", 1)[1])
        except (ValueError, IndexError):
            continue
        if base in ("vllm:num_requests_running", "sglang:num_running_reqs"):
            running = (running or 0.0) + v
        elif base in ("vllm:num_requests_waiting", "sglang:num_queue_reqs"):
            waiting = (waiting or 0.0) + v
    return running, waiting


class ServiceManager:
    def __init__(self, store: Any, *, tick_s: float = 0.25, host: str = "127.0.0.1",
                 address_of: Callable[[str], str | None] | None = None) -> None:
        self.store = store
        self.tick_s = tick_s
        self.host = host  # where a replica is reached when its node's address is unknown
        self.address_of = address_of  # node name -> the address its processes listen on (the executor knows)
        self.services: dict[str, ServiceRuntime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self.ticks = 0
        self.error: BaseException | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        t = threading.Thread(target=self._run, name="suanli-services", daemon=True)
        t.start()  # published once started: a stop() racing with start() never joins an unstarted thread
        self._thread = t

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(limits=limits, timeout=2.0) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    await self.tick(client)
                except Exception as e:  # keep the loop alive: the store is the truth, the next tick re-reads it
                    log.exception("service tick failed: %s", e)
                    self.error = e
                await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - t0)))

    # -- one pass ---------------------------------------------------------------------------------------------
    async def tick(self, client: httpx.AsyncClient) -> None:
        now = time.monotonic()
        self.ticks += 1
        rows = self.store.list_services()
        reps = self.store.service_replicas()
        self._sync(rows, reps, now)
        await self._probe(client, now)
        for rt in list(self.services.values()):
            self._autoscale(rt, now)
            self._reconcile(rt, now)

    def _sync(self, rows: list[dict[str, Any]], reps: list[dict[str, Any]], now: float) -> None:
        seen = set()
        for row in rows:
            seen.add(row["name"])
            rt = self.services.get(row["name"])
            if rt is not None and rt.id != row["id"]:  # deleted and created again under the same name
                rt.gone = True
                rt = None
            spec = ServiceSpec.model_validate(row["spec"])
            if rt is None:
                rt = ServiceRuntime(id=row["id"], name=row["name"], tenant=row["tenant"], model=row["model"],
                                    spec=spec, generation=row["generation"], min=row["min"], max=row["max"],
                                    desired=row["desired"], loaded_at=now,
                                    autoscaler=Autoscaler(_policy(spec, row["min"], row["max"])))
                self.services[row["name"]] = rt
            elif (rt.generation, rt.min, rt.max) != (row["generation"], row["min"], row["max"]):
                if rt.generation != row["generation"]:
                    rt.note(f"rolling out generation {row['generation']}")
                rt.spec, rt.generation, rt.model = spec, row["generation"], row["model"]
                rt.min, rt.max = row["min"], row["max"]
                rt.desired = min(rt.max, max(rt.min, rt.desired))
                rt.autoscaler.policy = _policy(spec, rt.min, rt.max)
        for name in list(self.services):
            if name not in seen:
                self.services.pop(name).gone = True
        by_service: dict[int, list[dict[str, Any]]] = {}
        for r in reps:
            by_service.setdefault(r["service_id"], []).append(r)
        for rt in self.services.values():
            mine = by_service.get(rt.id, [])
            ids = set()
            for r in mine:
                jid = int(r["job_id"])
                ids.add(jid)
                rep = rt.replicas.get(jid)
                if rep is None:
                    rep = rt.replicas[jid] = Replica(jid, r["idx"], r["port"], r["generation"], host=self.host)
                if rep.state != r["state"]:
                    if r["state"] != JobState.RUNNING.value:
                        rep.ready, rep.ready_since, rep.fails = False, None, 0
                    rep.state = r["state"]
                if r.get("node"):
                    rep.node, rep.accelerator = r["node"], r.get("accelerator") or ""
                host = self.address_of(r["node"]) if r.get("node") and self.address_of is not None else None
                if host and host != rep.host:
                    rep.host, rep.ready = host, False  # started elsewhere (a node loss): probe it where it is now
                rep.cancel_requested = rep.cancel_requested or bool(r["cancel_requested"])  # sticky: the
                # controller clears the flag once the job is cancelled
            for jid in list(rt.replicas):
                if jid not in ids:
                    del rt.replicas[jid]

    async def _probe(self, client: httpx.AsyncClient, now: float) -> None:
        todo = []
        for rt in self.services.values():
            for rep in list(rt.replicas.values()):
                if rep.state == JobState.RUNNING.value and now >= rep.next_probe:
                    rep.next_probe = now + rt.spec.readiness.period
                    todo.append(self._probe_one(client, rt, rep))
        if todo:
            await asyncio.gather(*todo)

    async def _probe_one(self, client: httpx.AsyncClient, rt: ServiceRuntime, rep: Replica) -> None:
        rd = rt.spec.readiness
        try:
            r = await client.get(rep.url + rd.path, timeout=rd.timeout)
            ok = 200 <= r.status_code < 300
        except httpx.HTTPError:
            ok = False
        if ok:
            if not rep.ready:
                rep.ready_since = time.monotonic()
                rt.note(f"replica {rep.idx} (job {rep.job_id}) ready on port {rep.port}")
            rep.ready, rep.fails = True, 0
        else:
            rep.fails += 1
            if rep.ready and rep.fails >= rd.failure_threshold:
                rep.ready, rep.ready_since = False, None
                rt.note(f"replica {rep.idx} (job {rep.job_id}) not ready ({rep.fails} failed probes)")
        if ok and rt.spec.autoscaling.engine_queue:
            try:
                m = await client.get(rep.url + rt.spec.autoscaling.metrics_path, timeout=rd.timeout)
                if m.status_code == 200:
                    rep.engine_running, rep.engine_waiting = parse_engine_metrics(m.text)
            except httpx.HTTPError:
                pass

    def load(self, rt: ServiceRuntime) -> float:
        """Requests the service is working on: through the gateway, or the engines' own count if larger."""
        load = float(rt.ongoing())
        if rt.spec.autoscaling.engine_queue:
            eng = [(r.engine_running or 0.0) + (r.engine_waiting or 0.0) for r in rt.ready_replicas()
                   if r.engine_running is not None or r.engine_waiting is not None]
            if eng:
                load = max(load, sum(eng))
        return load

    def _autoscale(self, rt: ServiceRuntime, now: float) -> None:
        rt.autoscaler.observe(now, self.load(rt))
        d = rt.autoscaler.decide(now, len(rt.ready_replicas()), rt.desired)
        rt.decision = d
        want = d.desired
        if want < rt.desired and now - rt.loaded_at < rt.spec.autoscaling.stable_window:
            want = rt.desired  # hold the initial count for one stable window
        if want != rt.desired:
            rt.note(f"scale {rt.desired} -> {want} ({d.reason})")
            rt.desired = want
            self.store.set_service_desired(rt.id, want)

    def _reconcile(self, rt: ServiceRuntime, now: float) -> None:
        reps = list(rt.replicas.values())
        for rep in reps:
            if rep.state in ENDED:
                if rep.state == JobState.FAILED.value:
                    rt.failures.append(now)
                    back = min(60.0, 2.0 ** (sum(1 for t in rt.failures if now - t < 300) - 1))
                    rt.next_add = max(rt.next_add, now + back)
                    rt.note(f"replica {rep.idx} (job {rep.job_id}) failed; replacing it in {back:g} s")
                elif not rep.cancel_requested:
                    rt.note(f"replica {rep.idx} (job {rep.job_id}) ended ({rep.state})")
                self.store.forget_replica(rep.job_id)
                del rt.replicas[rep.job_id]
        live = [r for r in rt.replicas.values() if r.state in LIVE and not r.cancel_requested]
        new = sorted((r for r in live if r.generation == rt.generation), key=lambda r: r.idx)
        old = sorted((r for r in live if r.generation != rt.generation), key=lambda r: (r.ready, -r.idx))
        want = rt.desired
        surge = rt.spec.rollout.max_surge if old else 0
        while len(new) < want and len(new) + len(old) < want + surge and now >= rt.next_add:
            new.append(self._add(rt, len(new)))
        if old:
            ready = sum(r.ready for r in new) + sum(r.ready for r in old)
            floor = want - rt.spec.rollout.max_unavailable
            for r in list(old):
                excess = len(new) + len(old) - want
                if excess <= 0:
                    break
                if r.ready and ready - 1 < floor:
                    continue
                self._stop_replica(rt, r, f"rollout to generation {rt.generation}")
                old.remove(r)
                ready -= int(r.ready)
        elif len(new) > want:
            extra = sorted(new, key=lambda r: (r.ready, r.outstanding, -r.idx))[: len(new) - want]
            for r in extra:
                self._stop_replica(rt, r, f"scale in to {want}")

    def _add(self, rt: ServiceRuntime, position: int) -> Replica:
        idx = max((r.idx for r in rt.replicas.values()), default=-1) + 1
        port = free_port(self.host)
        spec = rt.spec.replica_job(idx, port, above_min=position >= rt.min)
        jid = self.store.add_replica(rt.id, spec, idx, port, rt.generation)
        rep = Replica(jid, idx, port, rt.generation, host=self.host)
        rt.replicas[jid] = rep
        rt.note(f"replica {idx} submitted as job {jid} (port {port})")
        return rep

    def _stop_replica(self, rt: ServiceRuntime, rep: Replica, why: str) -> None:
        rep.cancel_requested = True
        rep.ready = False
        self.store.stop_replica(rep.job_id, why)
        rt.note(f"stopping replica {rep.idx} (job {rep.job_id}): {why}")

    # -- the gateway's side -------------------------------------------------------------------------------
    def forget(self, name: str, service_id: int) -> None:
        """The service was deleted through this process's API: the gateway stops routing to it now, not at the
        next tick (requests waiting for one of its replicas end with 404)."""
        rt = self.services.get(name)
        if rt is not None and rt.id == service_id:
            del self.services[name]
            rt.gone = True

    def find(self, name: str, tenant: str | None) -> ServiceRuntime | None:
        rt = self.services.get(name)
        if rt is None or (tenant is not None and rt.tenant != tenant):
            return None
        return rt

    def find_model(self, model: str, tenant: str | None) -> ServiceRuntime | None:
        for rt in list(self.services.values()):
            if rt.model == model and (tenant is None or rt.tenant == tenant):
                return rt
        return None

    def visible(self, tenant: str | None) -> list[ServiceRuntime]:
        return [rt for rt in list(self.services.values()) if tenant is None or rt.tenant == tenant]

    def pick(self, rt: ServiceRuntime, exclude: set[int] | None = None) -> Replica | None:
        """Power of two choices: of two ready replicas drawn at random, the one with fewer requests in flight."""
        ready = [r for r in rt.ready_replicas() if not exclude or r.job_id not in exclude]
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        a, b = self._rng.sample(ready, 2)
        return a if a.outstanding <= b.outstanding else b

    def mark_unreachable(self, rt: ServiceRuntime, rep: Replica, why: str) -> None:
        """The gateway could not talk to ``rep``: no more requests to it until a probe succeeds again."""
        if rep.ready:
            rep.ready, rep.ready_since = False, None
            rep.fails = rt.spec.readiness.failure_threshold
            rep.next_probe = time.monotonic()  # probe it soon
            rt.note(f"replica {rep.idx} (job {rep.job_id}) unreachable from the gateway: {why}")

    def describe(self, name: str) -> dict[str, Any] | None:
        rt = self.services.get(name)
        if rt is None:
            return None
        now = time.monotonic()
        recent = [x for x in rt.latencies if now - x[0] <= 60.0]

        def pct(xs: list[float], q: float) -> float | None:
            if not xs:
                return None
            s = sorted(xs)
            return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]

        ttfb = [x[1] for x in recent]
        total = [x[2] for x in recent]
        d = rt.decision
        return {
            "ready": len(rt.ready_replicas()), "desired": rt.desired, "ongoing": rt.ongoing(),
            "waiting_for_replica": rt.waiting, "load": self.load(rt),
            "requests": rt.requests, "errors": rt.errors, "retries": rt.retries,
            "requests_per_s_1m": len(recent) / 60.0,
            "ttfb_p50_s": pct(ttfb, 50), "ttfb_p99_s": pct(ttfb, 99),
            "latency_p50_s": pct(total, 50), "latency_p99_s": pct(total, 99),
            "autoscaler": None if d is None else {"stable_load": d.stable_load, "panic_load": d.panic_load,
                                                  "panicking": d.panicking, "reason": d.reason},
            "replicas": [r.to_dict() for r in sorted(rt.replicas.values(), key=lambda r: r.idx)],
            "events": [{"at": t, "message": m} for t, m in list(rt.events)[-20:]],
        }
