"""Executors: what runs a job's processes (see :mod:`.base` for the interface the controller uses)."""

from suanli.control.executors.base import (
    Adoption,
    AdoptVerdict,
    AttemptRecord,
    AttemptSpec,
    DeviceInfo,
    Executor,
    Handle,
    NodeInfo,
    RankPlan,
    rank_env,
)

__all__ = [
    "AdoptVerdict",
    "Adoption",
    "AttemptRecord",
    "AttemptSpec",
    "DeviceInfo",
    "Executor",
    "Handle",
    "NodeInfo",
    "RankPlan",
    "rank_env",
]
