"""Typed values the store keeps in real columns (``StrEnum``: stored as their value, compared as strings)."""

from __future__ import annotations

from enum import StrEnum


class AttemptOutcome(StrEnum):
    """How an attempt ended (``job_attempts.outcome``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a rank exited non-zero (counted against max_retries)
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    STOPPED = "stopped"  # the controller stopped it on shutdown; requeued
    LOST = "lost"  # recorded as started but never spawned (a crash in between); requeued
    ABORTED = "aborted"  # the controller died while spawning the ranks: the partial gang was stopped; requeued
    SPAWN_FAILED = "spawn-failed"  # the executor could not start it
    NODE_LOST = "node-lost"  # a node of the attempt was lost (or one of its devices turned unhealthy); requeued


class StopReason(StrEnum):
    """Why the controller (or the executor) stopped an attempt (``job_attempts.stop_reason``)."""

    CANCEL = "cancel"
    PREEMPT = "preempt"
    SHUTDOWN = "shutdown"
    RANK_FAILED = "rank-failed"  # one rank failed: the gang is stopped (not a reason of its own for the job)
    NODE_LOST = "node-lost"
    DEVICE_UNHEALTHY = "device-unhealthy"


class DeviceHealth(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class NodeStatus(StrEnum):
    UP = "up"
    LOST = "lost"  # the executor does not see it (any more): nothing is placed on it


#: reasons that end an attempt through no fault of the job: requeued, no failure counted
INFRA_REASONS = (StopReason.NODE_LOST, StopReason.DEVICE_UNHEALTHY)
