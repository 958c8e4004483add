"""Performance planner: how many chips of which type, how fast, at what cost, for training and serving LLMs.

First-principles model (FLOPs, bytes, bandwidth, capacity, interconnect) with one calibration set per vendor family
(:mod:`suanli.perf.calibration`), validated against published results (:mod:`suanli.perf.validation`).
Stable entry points for other layers: :func:`job_throughput`, :func:`relative_speed`, :func:`plan_train`,
:func:`plan_serve`. This package imports nothing from sched/sim/control/api/cli.
"""

from suanli.perf.api import job_throughput, plan_serve, plan_train, relative_speed
from suanli.perf.assumptions import Cluster, Money
from suanli.perf.calibration import Calibration, calibration_for
from suanli.perf.serve import ServeEstimate, ServeJob, estimate_serve
from suanli.perf.train import TrainEstimate, TrainJob, estimate_train
from suanli.perf.units import InvalidQuantity, parse_accelerators, parse_duration, parse_tokens

__all__ = [
    "Calibration",
    "Cluster",
    "InvalidQuantity",
    "Money",
    "ServeEstimate",
    "ServeJob",
    "TrainEstimate",
    "TrainJob",
    "calibration_for",
    "estimate_serve",
    "estimate_train",
    "job_throughput",
    "parse_accelerators",
    "parse_duration",
    "parse_tokens",
    "plan_serve",
    "plan_train",
    "relative_speed",
]
