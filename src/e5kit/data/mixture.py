"""One weighted, seeded, resumable mixture of named sources: the batch sampler of every training stage.

Pre-training draws pairs from pair-shard sources (``e5kit.data.shards.PairSampler``), fine-tuning draws
query groups from datasets (``e5kit.training.finetune.FinetuneSampler``); both are a
:class:`MixtureSampler` over their own kind of source. Batch ``n`` is a function of ``(seed, n)`` and
of each source's read position alone, so ``state_dict()`` -> ``load_state_dict()`` continues the exact
sequence of batches after a restart:

- mixed batches: ``batch_size`` items split over the sources by a multinomial draw with the sources'
  probabilities (weights normalised), then shuffled, so sources interleave;
- source-homogeneous batches: one source chosen by probability gives the whole batch, in its own order.

Example:
    >>> class Counter:
    ...     def __init__(self): self.next = 0
    ...     def take(self, count, generator):
    ...         items = list(range(self.next, self.next + count)); self.next += count; return items
    ...     def state_dict(self): return {"next": self.next}
    ...     def load_state_dict(self, state): self.next = state["next"]
    >>> sampler = MixtureSampler({"a": Counter(), "b": Counter()}, {"a": 1.0, "b": 1.0}, batch_size=4, seed=0)
    >>> len(sampler.next_batch()), sampler.state_dict()["batches"]
    (4, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__ = ["MixtureSampler", "MixtureSource"]


class MixtureSource(Protocol):
    """One named source of a mixture: an endless, seeded stream of items with a saveable read position."""

    def take(self, count: int, generator: np.random.Generator) -> list:
        """The next ``count`` items; ``generator`` is the batch's, for any per-item random choice."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The read position (JSON-serialisable)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``."""
        ...


class MixtureSampler:
    """Global batches drawn from named sources by weight, optionally one source per batch.

    Args:
        sources: Name -> source; only names with a weight > 0 are sampled.
        weights: Name -> sampling weight (normalised into ``probabilities``).
        batch_size: Items per batch.
        seed: Seed of every draw (with the batch number).
        source_homogeneous: Draw each batch from one source, chosen by weight.

    Attributes:
        source_names: The sampled sources, sorted (the order of ``probabilities``).
        probabilities: Each sampled source's probability.
        batches: Batches drawn so far.
    """

    def __init__(
        self,
        sources: Mapping[str, MixtureSource],
        weights: Mapping[str, float],
        *,
        batch_size: int,
        seed: int = 0,
        source_homogeneous: bool = False,
    ) -> None:
        self.sources = {name: source for name, source in sources.items() if weights.get(name, 0) > 0}
        if not self.sources:
            raise ValueError("a mixture needs at least one source with a weight > 0")
        self.batch_size = batch_size
        self.seed = seed
        self.source_homogeneous = source_homogeneous
        self.batches = 0
        self.source_names = sorted(self.sources)
        probabilities = np.array([weights[name] for name in self.source_names], dtype=np.float64)
        self.probabilities = probabilities / probabilities.sum()

    def source_counts(self, generator: np.random.Generator) -> np.ndarray:
        """How many items each source (in ``source_names`` order) gives to the next batch."""
        if self.source_homogeneous:
            counts = np.zeros(len(self.source_names), dtype=np.int64)
            counts[generator.choice(len(self.source_names), p=self.probabilities)] = self.batch_size
            return counts
        return generator.multinomial(self.batch_size, self.probabilities)

    def next_batch(self) -> list:
        """The next global batch (``batch_size`` items)."""
        generator = np.random.default_rng([self.seed, self.batches])
        self.batches += 1
        counts = self.source_counts(generator)
        items = [item for name, count in zip(self.source_names, counts) if count for item in self.sources[name].take(int(count), generator)]
        if self.source_homogeneous:  # one source: its own (seeded) order
            return items
        return [items[i] for i in generator.permutation(len(items))]

    def missing_state_error(self, names: list[str]) -> Exception:
        """The error for a saved state without a position for ``names`` (the mixture changed since)."""
        return ValueError(f"the saved data position has no entry for source(s) {', '.join(names)}; the data changed since it was written")

    def state_dict(self) -> dict[str, Any]:
        """The exact position: ``{"batches": n, "sources": {name: source state}}`` (JSON-serialisable)."""
        return {"batches": self.batches, "sources": {name: source.state_dict() for name, source in self.sources.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``; every sampled source needs its saved position."""
        missing = sorted(set(self.sources) - set(state["sources"]))
        if missing:
            raise self.missing_state_error(missing)
        self.batches = int(state["batches"])
        for name, source in self.sources.items():
            source.load_state_dict(state["sources"][name])
