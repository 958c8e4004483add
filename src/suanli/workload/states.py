"""Job states and the allowed transitions, written down in one place.

Every writer of job state (the simulator, the controller's reconcile loop) goes through :func:`check_transition`.
"""

from __future__ import annotations

from enum import StrEnum

from suanli.errors import SuanliError


class JobState(StrEnum):
    PENDING = "pending"  # submitted, waiting for the scheduler
    RUNNING = "running"  # placed; processes started (or simulated)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # final failure: retries exhausted or not retryable
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # stopped by the scheduler to make room; goes back to the queue (requeued)
    REQUEUED = "requeued"  # waiting again after a preemption, a node failure or a retryable error


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WAITING: frozenset[JobState] = frozenset({JobState.PENDING, JobState.REQUEUED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED, JobState.REQUEUED}
    ),
    JobState.PREEMPTED: frozenset({JobState.REQUEUED, JobState.CANCELLED}),
    JobState.REQUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(SuanliError):
    pass


def can_transition(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS[src]


def check_transition(src: JobState | str, dst: JobState | str) -> JobState:
    """Return ``dst`` as a :class:`JobState` if ``src -> dst`` is allowed; raise :class:`InvalidTransition`."""
    s, d = JobState(src), JobState(dst)
    if d not in TRANSITIONS[s]:
        allowed = ", ".join(sorted(TRANSITIONS[s])) or "none (terminal)"
        raise InvalidTransition(f"job cannot go from {s} to {d}; allowed from {s}: {allowed}")
    return d
