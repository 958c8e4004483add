"""Workload model: job specs as users write them, and the job state machine."""

from suanli.workload.spec import Job, JobKind, JobSpec, Resources, parse_duration_s
from suanli.workload.states import TERMINAL, TRANSITIONS, JobState, check_transition

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Job",
    "JobKind",
    "JobSpec",
    "JobState",
    "Resources",
    "check_transition",
    "parse_duration_s",
]
