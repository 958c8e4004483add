"""Group commit of submissions: the ones that arrive while a commit is in flight go together in the next
transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool

from suanli.control.store import Store
from suanli.workload.spec import JobSpec


class Batcher:
    """Each request is answered only after its job is committed."""

    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self.pending: list[tuple[JobSpec, asyncio.Future[dict[str, Any]]]] = []
        self.running = False
        self.task: asyncio.Future[None] | None = None

    async def submit(self, spec: JobSpec) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending.append((spec, fut))
        if not self.running:
            self.running = True
            self.task = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    out = await run_in_threadpool(self.store.submit_many, [s for s, _ in batch])
                except Exception as e:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), o in zip(batch, out, strict=True):
                    if not f.done():
                        f.set_result(o)
        finally:
            self.running = False
