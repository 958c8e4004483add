"""Reading job logs: tails from the end in bounded memory, whole files in chunks, and following a growing log
without a thread per follower (see :mod:`suanli.control.logs`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from suanli.control import logs as clogs


def log_path(root: Path, job_id: int, attempt: int, rank: int) -> Path:
    return root / "jobs" / str(job_id) / "logs" / f"attempt-{attempt}.rank-{rank}.log"


def last_lines(path: Path, n: int, end: int | None = None) -> bytes:
    """The last ``n`` lines of the first ``end`` bytes of a file (0: all of it), found by reading backwards."""
    return b"".join(clogs.file_chunks(path, clogs.tail_offset(path, n, end) if n > 0 else 0, end))


def file_chunks(path: Path, end: int | None = None) -> Iterator[bytes]:
    """A file (its first ``end`` bytes) in chunks, without reading it all into memory."""
    return clogs.file_chunks(path, 0, end)


class FollowResponse(StreamingResponse):
    """A stream that ends as soon as the client disconnects, whatever the server's ASGI version (the generator is
    cancelled at its next await, and its ``finally`` runs), then calls ``on_close``."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    with contextlib.suppress(OSError):
                        await self.stream_response(send)
                    tg.cancel_scope.cancel()

                async def listen() -> None:
                    await self.listen_for_disconnect(receive)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                tg.start_soon(listen)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self.on_close()


def follower(root: Path, job_id: int, rank: int, first: int, state: Callable[[], tuple[int, bool]],
             attempt_fixed: bool, tail: int) -> AsyncIterator[bytes]:
    return clogs.follow(partial(log_path, root, job_id, rank=rank), first, state, attempt_fixed=attempt_fixed,
                        tail=tail)
