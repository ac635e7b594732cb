"""The curate stage's settings: pure validation (types, names, reader options, filter overrides).

Nothing here touches the file system or loads a model: globbing the input paths, checking that they
are readable files, loading the KenLM model and checking the decontamination files are the planner's
(``e5kit.data.curation.planner.check_inputs``), which ``e5kit curate`` and ``curate()`` run before any work.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from e5kit.config import describe_validation_error
from e5kit.data.curation.registry import FILTERS, READERS
from e5kit.data.readers.base import ReaderOptions

#: Settings of every filter (one field per named filter of ``registry.FILTERS``); per-source ``filters``
#: entries override these key by key.
FiltersConfig = create_model(
    "FiltersConfig",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Settings of every filter; per-source ``filters`` entries override these key by key.",
    **{entry.name: (entry.config, entry.config()) for entry in FILTERS if entry.config is not None},
)

SourceType = Literal[tuple(READERS)]  # type: ignore[valid-type]


class SourceConfig(BaseModel):
    """One raw source.

    Attributes:
        type: Reader: reddit, stackexchange, wikipedia, arxiv/s2orc, commoncrawl/warc, news, generic, pydoc.
        name: Name in shard files and the report (default: the type); unique per config.
        paths: Files or glob patterns (``**`` allowed); each file is a shard (Reddit pairs RS_/RC_ files). Plain or
            .gz/.bz2/.xz/.zst. A folder, FIFO, dangling link or unreadable file is an error naming it, before
            any work (the generic source reads a folder saved by ``datasets``, pydoc one folder of Python sources).
        options: The reader's options (see its ``Options``).
        filters: Overrides of the global filter settings for this source, e.g. ``{length: {min_passage_words: 20}}``.
    """

    model_config = ConfigDict(extra="forbid")

    type: SourceType
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.]+$")
    paths: list[str] = []
    options: dict[str, Any] = {}
    filters: dict[str, Any] = {}

    @model_validator(mode="after")
    def _default_name(self) -> SourceConfig:
        if self.name is None:
            self.name = self.type
        return self

    def reader_options(self) -> ReaderOptions:
        return READERS[self.type].module.Options.model_validate(self.options)


class CurateConfig(BaseModel):
    """The ``curate`` stage.

    Attributes:
        output_dir: Receives ``pairs/``, ``work/``, ``histograms/``, ``report.json`` and ``report.md``.
        sources: The raw sources.
        filters: Filter settings for all sources.
        engine: local (multiprocessing over shards) or ray (Ray Data; ``pip install 'e5kit[ray]'``).
        workers: Parallel shard workers (default: the machine's CPU count).
        seed: Seed of the symmetric-pair query-role coin.
        shard_size: Pairs per output Parquet file.
        histogram_bins: Bins of the length histograms.
    """

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    sources: list[SourceConfig] = Field(min_length=1)
    filters: FiltersConfig = FiltersConfig()  # type: ignore[valid-type]
    engine: Literal["local", "ray"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    seed: int = 0
    shard_size: int = Field(default=100_000, ge=1)
    histogram_bins: int = Field(default=40, ge=2)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = Counter(source.name for source in sources)
        repeated = [name for name, count in names.items() if count > 1]
        if repeated:
            raise ValueError(f"source names must be unique; repeated: {repeated} (set `name` on each)")
        return sources

    @model_validator(mode="after")
    def _check_sources(self) -> CurateConfig:
        for index, source in enumerate(self.sources):
            where = f"sources.{index}"
            try:
                source.reader_options()
            except ValidationError as error:
                raise ValueError(f"{where}.options: {describe_validation_error(error)}") from None
            try:
                self.filters_for(source)
            except ValidationError as error:
                raise ValueError(f"{where}.filters: {describe_validation_error(error)}") from None
            if not source.paths and not READERS[source.type].pathless:
                raise ValueError(f"{where}.paths: a {source.type} source needs at least one input path")
        return self

    def filters_for(self, source: SourceConfig) -> FiltersConfig:  # type: ignore[valid-type]
        """The global filter settings with the source's overrides applied."""
        return FiltersConfig.model_validate(_deep_merge(self.filters.model_dump(), source.filters))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
