"""The Python standard library's documentation as (title, docstring) pairs: an offline source anywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from e5kit.data.pair import Pair
from e5kit.data.readers.base import ReaderOptions
from e5kit.data.readers.pydoc import iter_module_docs, iter_topic_docs


class Options(ReaderOptions):
    """Standard-library docs options.

    Attributes:
        members: Include classes and functions, not only modules.
        topics: Include the language-reference topics behind ``help()``.
    """

    members: bool = True
    topics: bool = True


def read(paths: list[Path], options: Options, skips: Counter) -> Iterator[Pair]:
    """Stream (name + summary line, docstring) pairs; ``paths`` may name the stdlib folder (default: this Python's)."""
    root = paths[0] if paths else None
    records = iter_module_docs(root, members=options.members)
    for record in records:
        yield Pair(record.title, record.text, {"id": record.doc_id, "kind": record.kind})
    if options.topics:
        for record in iter_topic_docs():
            yield Pair(record.title, record.text, {"id": record.doc_id, "kind": record.kind})
