"""Former home of the local executor; kept as a re-export (see :mod:`suanli.control.executors.local`)."""

from suanli.control.executors.local import (
    LocalExecutor,
    LocalHandle,
    proc_rank,
    proc_start_ticks,
    scan_attempt_pids,
)

Handle = LocalHandle

__all__ = ["Handle", "LocalExecutor", "LocalHandle", "proc_rank", "proc_start_ticks", "scan_attempt_pids"]
