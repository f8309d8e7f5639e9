"""Dynamic batching: concurrent requests wait in one bounded asyncio queue and run together as one batch.

A collector task takes the first waiting item, then keeps taking items until the batch holds ``max_batch`` of them
or ``max_wait_s`` has passed since the first one, and runs the batch in a single worker thread (the event loop
never runs the model). While a batch runs, new items pile up in the queue and form the next one.

The queue is bounded: :meth:`Batcher.submit` raises :class:`QueueFullError` (the server answers 503 with
``Retry-After``) once ``queue_size`` items are waiting, so a flood of requests costs bounded memory. An item whose
client went away is cancelled by its request handler and skipped when its batch is formed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["Batcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """The queue is full (or the batcher is stopping); ``retry_after`` is a suggested wait in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class _Item:
    payload: Any
    future: asyncio.Future


class Batcher:
    """Groups single items into batches for ``run_batch(payloads) -> results`` (one result per payload, in order).

    ``on_batch(size, seconds)`` and ``on_dropped(n)`` are optional observers (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        queue_size: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.on_batch, self.on_dropped = on_batch, on_dropped
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mobilezoo-infer")  # the one thread running models
        self.pending = 0  # items submitted and not yet handed to the model (queued or being collected)
        self.running = 0  # items in the batch the model is running now
        self.batch_seconds = 0.0  # moving average of one batch's run time, for Retry-After
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._task = asyncio.create_task(self._collect(), name="mobilezoo-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new items, let the queued ones finish (up to ``timeout`` s), then stop the worker thread."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        while (self.pending or self.running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():  # only after the timeout
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(QueueFullError("the server is shutting down", 1))
        self.executor.shutdown(wait=True)

    async def run_in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the model thread (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- requests --------------------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until the queue has probably drained: whole batches of the current backlog, plus one."""
        batches = self.pending / self.max_batch + 1
        return max(1, math.ceil(self.max_wait_s + batches * max(self.batch_seconds, 0.001)))

    def submit(self, payloads: Sequence[Any]) -> list[asyncio.Future]:
        """Queue all of ``payloads`` (all or none) and return one future per payload."""
        if self._queue is None or self._stopping:
            raise QueueFullError("the server is shutting down", 1)
        if self.pending + len(payloads) > self.queue_size:
            raise QueueFullError(
                f"queue full ({self.pending} of {self.queue_size} images waiting); retry later", self.retry_after()
            )
        loop = asyncio.get_running_loop()
        futures = []
        for p in payloads:
            item = _Item(p, loop.create_future())
            self._queue.put_nowait(item)  # cannot fail: pending <= queue_size bounds the queue
            self.pending += 1
            futures.append(item.future)
        return futures

    # -- the collector ---------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                break
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.pending -= len(batch)
            live = [it for it in batch if not it.future.cancelled()]  # their clients went away
            if len(live) < len(batch) and self.on_dropped:
                self.on_dropped(len(batch) - len(live))
            if not live:
                continue
            t0 = time.perf_counter()
            self.running = len(live)
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [it.payload for it in live])
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} inputs")
            except Exception as e:  # a server-side failure: every request of this batch gets it
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            finally:
                self.running = 0
            dt = time.perf_counter() - t0
            self.batch_seconds = dt if self.batch_seconds == 0 else 0.8 * self.batch_seconds + 0.2 * dt
            if self.on_batch:
                self.on_batch(len(live), dt)
            for it, r in zip(live, results):
                if not it.future.done():
                    it.future.set_result(r)
