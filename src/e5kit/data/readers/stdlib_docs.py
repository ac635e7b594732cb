"""The Python standard library's documentation as (title, docstring) pairs: an offline source anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from e5kit.data.readers.base import ReaderOptions
from e5kit.data.readers.pydoc import iter_module_docs, iter_topic_docs
from e5kit.data.skips import SkipCounter
from e5kit.io.files import InputPathError
from e5kit.io.pairs import Pair


class Options(ReaderOptions):
    """Standard-library docs options.

    Attributes:
        members: Include classes and functions, not only modules.
        topics: Include the language-reference topics behind ``help()``.
    """

    members: bool = True
    topics: bool = True


def check_paths(paths: list[Path], options: Options) -> None:
    """At most one path, a folder of Python sources (default: this Python's standard library).

    Raises:
        InputPathError: naming the path that is not one folder.
    """
    if len(paths) > 1:
        raise InputPathError(f"{', '.join(map(str, paths))}: the pydoc source reads one folder of Python sources, not {len(paths)} paths")
    for path in paths:
        if not path.is_dir():
            raise InputPathError(f"{path}: the pydoc source reads a folder of Python sources, and this is not a folder")


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream (name + summary line, docstring) pairs; ``paths`` may name the stdlib folder (default: this Python's)."""
    root = paths[0] if paths else None
    records = iter_module_docs(root, members=options.members, skips=skips)
    for record in records:
        yield Pair(record.title, record.text, {"id": record.doc_id, "kind": record.kind})
    if options.topics:
        for record in iter_topic_docs():
            yield Pair(record.title, record.text, {"id": record.doc_id, "kind": record.kind})
