"""How ``Encoder.encode`` cuts length-sorted texts into batches and pads them: one rule, shared with the
precision probe (``e5kit.encoder.precision.measure_precisions``), so a measurement runs inputs as encode would."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def padded_length(longest: int, multiple: int, limit: int) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` tokens, at most ``limit`` (the encoder's ``max_length``).

    Where a runtime's kernels take a different path on lengths that are not a multiple of their block
    (``OpenVinoBackend.sequence_multiple``), a text alone and the same text in a longer batch are
    computed differently, and an int8 graph can turn that rounding into a different vector; on whole
    blocks the padding adds only masked zeros. So every length is rounded, short texts included.
    """
    return min(-(-longest // multiple) * multiple, max(limit, longest))


def plan_batches(lengths: Sequence[int], max_batch_size: int, overhead_tokens: int, multiple: int = 1, limit: int | None = None) -> list[int]:
    """Sizes of consecutive batches over ``lengths`` (token counts sorted longest first) that cost least.

    A batch costs its padded tokens (its size times its first length, rounded by ``padded_length``)
    plus ``overhead_tokens`` for the forward pass itself; the plan minimises the sum, with at most
    ``max_batch_size`` texts per batch (exact dynamic programming, O(len(lengths) x max_batch_size)).
    Where neighbouring lengths are close (thousands of sorted texts) this is full batches; where they
    spread (a server's few concurrent requests), a long text no longer pads a batch of short ones.

    Returns:
        Batch sizes summing to ``len(lengths)``, in order.
    """
    count = len(lengths)
    limit = limit if limit is not None else max(lengths, default=0)
    padded = np.array([padded_length(int(length), multiple, limit) for length in lengths], dtype=np.int64)
    best = np.zeros(count + 1, dtype=np.int64)  # best[j]: least cost of the first j texts
    cut = np.zeros(count + 1, dtype=np.int64)
    for end in range(1, count + 1):
        starts = np.arange(max(0, end - max_batch_size), end)
        costs = best[starts] + overhead_tokens + (end - starts) * padded[starts]
        cut[end] = starts[np.argmin(costs)]  # the first minimum: the largest batch among equal costs
        best[end] = costs.min()
    sizes = []
    while count:
        sizes.append(int(count - cut[count]))
        count = int(cut[count])
    return sizes[::-1]
