"""From a config to shard tasks: input files (globs resolved, checked before any work), the
decontamination indexes, one ``ShardTask`` per input shard and its fingerprint.

Input paths are checked before any work: a pattern that matches nothing, a folder, a FIFO, a dangling
link, an unreadable file or an unsupported compression is a config error naming the field and the path,
as is a KenLM model that cannot be loaded or a missing decontamination file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from e5kit.config import ConfigError
from e5kit.data.curation.config import CurateConfig, FiltersConfig, SourceConfig
from e5kit.data.curation.registry import READERS
from e5kit.data.filters import decontaminate, perplexity
from e5kit.data.readers import base
from e5kit.io.files import AtomicFile, InputPathError, check_input_file

#: Changes when a done marker's or a work shard's content changes, so those of an older e5kit are redone, not trusted.
MARKER_VERSION = 4  # 4: work shards count words with data.text.words (was str.split)


class ShardTask(BaseModel):
    """Everything a worker needs to process one shard; JSON-serialisable for Ray and process pools."""

    source_name: str
    source_type: str
    options: dict[str, Any]
    filters: FiltersConfig  # type: ignore[valid-type]
    files: list[str]
    shard: int
    work_dir: str
    seed: int
    eval_index: str | None = None

    @property
    def stem(self) -> str:
        return f"{self.source_name}-{self.shard:05d}"

    def fingerprint(self) -> str:
        """Changes when the task or any input file (size, mtime) changes, invalidating a done marker."""
        stats = [(f, *(_file_stat(Path(f)))) for f in self.files]
        payload = json.dumps([MARKER_VERSION, self.model_dump(mode="json", exclude={"work_dir"}), stats], sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def _file_stat(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


# ------------------------------------------------------------------------------------------- input files
def source_files(source: SourceConfig) -> list[Path]:
    """The input files, in a stable order; a pattern that matches nothing is an error."""
    files: list[Path] = []
    for pattern in source.paths:
        if pattern.startswith("hf:"):
            files.append(Path(pattern))
            continue
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise ValueError(f"{pattern}: no such file (or no match for the pattern)")
        files.extend(Path(match) for match in matches)
    return files


def source_shards(source: SourceConfig) -> list[list[Path]]:
    """The source's input files grouped into shards (one file each, unless the reader groups them)."""
    files = source_files(source)
    reader = READERS[source.type]
    if reader.pathless:
        return [files]
    group = getattr(reader.module, "group_shards", None)
    return group(files) if group else [[path] for path in files]


def check_source_paths(source: SourceConfig) -> None:
    """Refuse every input path the reader cannot read (see ``readers.base.check_paths``).

    Raises:
        ValueError: a pattern matching nothing, or a path that is a folder, a FIFO, a dangling link,
            unreadable or of an unsupported compression, naming it.
    """
    files = source_files(source)
    reader = READERS[source.type]
    hub = [str(path) for path in files if str(path).startswith("hf:")]
    if hub and not reader.hub_paths:
        raise ValueError(f"{hub[0]}: hf: paths are read by the generic source only")
    check = getattr(reader.module, "check_paths", base.check_paths)
    try:
        check(files, source.reader_options())
    except (OSError, InputPathError) as error:
        raise ValueError(str(error)) from None


def check_inputs(config: CurateConfig) -> None:
    """Check, before any work, every file the run will read and the models it will load.

    Raises:
        ConfigError: naming the field (``sources.N.paths``, ``sources.N: filters...``) and the path.
    """
    for index, source in enumerate(config.sources):
        where = f"sources.{index}"
        filters = config.filters_for(source)
        try:
            check_source_paths(source)
        except ValueError as error:
            raise ConfigError(f"{where}.paths: {error}") from None
        if filters.perplexity.active():
            try:
                perplexity.load_kenlm(filters.perplexity.model_path)
            except ValueError as error:
                raise ConfigError(f"{where}: {error}") from None
        missing = [str(p) for p in filters.decontaminate.eval_paths if not p.exists()]
        if missing:
            raise ConfigError(f"{where}: filters.decontaminate.eval_paths: no such file or folder: {missing}")
        try:
            for path in decontaminate.eval_files(list(filters.decontaminate.eval_paths)):
                check_input_file(path)
        except (OSError, InputPathError) as error:
            raise ConfigError(f"{where}: filters.decontaminate.eval_paths: {error}") from None


# ------------------------------------------------------------------------------------------------- tasks
def _eval_key(filters: Any) -> tuple:
    return (tuple(str(p) for p in filters.decontaminate.eval_paths), filters.decontaminate.ngram)


def build_eval_indexes(config: CurateConfig, work_dir: Path) -> tuple[dict[tuple, str], dict[str, Any]]:
    """Build (or reuse) one decontamination index file per distinct (eval paths, n) setting."""
    paths: dict[tuple, str] = {}
    info: dict[str, Any] = {}
    for source in config.sources:
        settings = config.filters_for(source).decontaminate
        if not settings.eval_paths:
            continue
        key = _eval_key(config.filters_for(source))
        if key in paths:
            continue
        digest = hashlib.blake2b(json.dumps(key).encode(), digest_size=8).hexdigest()
        path = work_dir / f"eval-index-{digest}.npz"
        if not path.is_file():
            index, skips = decontaminate.EvalIndex.build(list(settings.eval_paths), settings.ngram)
            with AtomicFile(path) as staged:
                index.save(staged.temporary)
            info[digest] = {
                "eval_paths": list(key[0]), "ngram": settings.ngram, "ngrams": len(index.ngrams), "texts": len(index.texts),
                "skipped": dict(skips), "skipped_where": skips.where(),
            }
        paths[key] = str(path)
    return paths, info


def plan_tasks(config: CurateConfig, work_dir: Path, eval_indexes: dict[tuple, str]) -> list[ShardTask]:
    """One task per input shard, sources in config order."""
    tasks = []
    for source in config.sources:
        filters = config.filters_for(source)
        for shard, files in enumerate(source_shards(source)):
            tasks.append(ShardTask(
                source_name=source.name, source_type=source.type, options=source.options, filters=filters,
                files=[str(f) for f in files], shard=shard, work_dir=str(work_dir), seed=config.seed,
                eval_index=eval_indexes.get(_eval_key(filters)),
            ))
    return tasks
