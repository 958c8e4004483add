"""The scheduler core: pure decisions over the fleet and workload model. Imports nothing from sim/control/api."""

from suanli.sched.alloc import WHOLE, Allocation, Placement
from suanli.sched.core import MODEL_ORDERS, POLICIES, QueueConfig, Scheduler, make_packer
from suanli.sched.placement import BestFitPacker, Packer, PlacementConfig, Placer, RandomPacker
from suanli.sched.state import Decisions, PendingQueue, Preempt, RunningJob, RunningSet, SchedState, Start

__all__ = [
    "MODEL_ORDERS",
    "POLICIES",
    "WHOLE",
    "Allocation",
    "BestFitPacker",
    "Decisions",
    "Packer",
    "PendingQueue",
    "Placement",
    "PlacementConfig",
    "Placer",
    "Preempt",
    "QueueConfig",
    "RandomPacker",
    "RunningJob",
    "RunningSet",
    "SchedState",
    "Scheduler",
    "Start",
    "make_packer",
]
