"""Replica autoscaling of a service: Knative KPA-style stable and panic windows over a load signal users know.

The load of a service at an instant is the number of requests it is working on: requests in flight through the
gateway (Ray Serve's "ongoing requests"), or, when the engine exports them, its running + waiting requests
(vLLM's ``num_requests_running`` + ``num_requests_waiting``) if that is larger (clients that bypass the gateway).
The wanted replica count is ``ceil(load / target_ongoing_requests)``:

* **stable window** (default 60 s): the average load over it decides normally, so a short dip does not scale in
  and the service comes back to ``min`` one stable window after the load is gone;
* **panic window** (default 6 s): if the average load over it asks for ``panic_threshold`` (2x) the ready
  replicas or more, the scaler panics: it scales out to the panic figure at once and does not scale in until
  a whole stable window has passed without panic (no flapping after a burst);
* bounds: ``min`` .. ``max``; ``min: 0`` allows scale to zero, and any load on a service with no ready replica
  asks for at least one (the gateway holds the request meanwhile, as Knative's activator does).

Pure logic on a clock passed in; the service manager feeds it samples and applies its answer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AutoscalePolicy:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0  # panic when the panic-window load asks for this multiple of the ready replicas

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("replicas: need 0 <= min <= max")
        if not self.target_ongoing_requests > 0:
            raise ValueError("target_ongoing_requests must be positive")
        if not 0 < self.panic_window_s <= self.stable_window_s:
            raise ValueError("need 0 < panic_window <= stable_window")
        if not self.panic_threshold >= 1.0:
            raise ValueError("panic_threshold must be >= 1")


@dataclass
class Decision:
    desired: int
    stable_load: float
    panic_load: float
    panicking: bool
    reason: str


@dataclass
class Autoscaler:
    policy: AutoscalePolicy
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    panic_until: float | None = None
    desired: int | None = None

    def observe(self, now: float, load: float) -> None:
        """Record the service's load (requests being worked on) at ``now``."""
        self.samples.append((now, max(0.0, load)))
        horizon = now - self.policy.stable_window_s
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()

    def _avg(self, now: float, window: float) -> float:
        xs = [v for t, v in self.samples if t >= now - window]
        return sum(xs) / len(xs) if xs else 0.0

    def decide(self, now: float, ready: int, current: int) -> Decision:
        """Replicas wanted now, given ``ready`` replicas serving and ``current`` replicas asked for so far."""
        p = self.policy
        stable = self._avg(now, p.stable_window_s)
        panic = self._avg(now, p.panic_window_s)
        want_stable = math.ceil(stable / p.target_ongoing_requests - 1e-9)
        want_panic = math.ceil(panic / p.target_ongoing_requests - 1e-9)
        if want_panic >= max(ready, 1) * p.panic_threshold or (ready == 0 and panic > 0):
            self.panic_until = now + p.stable_window_s
        if self.panic_until is not None and now >= self.panic_until:
            self.panic_until = None
        panicking = self.panic_until is not None
        if panicking:
            want, why = max(want_panic, current), f"panic: {panic:.1f} requests over the last {p.panic_window_s:g} s"
        else:
            want, why = want_stable, f"stable: {stable:.1f} requests over the last {p.stable_window_s:g} s"
        last = self.samples[-1][1] if self.samples else 0.0
        if last > 0 or panic > 0:
            want = max(want, 1)  # work waiting: never zero replicas
        want = min(p.max_replicas, max(p.min_replicas, want))
        self.desired = want
        return Decision(want, stable, panic, panicking, why)
