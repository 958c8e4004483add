"""The controller's history sampler: every ``interval_s`` it records the fleet's allocation, running and waiting jobs
and waiting jobs by reason into the store (which averages them into five-minute and hourly buckets and keeps each
level for its own retention: the dashboard's last hour, day and week)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from suanli.control.store import Store

log = logging.getLogger("suanli.history")


def sample_of(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A sample from the metrics snapshot the reconcile loop takes after each tick."""
    devs = snapshot.get("devices", {})
    reasons = dict(snapshot.get("waiting_by_reason", snapshot.get("pending_by_reason", {})))
    return {"total": float(sum(t for t, _ in devs.values())), "allocated": float(sum(a for _, a in devs.values())),
            "running": int(snapshot.get("running", 0)), "pending": int(sum(reasons.values())), "reasons": reasons}


class Sampler:
    def __init__(self, store: Store, interval_s: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self.last: float | None = None

    def observe(self, snapshot: Mapping[str, Any]) -> bool:
        """Record a sample when ``interval_s`` has passed since the last one (True when it did)."""
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            return False
        self.last = now
        try:
            self.store.add_sample(now, sample_of(snapshot))
        except Exception:  # history is best effort: a busy database must not stop the reconcile loop
            log.warning("could not record a history sample", exc_info=True)
            return False
        return True
