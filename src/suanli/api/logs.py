"""Reading job logs: tails from the end in bounded memory, whole files in chunks, and following a growing log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from suanli.control.store import Store
from suanli.workload.states import TERMINAL, JobState


def log_path(root: Path, job_id: int, attempt: int, rank: int) -> Path:
    return root / "jobs" / str(job_id) / "logs" / f"attempt-{attempt}.rank-{rank}.log"


def last_lines(path: Path, n: int, end: int | None = None) -> bytes:
    """The last ``n`` lines of the first ``end`` bytes of a file, reading backwards (logs can be large)."""
    with open(path, "rb") as f:
        size = end if end is not None else f.seek(0, 2)
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:]) if n > 0 else data


def tail_text(path: Path, n: int) -> str:
    return last_lines(path, n).decode("utf-8", "replace")


def file_chunks(path: Path, end: int | None = None) -> Iterator[bytes]:
    """A file (its first ``end`` bytes) in chunks, without reading it all into memory."""
    left = end if end is not None else path.stat().st_size
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def follow(store: Store, root: Path, job_id: int, n: int, attempt: int | None, rank: int, tail: int,
           idle_limit_s: float = 3600.0) -> Iterator[bytes]:
    """Stream the log of attempt ``n`` as it grows; without ``attempt``, wait for the first attempt and go on to the
    next ones (retries, requeues) until the job is final."""

    def path(k: int) -> Path:
        return log_path(root, job_id, k, rank)

    cur, pos = n, 0
    if cur and path(cur).exists():
        pos = path(cur).stat().st_size
        if tail:
            yield last_lines(path(cur), tail, pos)
        else:
            yield from file_chunks(path(cur), pos)
    idle_since = time.monotonic()
    while True:
        if cur and path(cur).exists():
            with open(path(cur), "rb") as f:
                f.seek(pos)
                chunk = f.read(1 << 16)
            if chunk:
                pos += len(chunk)
                idle_since = time.monotonic()
                yield chunk
                continue
        st = store.get_job(job_id)
        if attempt is None and st["attempts"] > cur:  # the next attempt, one by one
            if cur:
                if path(cur).exists():  # what it wrote between our last read and its end
                    with open(path(cur), "rb") as f:
                        f.seek(pos)
                        yield f.read()
                yield f"--- attempt {cur + 1} ---\n".encode()
            cur, pos = cur + 1, 0
            continue
        if JobState(st["state"]) in TERMINAL or (attempt is not None and st["attempts"] != attempt):
            if cur and path(cur).exists():
                with open(path(cur), "rb") as f:
                    f.seek(pos)
                    yield f.read()
            return
        if time.monotonic() - idle_since > idle_limit_s:
            return
        time.sleep(0.2)
