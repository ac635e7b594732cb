"""Readers and filters by name: the one place a new source type or filter is added.

``READERS`` maps a source ``type`` to its reader module (``Options`` and ``read(paths, options, skips)``,
optionally ``check_paths`` and ``group_shards``; see ``e5kit.data.readers.base``). ``FILTERS`` lists the
filters in the order they run: the per-pair ones in the shard workers (cheap rewrites and bounds first,
model-based checks last), then the dedup ones in the global pass. ``FiltersConfig`` gets one field per
named filter, and the shard builds its chain from the same list, so a new filter is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from e5kit.data.filters import clean, decontaminate, exact_dedup, language, length, near_dedup, perplexity, visible
from e5kit.data.filters.base import Filter, FilterConfig
from e5kit.data.readers import arxiv, generic, news, reddit, stackexchange, stdlib_docs, warc, wikipedia
from e5kit.io.pairs import Pair


@dataclass(frozen=True)
class Reader:
    """A source type. ``pathless``: it reads no input files; ``hub_paths``: its paths may be ``hf:NAME[:SPLIT]``."""

    module: ModuleType
    pathless: bool = False
    hub_paths: bool = False


READERS: dict[str, Reader] = {
    "reddit": Reader(reddit),
    "stackexchange": Reader(stackexchange),
    "wikipedia": Reader(wikipedia),
    "arxiv": Reader(arxiv),
    "s2orc": Reader(arxiv),
    "commoncrawl": Reader(warc),
    "warc": Reader(warc),
    "news": Reader(news),
    "generic": Reader(generic, hub_paths=True),
    "pydoc": Reader(stdlib_docs, pathless=True),
}


@dataclass(frozen=True)
class Resources:
    """What a shard hands the filter factories beyond their settings: the decontamination index file."""

    eval_index: str | None = None


@dataclass(frozen=True)
class FilterEntry:
    """One filter.

    Attributes:
        name: Its ``FiltersConfig`` field (None: it has no settings and always runs) and drop-reason prefix.
        config: Its settings model (``active()`` says whether it runs).
        build: Settings and shard resources -> the filter.
        stage: ``shard`` (per pair, in the workers) or ``global`` (dedup, over all shards in order).
        key: For a global filter: (pair, settings) -> the value the shard stores in its column.
        column, empty: The work-shard column of a global filter and its value when the filter is off.
        shared_by: For a global filter: settings -> the key under which sources share one instance (its
            memory of the pairs kept so far).
    """

    name: str
    config: type[FilterConfig] | None
    build: Callable[[Any, Resources], Filter]
    stage: Literal["shard", "global"] = "shard"
    key: Callable[[Pair, Any], Any] | None = None
    column: str | None = None
    empty: Any = None
    shared_by: Callable[[Any], tuple] | None = None


FILTERS: tuple[FilterEntry, ...] = (
    FilterEntry("clean", clean.Config, lambda config, _: clean.CleanFilter(config)),
    # Always on, right after cleaning: a side with no visible text is a counted drop, never a written pair.
    FilterEntry("visible_text", None, lambda _, __: visible.VisibleTextFilter()),
    FilterEntry("length", length.Config, lambda config, _: length.LengthFilter(config)),
    FilterEntry("language", language.Config, lambda config, _: language.LanguageFilter(config)),
    FilterEntry("perplexity", perplexity.Config, lambda config, _: perplexity.PerplexityFilter(config)),
    FilterEntry(
        "decontaminate", decontaminate.Config,
        lambda config, resources: decontaminate.DecontaminationFilter(config, decontaminate.EvalIndex.load(Path(resources.eval_index))),
    ),
    FilterEntry(
        "exact_dedup", exact_dedup.Config, lambda config, _: exact_dedup.ExactDedup(config), stage="global",
        key=lambda pair, config: exact_dedup.dedup_key(pair, config.key), column="dedup_key", empty=0,
        shared_by=lambda config: (),  # one set of keys seen for the whole run, whatever each source's key
    ),
    FilterEntry(
        "near_dedup", near_dedup.Config, lambda config, _: near_dedup.NearDedup(config), stage="global",
        key=lambda pair, config: near_dedup.signature(pair, config).tobytes(), column="minhash", empty=b"",
        shared_by=lambda config: (config.threshold, config.num_perm),
    ),
)


def settings_of(filters: Any, entry: FilterEntry) -> FilterConfig | None:
    """The entry's settings within a ``FiltersConfig`` (None for a filter without settings)."""
    return getattr(filters, entry.name) if entry.config is not None else None


def is_active(filters: Any, entry: FilterEntry) -> bool:
    settings = settings_of(filters, entry)
    return settings is None or settings.active()
