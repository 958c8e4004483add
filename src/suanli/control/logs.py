"""Job logs: a cap per file with rotation, tails read from the end in bounded memory, and asynchronous following.

Each rank of an attempt writes ``attempt-N.rank-R.log`` (its stdout and stderr, opened in append mode). The
controller checks the size every tick; past ``max_bytes`` the file is copied to ``.1`` (older copies shift to
``.2``...; ``keep`` of them are kept) and truncated in place (logrotate's *copytruncate*: the job keeps its file
descriptor, its next write lands at the new, small end). Bytes written between the copy and the truncation are
lost, like with logrotate; a rotation leaves a line saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 16
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_KEEP = 1


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """Per-job log cap: each rank's file is rotated past ``max_bytes``; ``keep`` rotated copies are kept (so a rank
    uses at most ``(keep + 1) * max_bytes``). ``max_bytes`` 0: no cap."""

    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP


def rotated(path: Path, k: int) -> Path:
    return path.with_name(f"{path.name}.{k}")


def rotate_if_needed(path: Path, policy: LogPolicy) -> bool:
    """Rotate ``path`` if it is over the cap (copy, then truncate in place). True if it rotated."""
    if policy.max_bytes <= 0:
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size <= policy.max_bytes:
        return False
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)  # the marker goes at the end
    try:
        if policy.keep <= 0:
            os.ftruncate(fd, 0)
            return True
        for k in range(policy.keep, 1, -1):  # .1 -> .2 ...
            with contextlib.suppress(FileNotFoundError):
                os.replace(rotated(path, k - 1), rotated(path, k))
        dst = rotated(path, 1)
        tmp = dst.with_name(dst.name + ".tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(os.dup(fd), "rb") as src, os.fdopen(out, "wb") as f:
                src.seek(0)
                shutil.copyfileobj(src, f, CHUNK * 16)
                out = -1
        finally:
            if out >= 0:
                os.close(out)
        os.replace(tmp, dst)
        os.ftruncate(fd, 0)
        os.write(fd, f"--- log rotated at {time.strftime('%Y-%m-%d %H:%M:%S')}: earlier output in "
                     f"{dst.name} ---\n".encode())
    finally:
        os.close(fd)
    return True


def tail_offset(path: Path, n: int, end: int | None = None) -> int:
    """Offset where the last ``n`` lines of the first ``end`` bytes of ``path`` start (a final line without a
    newline counts). Reads backwards one chunk at a time: memory stays at one chunk whatever the file or line size."""
    with open(path, "rb") as f:
        size = f.seek(0, 2) if end is None else end
        if n <= 0:
            return 0
        pos = size
        seen = 0
        # a newline at the very end closes the last line; it does not start a new one
        if size > 0:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                pos = size - 1
        while pos > 0:
            step = min(pos, CHUNK)
            pos -= step
            f.seek(pos)
            buf = f.read(step)
            i = len(buf)
            while True:
                i = buf.rfind(b"\n", 0, i)
                if i < 0:
                    break
                seen += 1
                if seen == n:
                    return pos + i + 1
        return 0


def file_chunks(path: Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``start``..``end`` of a file in chunks (never all of it in memory)."""
    with open(path, "rb") as f:
        stop = f.seek(0, 2) if end is None else end
        f.seek(start)
        left = stop - start
        while left > 0:
            chunk = f.read(min(left, CHUNK))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def tail_chunks(path: Path, n: int, end: int | None = None) -> Iterator[bytes]:
    """The last ``n`` lines (0: everything, rotated copies first) in chunks."""
    if n <= 0:
        for k in range(9, 0, -1):
            r = rotated(path, k)
            if r.exists():
                yield from file_chunks(r)
        yield from file_chunks(path, 0, end)
        return
    yield from file_chunks(path, tail_offset(path, n, end), end)


def _read_at(path: Path, pos: int, limit: int = CHUNK) -> tuple[bytes, int]:
    """(bytes from ``pos``, current size); after a rotation (size < pos) reads from the start."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < pos:
                pos = 0
            f.seek(pos)
            return f.read(limit), size
    except FileNotFoundError:
        return b"", 0


async def follow(path_of: Callable[[int], Path], first: int, state: Callable[[], tuple[int, bool]],
                 *, attempt_fixed: bool, tail: int = 0, idle_s: float = 3600.0, poll_s: float = 0.1,
                 max_poll_s: float = 1.0, state_every_s: float = 1.0) -> AsyncIterator[bytes]:
    """Stream a job's log as it grows, without holding a thread: the file reads are small and the job state
    (``state()`` -> (attempts, final), run in a worker thread) is asked at most every ``state_every_s``; a quiet
    log is looked at less and less often (``poll_s`` doubling up to ``max_poll_s``).
    Without ``attempt_fixed`` it goes on to the next attempts until the job is final; it ends after ``idle_s``
    without output, and as soon as the client goes (the server cancels the generator)."""
    cur, pos = first, 0
    if cur:
        p = path_of(cur)
        if p.exists():
            size = p.stat().st_size
            for chunk in tail_chunks(p, tail, size):
                yield chunk
                await asyncio.sleep(0)
            pos = size
    idle_since = last_state = time.monotonic()
    attempts, final = await asyncio.to_thread(state)
    wait_s = poll_s
    while True:
        if cur:
            chunk, size = _read_at(path_of(cur), pos)
            if size < pos:
                pos = 0
            if chunk:
                pos += len(chunk)
                idle_since = time.monotonic()
                wait_s = poll_s
                yield chunk
                continue
        now = time.monotonic()
        if now - last_state >= state_every_s:
            attempts, final = await asyncio.to_thread(state)
            last_state = now
        if not attempt_fixed and attempts > cur:  # the next attempt, one by one
            if cur:
                while True:  # what it wrote between our last read and its end
                    chunk, _ = _read_at(path_of(cur), pos)
                    if not chunk:
                        break
                    pos += len(chunk)
                    yield chunk
                yield f"--- attempt {cur + 1} ---\n".encode()
            cur, pos = cur + 1, 0
            continue
        if final or (attempt_fixed and attempts != cur):
            if cur:
                while True:
                    chunk, _ = _read_at(path_of(cur), pos)
                    if not chunk:
                        break
                    pos += len(chunk)
                    yield chunk
            return
        if now - idle_since > idle_s:
            return
        await asyncio.sleep(wait_s)
        wait_s = min(max_poll_s, wait_s * 2)


class FollowerLimit:
    """At most ``per_tenant`` concurrent log followers per tenant (admins: ``per_admin``)."""

    def __init__(self, per_tenant: int = 8, per_admin: int = 64) -> None:
        self.per_tenant = per_tenant
        self.per_admin = per_admin
        self.active: dict[str, int] = {}

    def acquire(self, who: str, admin: bool) -> bool:
        cap = self.per_admin if admin else self.per_tenant
        n = self.active.get(who, 0)
        if n >= cap:
            return False
        self.active[who] = n + 1
        return True

    def release(self, who: str) -> None:
        n = self.active.get(who, 0) - 1
        if n <= 0:
            self.active.pop(who, None)
        else:
            self.active[who] = n
