"""Streaming building blocks shared by the dump readers.

Every reader streams its files record by record and never raises on bad input: a corrupt JSON line,
a malformed XML row, invalid UTF-8, a truncated or corrupt ``.gz``/``.bz2``/``.xz``/``.zst`` stream
(read through ``e5kit.io.files``, the package's one decompression layer; the records before the cut
are kept), a number out of range or a record without the fields a reader needs is counted in a
:class:`~e5kit.data.skips.SkipCounter` under a readable reason, with its file and line, and passed over.
Lines and table rows come from the counted mode of ``e5kit.io.files.iter_text_lines`` and
``e5kit.io.tables`` (JSONL, TSV, CSV), which take the ``SkipCounter`` as their sink.

Paths are checked before work starts (:func:`check_paths`): a folder, a FIFO, a dangling link or an
unreadable file is an error naming it, never a silent drop.

The reader protocol: each module in ``e5kit.data.readers`` has an ``Options`` pydantic model and
``read(paths, options, skips) -> Iterator[Pair]`` over the files of one shard; it may define
``check_paths(paths, options)`` when it reads more than regular files (e.g. a ``datasets`` folder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from e5kit.data.skips import SkipCounter
from e5kit.io.files import check_input_file
from e5kit.io.pairs import Pair
from e5kit.io.text import has_visible_text


class ReaderOptions(BaseModel):
    """Base of every reader's options: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")


def check_paths(paths: list[Path], options: ReaderOptions) -> None:
    """Refuse, before work starts, any path that is not a readable regular file with a supported compression.

    The default of every reader that reads files; a reader that reads folders defines its own.

    Raises:
        FileNotFoundError, e5kit.io.files.InputPathError: naming the path (see ``e5kit.io.files.check_input_file``).
    """
    for path in paths:
        check_input_file(path)


class BadField(ValueError):
    """A record's field holds a value a reader cannot use; ``str(error)`` is the skip reason."""


def number_field(record: dict[str, Any], name: str) -> float | None:
    """``record[name]`` (a JSON number or numeric string) as a finite float; None when absent or null.

    The one rule every reader applies to numeric fields: out of range (``inf``, ``Infinity``,
    ``1e400``, ``NaN``) or not a number is a bad field, counted by the caller, never a crash.

    Raises:
        BadField: ``"<name> is not a finite number"``.
    """
    value = record.get(name)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise BadField(f"{name} is not a finite number")
    return number


def text_field(record: dict[str, Any], *names: str) -> str | None:
    """The first of ``names`` holding a string with visible text (``e5kit.io.text.has_visible_text``), stripped; None when there is none."""
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
    file: Path  # where the record is, for a skip's location
    line: int
    meta: dict[str, Any]
    preferred_child: str | None = None  # e.g. the accepted answer


@dataclass
class Child:
    """A comment or answer that may become the passage of its parent's pair."""

    id: str
    parent_id: str
    score: float
    text: str
    file: Path  # where the record is, for a skip's location
    line: int
    meta: dict[str, Any] = field(default_factory=dict)


def join_best_child(
    items: Callable[[SkipCounter], Iterable[Parent | Child | Pair]],
    skips: SkipCounter,
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
        skips: Skip reasons with locations (filled during pass 2 only, so nothing is counted twice).
        min_fallback_score: A child that is not the preferred one needs at least this score.
        no_child_reason: Skip reason for a parent without a chosen child.
        not_chosen_reason: Skip reason for a child that is not its parent's chosen one.
    """
    preferred: dict[str, str] = {}
    best: dict[str, tuple[float, str]] = {}
    preferred_seen: set[str] = set()
    for item in items(SkipCounter()):
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
                skips.add(no_child_reason, item.file, item.line)
            elif item.id in waiting_children:
                yield _joined(item, waiting_children.pop(item.id))
            else:
                waiting_parents[item.id] = item
        elif chosen.get(item.parent_id) != item.id:
            skips.add(not_chosen_reason, item.file, item.line)
        elif item.parent_id in waiting_parents:
            yield _joined(waiting_parents.pop(item.parent_id), item)
        else:
            waiting_children[item.parent_id] = item
    for child in waiting_children.values():
        skips.add("parent not found in shard", child.file, child.line)
    for parent in waiting_parents.values():
        skips.add("chosen child vanished between passes", parent.file, parent.line)


def _joined(parent: Parent, child: Child) -> Pair:
    return Pair(parent.text, child.text, {**parent.meta, **{f"child_{key}": value for key, value in child.meta.items()}})
