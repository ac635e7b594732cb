"""The one (query, passage) Pair schema, curation's output and training's input, and pair-shard discovery.

A pair shard is a Parquet file (string columns ``PAIR_COLUMNS``) or JSONL lines (plain, or compressed
as .gz, .bz2, .xz, .lzma or .zst: the decompression layer's list, ``e5kit.io.files``) with ``query``,
``passage`` and optional ``source``; a missing source is the file's stem (``shard_stem``).
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e5kit.io.files import COMPRESSED_SUFFIXES, InputPathError, check_input_file

#: Columns of a pair shard (Parquet, all strings); ``meta`` is a JSON object with the pair's provenance.
PAIR_COLUMNS = ("query", "passage", "source", "meta")


@dataclass
class Pair:
    """One (query, passage) pair and where it came from.

    Attributes:
        query: The query-side text (post, title, question, headline...).
        passage: The passage-side text (comment, abstract, answer, body...).
        meta: Provenance: input file, line or record id, and reader-specific fields.
        symmetric: Neither side is naturally the query (e.g. citation pairs); the curation
            pipeline then assigns the query role at random with a seeded, order-free coin.
        source: The source it was read from (training's mixture; a shard's ``source`` column).
    """

    query: str
    passage: str
    meta: dict[str, Any] = field(default_factory=dict)
    symmetric: bool = False
    source: str = ""

    def meta_json(self) -> str:
        return json.dumps(self.meta, ensure_ascii=False, sort_keys=True)


class ShardError(ValueError):
    """A shard path or file is unusable; the message names it."""


#: Pair shard file names end in one of these (lower case): Parquet, or JSONL plain or compressed with any
#: codec the decompression layer reads (``e5kit.io.files.COMPRESSED_SUFFIXES``).
SHARD_SUFFIXES = (".parquet", ".jsonl", *(f".jsonl{suffix}" for suffix in COMPRESSED_SUFFIXES))


#: The folder of pair shards inside a stage's output folder (curate, holdout, consistency).
PAIRS_FOLDER = "pairs"


def _shard_suffix(path: Path) -> str | None:
    """The shard suffix ``path``'s name ends in (any case), longest first; None for other files."""
    name = path.name.lower()
    return next((suffix for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True) if name.endswith(suffix)), None)


def is_shard(path: Path) -> bool:
    return _shard_suffix(path) is not None


def shard_stem(path: Path) -> str:
    """The file name without its shard suffix: the source of rows that name none."""
    suffix = _shard_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def is_parquet(path: Path) -> bool:
    return _shard_suffix(path) == ".parquet"


def output_shard_names(shards: Sequence[Path]) -> list[str]:
    """The file name a stage that writes one Parquet shard per input shard (holdout, consistency) gives
    each of ``shards``: ``<stem>.parquet`` (``shard_stem``).

    Raises:
        ShardError: two shards share a stem (the same name in two folders, or ``a.parquet`` beside
            ``a.jsonl``), naming it: their outputs would overwrite each other.
    """
    names = [f"{shard_stem(shard)}.parquet" for shard in shards]
    repeated = sorted(stem for stem, count in Counter(shard_stem(shard) for shard in shards).items() if count > 1)
    if repeated:
        raise ShardError(f"{', '.join(repeated)}: two pair shards share this file name; give folders whose shard names differ")
    return names


def resolve_shard_paths(patterns: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (every shard below them: ``SHARD_SUFFIXES``; for a stage's output folder, one
    holding a ``pairs/`` folder, the shards of ``pairs/``) and globs into a sorted list of shards, each
    checked to be a readable file (a Parquet file: its footer) before any work.

    Raises:
        ShardError: naming a pattern (a folder, a glob) that matches no shard file, a file that is not a
            shard, or a shard that cannot be read.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir() and (path / PAIRS_FOLDER).is_dir():
            # A stage's output folder (curate, holdout, consistency): its pairs/ are the pairs; its other
            # files (curation's work/ shards, held-out BEIR splits, consistency scores) are not.
            path = path / PAIRS_FOLDER
        if path.is_dir():
            # Hidden entries are left out: unfinished writes (e5kit.io.files.temporary_path) are hidden.
            files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
            matches = [p for p in files if is_shard(p)]
            if files and not matches:
                raise ShardError(f"{pattern}: folder holds no pair shard ({', '.join(SHARD_SUFFIXES)}), only {len(files)} other file(s), e.g. {files[0].name}")
        elif path.is_file():
            if not is_shard(path):
                raise ShardError(f"{path}: not a pair shard (expected one of {', '.join(SHARD_SUFFIXES)})")
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file() and is_shard(Path(p)))
        if not matches:
            what = "folder holds" if path.is_dir() else "matches"
            raise ShardError(f"{pattern}: {what} no pair shard ({', '.join(SHARD_SUFFIXES)})")
        for match in matches:
            try:
                check_input_file(match)
                if is_parquet(match):
                    import pyarrow.parquet as pq

                    pq.ParquetFile(match)  # the footer: a damaged or foreign file is refused by name before any work
            except (OSError, InputPathError) as error:
                raise ShardError(str(error)) from None
            except Exception as error:  # pyarrow's ArrowInvalid and kin
                raise ShardError(f"{match}: not a readable Parquet file ({error})") from None
        found.update(dict.fromkeys(matches))
    return list(found)
