"""Streaming building blocks shared by the dump readers.

Every reader streams its files record by record and never raises on bad input: a corrupt JSON line,
a malformed XML row, invalid UTF-8, a truncated ``.gz``/``.zst``/``.bz2`` stream or a record without
the fields a reader needs is counted in a ``skips`` counter under a readable reason and passed over.

The reader protocol: each module in ``e5kit.data.readers`` has an ``Options`` pydantic model and
``read(paths, options, skips) -> Iterator[Pair]`` over the files of one shard.
"""

from __future__ import annotations

import bz2
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from e5kit.data.pair import Pair
from e5kit.text import has_visible_text

CHUNK_BYTES = 1 << 20

# Skip reasons shared by every reader.
TRUNCATED = "truncated or corrupt compressed stream"
INVALID_UTF8 = "invalid UTF-8"
CORRUPT_JSON = "corrupt JSON line"
NOT_AN_OBJECT = "JSON line is not an object"
UNREADABLE = "unreadable file"


class ReaderOptions(BaseModel):
    """Base of every reader's options: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")


class TruncatedStream(Exception):
    """A compressed stream ended before its end marker."""


def _zstd_chunks(handle) -> Iterator[bytes]:
    import zstandard

    decompressor = zstandard.ZstdDecompressor(max_window_size=2**31)  # Pushshift dumps use long windows
    stream = decompressor.decompressobj()
    pending = b""
    while True:
        data = pending or handle.read(CHUNK_BYTES)
        pending = b""
        if not data:
            break
        yield stream.decompress(data)
        if stream.eof:  # one frame finished; a multi-frame file continues with a fresh decompressor
            pending = stream.unused_data
            stream = decompressor.decompressobj()
            if not pending:
                pending = handle.read(CHUNK_BYTES)
                if not pending:
                    return
    if not stream.eof:
        raise TruncatedStream


def _chunks(path: Path) -> Iterator[bytes]:
    """Decompressed bytes of ``path`` (.gz, .zst, .bz2 or plain), raising TruncatedStream on a cut stream."""
    with path.open("rb") as handle:
        suffix = path.suffix
        if suffix == ".zst":
            yield from _zstd_chunks(handle)
            return
        if suffix in (".gz", ".bz2"):
            opener = gzip.GzipFile if suffix == ".gz" else bz2.BZ2File
            with opener(fileobj=handle) as stream:
                try:
                    while data := stream.read1(CHUNK_BYTES):  # read1: data before a cut still comes out
                        yield data
                except (EOFError, OSError, zlib.error) as error:
                    raise TruncatedStream from error
            return
        while data := handle.read(CHUNK_BYTES):
            yield data


def iter_lines(path: str | Path, skips: Counter, *, keep_blank: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line) per line (blank ones only with ``keep_blank``).

    Undecodable lines and cut or corrupt streams are counted in ``skips``.
    """
    path = Path(path)
    number = 0
    rest = b""
    try:
        for chunk in _chunks(path):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                number += 1
                line = _decode(raw, skips, keep_blank)
                if line is not None:
                    yield number, line
    except TruncatedStream:
        skips[TRUNCATED] += 1
        return  # the partial last line of a cut stream is not a record
    except OSError:
        skips[UNREADABLE] += 1
        return
    if rest:
        line = _decode(rest, skips, keep_blank)
        if line is not None:
            yield number + 1, line


def _decode(raw: bytes, skips: Counter, keep_blank: bool) -> str | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        skips[INVALID_UTF8] += 1
        return None
    return line if keep_blank or line.strip() else None


def iter_json_records(path: str | Path, skips: Counter) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) per JSON line; corrupt lines and non-objects are counted."""
    for number, line in iter_lines(path, skips):
        try:
            record = json.loads(line)
        except ValueError:
            skips[CORRUPT_JSON] += 1
            continue
        if not isinstance(record, dict):
            skips[NOT_AN_OBJECT] += 1
            continue
        yield number, record


def text_field(record: dict[str, Any], *names: str) -> str | None:
    """The first of ``names`` holding a string with visible text (``e5kit.text.has_visible_text``), stripped; None when there is none."""
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and has_visible_text(value):
            return value.strip()
    return None


def file_meta(path: Path, **fields: Any) -> dict[str, Any]:
    return {"file": str(path), **{key: value for key, value in fields.items() if value is not None}}


# ---------------------------------------------------------------------------------- parent/child join
@dataclass
class Parent:
    """A post or question that pairs with one chosen child (comment or answer)."""

    id: str
    text: str
    meta: dict[str, Any]
    preferred_child: str | None = None  # e.g. the accepted answer


@dataclass
class Child:
    """A comment or answer that may become the passage of its parent's pair."""

    id: str
    parent_id: str
    score: float
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def join_best_child(
    items: Callable[[Counter], Iterable[Parent | Child | Pair]],
    skips: Counter,
    *,
    min_fallback_score: float,
    no_child_reason: str,
    not_chosen_reason: str,
) -> Iterator[Pair]:
    """Pair each parent with its preferred child, else its best-scored child, in two streaming passes.

    Pass 1 keeps only ids and scores and decides the chosen child of every parent. Pass 2 streams
    again and pairs texts; only one side of a pair not yet complete is held in memory (dumps list
    parents before their children, so this stays small). Every item ends as a pair or a counted skip.

    Args:
        items: Re-iterable source: ``items(skips)`` streams parents and children (and ready-made pairs of
            pre-joined formats, passed through), counting bad records.
        skips: Counter of skip reasons (filled during pass 2 only, so nothing is counted twice).
        min_fallback_score: A child that is not the preferred one needs at least this score.
        no_child_reason: Skip reason for a parent without a chosen child.
        not_chosen_reason: Skip reason for a child that is not its parent's chosen one.
    """
    preferred: dict[str, str] = {}
    best: dict[str, tuple[float, str]] = {}
    preferred_seen: set[str] = set()
    for item in items(Counter()):
        if isinstance(item, Pair):
            continue
        if isinstance(item, Parent):
            if item.preferred_child:
                preferred[item.id] = item.preferred_child
        elif preferred.get(item.parent_id) == item.id:
            preferred_seen.add(item.parent_id)
        elif item.score >= min_fallback_score and (item.parent_id not in best or item.score > best[item.parent_id][0]):
            best[item.parent_id] = (item.score, item.id)
    chosen = {parent: child for parent, (_, child) in best.items()}
    chosen.update({parent: preferred[parent] for parent in preferred_seen})
    del best, preferred, preferred_seen

    waiting_parents: dict[str, Parent] = {}
    waiting_children: dict[str, Child] = {}
    for item in items(skips):
        if isinstance(item, Pair):
            yield item
        elif isinstance(item, Parent):
            if item.id not in chosen:
                skips[no_child_reason] += 1
            elif item.id in waiting_children:
                yield _joined(item, waiting_children.pop(item.id))
            else:
                waiting_parents[item.id] = item
        elif chosen.get(item.parent_id) != item.id:
            skips[not_chosen_reason] += 1
        elif item.parent_id in waiting_parents:
            yield _joined(waiting_parents.pop(item.parent_id), item)
        else:
            waiting_children[item.parent_id] = item
    if waiting_children:
        skips["parent not found in shard"] += len(waiting_children)
    if waiting_parents:
        skips["chosen child vanished between passes"] += len(waiting_parents)


def _joined(parent: Parent, child: Child) -> Pair:
    return Pair(parent.text, child.text, {**parent.meta, **{f"child_{key}": value for key, value in child.meta.items()}})
