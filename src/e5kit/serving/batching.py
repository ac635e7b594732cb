"""Dynamic batching: concurrent requests share forward passes.

Requests put their texts on an asyncio queue; one collector task takes the first waiting request,
then keeps taking more until ``max_batch_size`` texts are gathered or ``max_wait_ms`` has passed,
and runs the whole batch on a single worker thread (the model is not re-entrant, and one batch of
32 is far faster than 32 batches of one). While the worker runs, new requests queue up and form the
next batch, so under load batches fill without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class BatchResult:
    """Embeddings of one request's texts and the tokens each used."""

    embeddings: np.ndarray
    tokens: np.ndarray  # (texts,) int


EmbedFunction = Callable[[list[str]], BatchResult]


class DynamicBatcher:
    """Batch concurrent ``submit`` calls into calls of ``embed`` on one worker thread.

    Args:
        embed: Embeds a list of texts (already prefixed) -> ``BatchResult``.
        max_batch_size: Texts gathered before a batch runs without waiting further; one request
            larger than this runs as one batch on its own.
        max_wait_ms: How long the first request of a batch waits for company.
        on_batch: Called with (texts in batch, seconds spent embedding) after every batch (metrics).
    """

    def __init__(
        self,
        embed: EmbedFunction,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.embed = embed
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._collector: asyncio.Task | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5kit-embed")

    @property
    def waiting(self) -> int:
        """Requests queued and not yet in a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue()
        self._collector = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting and shut the worker thread down."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        self._worker.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> BatchResult:
        """Embed ``texts`` as part of whatever batch forms around them."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                batch.append(item)
                size += len(item[0])
            await self._run(batch)

    async def _run(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [text for request_texts, _ in batch for text in request_texts]
        started = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._worker, self.embed, texts)
        except Exception as error:  # every request of the batch learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), time.perf_counter() - started)
        start = 0
        for request_texts, future in batch:
            end = start + len(request_texts)
            if not future.done():  # the client may have gone away
                future.set_result(BatchResult(result.embeddings[start:end], result.tokens[start:end]))
            start = end
