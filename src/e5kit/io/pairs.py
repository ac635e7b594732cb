"""The one (query, passage) Pair schema, curation's output and training's input, and pair-shard discovery.

A pair shard is a Parquet file (string columns ``PAIR_COLUMNS``) or JSONL lines (plain, or compressed
as .gz, .bz2, .xz, .lzma or .zst: the decompression layer's list, ``e5kit.io.files``) with ``query``,
``passage`` and optional ``source``; a missing source is the file's stem (``shard_stem``).

A pair dataset is shards, or a keep-mask over shards: a folder holding ``mask.json`` (the consistency
filter's output) names the shards it filters, their row counts, the file of per-row ranks and the k
that keeps a row, so filtering never copies the pairs and a new k rewrites only ``mask.json``
(``resolve_pair_shards`` reads it; the training sampler skips the rows it drops).
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
#: The keep-mask file of a filtered pair dataset.
MASK_FILE = "mask.json"


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
        if path.is_dir() and (path / MASK_FILE).is_file() and not (path / PAIRS_FOLDER).is_dir():
            raise ShardError(f"{pattern}: a keep-mask over other shards (a consistency filter's output), which only training "
                             "reads; give this command the filter's input shards, or filter with write_pairs: true")
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


@dataclass(frozen=True)
class PairShard:
    """One shard of a pair dataset and which of its rows are kept.

    Attributes:
        path: The shard file.
        keep: (rows,) bool, row i of the shard is kept; None keeps every row.
    """

    path: Path
    keep: Any = None


def keep_mask(query_rank, passage_rank, k: int):
    """The consistency filter's keep rule (E5 section 1): (rows,) bool, both ranks within ``k``."""
    return (query_rank <= k) & (passage_rank <= k)


def write_mask(folder: str | Path, shards: Sequence[Path], rows: Sequence[int], ranks_file: str, k: int) -> Path:
    """Write ``folder/mask.json``: rows of ``shards`` (``rows`` per shard) are kept where both ranks in
    ``folder/ranks_file`` (columns ``query_rank`` and ``passage_rank``, one row per row of the shards in
    order) are <= ``k``. Returns its path."""
    from e5kit.io.files import write_text_atomic

    mask = {"shards": [str(Path(path).resolve()) for path in shards], "rows": [int(n) for n in rows], "ranks": ranks_file, "k": int(k)}
    return write_text_atomic(Path(folder) / MASK_FILE, json.dumps(mask, indent=2))


def read_mask(folder: str | Path) -> list[PairShard]:
    """The shards of the keep-mask in ``folder``, each with its (rows,) bool keep array (one bit per row in
    memory, the pairs stay in their shards).

    Raises:
        ShardError: an unreadable mask, a shard that is gone or whose row count changed since the mask was
            written, or a ranks file of another length (each named).
    """
    import numpy as np
    import pyarrow.parquet as pq

    folder = Path(folder)
    try:
        mask = json.loads((folder / MASK_FILE).read_text(encoding="utf-8"))
        shards, rows, ranks_file, k = [Path(p) for p in mask["shards"]], mask["rows"], folder / mask["ranks"], int(mask["k"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ShardError(f"{folder / MASK_FILE}: not a readable keep-mask ({error})") from None
    if len(shards) != len(rows):
        raise ShardError(f"{folder / MASK_FILE}: {len(shards)} shards but {len(rows)} row counts")
    for path, count in zip(shards, rows):
        if not path.is_file():
            raise ShardError(f"{folder / MASK_FILE}: shard {path} is gone (the mask filters it in place)")
        found = pq.ParquetFile(path).metadata.num_rows if is_parquet(path) else count
        if found != count:
            raise ShardError(f"{path}: {found} rows, but the keep-mask in {folder} was written for {count}")
    ranks = pq.read_table(ranks_file, columns=["query_rank", "passage_rank"])
    if len(ranks) != sum(rows):
        raise ShardError(f"{ranks_file}: {len(ranks)} ranked rows, but the shards of {folder / MASK_FILE} hold {sum(rows)}")
    keep = keep_mask(ranks.column("query_rank").to_numpy(), ranks.column("passage_rank").to_numpy(), k)
    bounds = np.cumsum([0, *rows])
    return [PairShard(path, keep[start:stop]) for path, start, stop in zip(shards, bounds[:-1], bounds[1:])]


def resolve_pair_shards(patterns: Sequence[str | Path]) -> list[PairShard]:
    """A pair dataset's shards: a folder holding ``mask.json`` gives its shards with their keep arrays,
    anything else what ``resolve_shard_paths`` finds (every row kept).

    Raises:
        ShardError: as ``resolve_shard_paths`` and ``read_mask``.
    """
    shards: list[PairShard] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir() and (path / MASK_FILE).is_file():
            shards.extend(read_mask(path))
        else:
            shards.extend(PairShard(shard) for shard in resolve_shard_paths([pattern]))
    return shards
