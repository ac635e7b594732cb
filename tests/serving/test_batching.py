"""The dynamic batcher: concurrent requests share batches, large ones are split and take turns."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from e5kit.serving.batching import BatchResult, DynamicBatcher


class RecordingEmbed:
    """Embeds text "t<n>" as the vector [n, n] and records each batch; can hold a batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on: str | None = None

    def __call__(self, texts: list[str]) -> BatchResult:
        self.release.wait(timeout=10)
        self.batches.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError(f"cannot embed {self.fail_on}")
        values = np.array([float(text[1:]) for text in texts], dtype=np.float32)
        return BatchResult(np.stack([values, values], axis=1), np.array([len(text) for text in texts]))


def texts(start: int, count: int) -> list[str]:
    return [f"t{i}" for i in range(start, start + count)]


def run(coroutine_function):
    return asyncio.run(coroutine_function())


def test_a_large_request_is_split_into_batches_and_reassembled_in_order():
    embed = RecordingEmbed()

    async def scenario():
        batcher = DynamicBatcher(embed, max_batch_size=4, max_wait_ms=0)
        await batcher.start()
        try:
            return await batcher.submit(texts(0, 10))
        finally:
            await batcher.stop()

    # Given max_batch_size 4, When one request brings 10 texts
    result = run(scenario)
    # Then it ran as batches of 4, 4 and 2, and its result is whole and in input order
    assert [len(batch) for batch in embed.batches] == [4, 4, 2]
    np.testing.assert_array_equal(result.embeddings[:, 0], np.arange(10))
    np.testing.assert_array_equal(result.tokens, [len(text) for text in texts(0, 10)])


def test_a_request_arriving_during_a_large_one_rides_in_the_next_batch():
    embed = RecordingEmbed()
    embed.release.clear()

    async def scenario():
        batcher = DynamicBatcher(embed, max_batch_size=4, max_wait_ms=0)
        await batcher.start()
        try:
            large = asyncio.create_task(batcher.submit(texts(0, 12)))
            await asyncio.sleep(0.05)  # the first batch of the large request is running (held)
            small = asyncio.create_task(batcher.submit(["t100"]))
            await asyncio.sleep(0.05)
            assert batcher.waiting == 2  # both have texts not yet in a batch
            embed.release.set()
            small_result = await small
            large_done_first = large.done()
            return await large, small_result, large_done_first
        finally:
            await batcher.stop()

    # Given a 12-text request being embedded in batches of 4, When a 1-text request arrives
    large, small, large_done_first = run(scenario)
    # Then the second batch carries it beside the large request's next texts, before the large one ends
    assert embed.batches[0] == texts(0, 4)
    assert embed.batches[1][0] == "t100" and len(embed.batches[1]) == 4
    assert not large_done_first
    np.testing.assert_array_equal(small.embeddings[:, 0], [100])
    np.testing.assert_array_equal(large.embeddings[:, 0], np.arange(12))
    assert sum(len(batch) for batch in embed.batches) == 13 and max(len(batch) for batch in embed.batches) == 4


def test_concurrent_small_requests_share_a_batch():
    embed = RecordingEmbed()

    async def scenario():
        batcher = DynamicBatcher(embed, max_batch_size=32, max_wait_ms=200)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(5)))
        finally:
            await batcher.stop()

    # Given a 200 ms wait, When five 1-text requests arrive together
    results = run(scenario)
    # Then one batch embedded them all, and each got its own vector
    assert len(embed.batches) == 1 and [r.embeddings[0, 0] for r in results] == [0, 1, 2, 3, 4]


def test_a_failing_batch_fails_its_requests_only():
    embed = RecordingEmbed()
    embed.fail_on = "t5"

    async def scenario():
        batcher = DynamicBatcher(embed, max_batch_size=4, max_wait_ms=0)
        await batcher.start()
        try:
            failing = await asyncio.gather(batcher.submit(texts(0, 8)), return_exceptions=True)
            healthy = await batcher.submit(texts(20, 2))
            return failing[0], healthy
        finally:
            await batcher.stop()

    # Given a request whose second batch fails, Then it gets the error and its rest is not embedded
    error, healthy = run(scenario)
    assert isinstance(error, RuntimeError) and "cannot embed t5" in str(error)
    assert embed.batches[:2] == [texts(0, 4), texts(4, 4)]
    # And the next request is served normally
    np.testing.assert_array_equal(healthy.embeddings[:, 0], [20, 21])


def test_a_stopped_batcher_starts_again_on_another_event_loop():
    embed = RecordingEmbed()
    batcher = DynamicBatcher(embed, max_batch_size=4, max_wait_ms=0)

    async def scenario(start: int):
        await batcher.start()
        try:
            return await batcher.submit(texts(start, 2))
        finally:
            await batcher.stop()

    # Given a batcher started, used and stopped on one event loop
    first = run(lambda: scenario(0))
    # When it is started on a new loop, as an app's second lifespan does
    second = run(lambda: scenario(10))
    # Then it embeds there too
    np.testing.assert_array_equal(first.embeddings[:, 0], [0, 1])
    np.testing.assert_array_equal(second.embeddings[:, 0], [10, 11])


def test_stop_fails_the_requests_still_waiting():
    embed = RecordingEmbed()
    embed.release.clear()

    async def scenario():
        batcher = DynamicBatcher(embed, max_batch_size=2, max_wait_ms=0)
        await batcher.start()
        running = asyncio.create_task(batcher.submit(texts(0, 2)))
        await asyncio.sleep(0.05)  # its batch is running (held)
        waiting = asyncio.create_task(batcher.submit(texts(10, 2)))
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        embed.release.set()  # stop() waits for the worker thread to finish the batch it holds
        await asyncio.wait_for(stopping, 10)
        return await asyncio.wait_for(asyncio.gather(running, waiting, return_exceptions=True), 10), batcher.waiting

    # Given one request in a running batch and one waiting in line, When the batcher stops
    (running, waiting), left = run(scenario)
    # Then both fail saying why instead of waiting forever, and nothing is left in line
    for error in (running, waiting):
        assert isinstance(error, RuntimeError) and "the server stopped before this request was embedded" in str(error)
    assert left == 0


def test_max_batch_size_must_be_positive():
    # A batch of no texts would never make progress
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        DynamicBatcher(RecordingEmbed(), max_batch_size=0)
