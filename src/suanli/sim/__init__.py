"""Digital twin: a trace-driven discrete-event simulator that drives the unmodified scheduler core."""

from suanli.sim.engine import FailureConfig, SimConfig, SimResult, Simulation
from suanli.sim.metrics import summarize
from suanli.sim.synthetic import synthetic
from suanli.sim.traces import FORMATS, TraceError, detect_format, read_trace
from suanli.sim.workload import Workload, WorkloadBuilder, from_jobs

__all__ = [
    "FORMATS",
    "FailureConfig",
    "SimConfig",
    "SimResult",
    "Simulation",
    "TraceError",
    "Workload",
    "WorkloadBuilder",
    "detect_format",
    "from_jobs",
    "read_trace",
    "summarize",
    "synthetic",
]
