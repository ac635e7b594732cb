"""Dynamic batching: concurrent requests share forward passes, and large requests are split.

Requests put their texts on an asyncio queue; one collector task gathers texts into batches of at
most ``max_batch_size`` and runs each on a single worker thread (the model is not re-entrant, and
one batch of 32 is far faster than 32 batches of one). When fewer texts than that are waiting, the
collector waits up to ``max_wait_ms`` for more; while the worker runs, new requests queue up and
form the next batch, so under load batches fill without waiting.

A request with more texts than ``max_batch_size`` is split: each batch takes texts first from
requests not yet started (in arrival order), then from started ones in turn, a request that still
has texts left going to the back of the line. So a query that arrives while a 2,048-text request is
being embedded rides in the next batch instead of waiting for the whole request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BatchResult:
    """Embeddings of one request's texts and the tokens each used."""

    embeddings: np.ndarray  # (texts, dim) float32
    tokens: np.ndarray  # (texts,) int


EmbedFunction = Callable[[list[str]], BatchResult]

#: Why a request still waiting when the batcher stops fails.
STOPPED = "the server stopped before this request was embedded"


@dataclass
class _Pending:
    """A submitted request: its texts, how far batches have taken them, and the results so far."""

    texts: list[str]
    future: asyncio.Future
    taken: int = 0
    parts: list[BatchResult] = field(default_factory=list)

    @property
    def left(self) -> int:
        return len(self.texts) - self.taken


class DynamicBatcher:
    """Batch concurrent ``submit`` calls into calls of ``embed`` on one worker thread.

    Args:
        embed: Embeds a list of texts (already prefixed) -> ``BatchResult``.
        max_batch_size: Most texts per call of ``embed``; larger requests are split across calls,
            taking turns with the other waiting requests.
        max_wait_ms: How long a batch with room left waits for more requests.
        on_batch: Called with (texts in batch, seconds spent embedding) after every batch (metrics).
    """

    def __init__(
        self,
        embed: EmbedFunction,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.embed = embed
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._fresh: deque[_Pending] = deque()  # not yet in any batch, in arrival order
        self._started: deque[_Pending] = deque()  # partly embedded, in turn order
        self._collector: asyncio.Task | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests with texts not yet taken into a batch."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + len(self._fresh) + len(self._started)

    async def start(self) -> None:
        """Start the collector and the worker thread on the running event loop.

        Everything ``stop`` releases is made here, so a stopped batcher starts again (an app whose
        lifespan runs twice, as a reused ``TestClient`` does).
        """
        if self._collector is not None:
            raise RuntimeError("the batcher is already started")
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5kit-embed")
        self._queue = asyncio.Queue()
        self._collector = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting, fail the requests still waiting, and shut the worker thread down."""
        if self._collector is None:
            return
        self._collector.cancel()
        await asyncio.gather(self._collector, return_exceptions=True)
        self._drain_queue()
        # Their futures belong to this event loop: left in line, a restarted collector would resolve them on a closed one.
        _fail((*self._fresh, *self._started), RuntimeError(STOPPED))
        self._fresh.clear()
        self._started.clear()
        self._worker.shutdown(wait=True)
        self._collector = self._queue = self._worker = None

    async def submit(self, texts: list[str]) -> BatchResult:
        """Embed ``texts`` as part of whatever batches form around them; results are in input order."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._fresh and not self._started:
                self._fresh.append(await self._queue.get())
            self._drain_queue()
            deadline = loop.time() + self.max_wait
            while self._texts_left() < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                try:
                    self._fresh.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
                self._drain_queue()
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    def _drain_queue(self) -> None:
        while not self._queue.empty():
            self._fresh.append(self._queue.get_nowait())

    def _texts_left(self) -> int:
        return sum(request.left for line in (self._fresh, self._started) for request in line if not request.future.done())

    def _take_batch(self) -> list[tuple[_Pending, int, int]]:
        """Up to ``max_batch_size`` texts as (request, start, end) slices: new requests first, then the others in turn."""
        batch, room = [], self.max_batch_size
        for line in (self._fresh, self._started):
            for _ in range(len(line)):
                if room == 0:
                    return batch
                request = line.popleft()
                if request.future.done():  # the client went away: drop what it has left
                    continue
                start = request.taken
                request.taken = min(len(request.texts), start + room)
                batch.append((request, start, request.taken))
                room -= request.taken - start
                if request.left:
                    self._started.append(request)  # the back of the line: the others get the next turn
        return batch

    async def _run(self, batch: list[tuple[_Pending, int, int]]) -> None:
        texts = [text for request, start, end in batch for text in request.texts[start:end]]
        started = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._worker, self.embed, texts)
        except asyncio.CancelledError:  # stop() during the batch: its requests are in no line for stop() to fail
            _fail((request for request, _, _ in batch), RuntimeError(STOPPED))
            raise
        except Exception as error:  # every request of the batch learns why, and leaves the line
            _fail((request for request, _, _ in batch), error)
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), time.perf_counter() - started)
        offset = 0
        for request, start, end in batch:
            size = end - start
            request.parts.append(BatchResult(result.embeddings[offset : offset + size], result.tokens[offset : offset + size]))
            offset += size
            # Batches run one at a time, so the batch that took a request's last texts completes it.
            if end == len(request.texts) and not request.future.done():  # the client may have gone away
                request.future.set_result(
                    BatchResult(
                        np.concatenate([part.embeddings for part in request.parts]),
                        np.concatenate([part.tokens for part in request.parts]),
                    )
                )


def _fail(requests: Iterable[_Pending], error: BaseException) -> None:
    for request in requests:
        if not request.future.done():  # the client may have gone away
            request.future.set_exception(error)
