"""S2ORC / arXiv metadata: (title, abstract), plus citation pairs when citation data is present.

Reads JSON lines with ``title`` and ``abstract`` (arXiv's OAI snapshot, S2ORC metadata; id from
``id`` or ``paper_id``). A record may list ``citations``: objects with the citing ``context`` and
either the cited paper inline (``cited_title``, ``cited_abstract``) or its ``cited_id``, resolved
against the papers of the same shard. Citation pairs are symmetric: the curation pipeline assigns
the query role at random (seeded), as E5 did.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e5kit.data.readers.base import ReaderOptions, file_meta, text_field
from e5kit.data.skips import SkipCounter
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_jsonl

_SPACES = re.compile(r"\s+")


class Options(ReaderOptions):
    """arXiv / S2ORC reader options.

    Attributes:
        citations: Also emit (citation context, cited title + abstract) pairs.
    """

    citations: bool = True


def _paper_id(record: dict[str, Any]) -> str | None:
    value = record.get("id") or record.get("paper_id")
    return None if value in (None, "") else str(value)


def _citations(path: Path, line: int, record: dict[str, Any], skips: SkipCounter) -> list[dict[str, Any]]:
    citations = record.get("citations")
    if citations is None:
        return []
    if not isinstance(citations, list):
        skips.add("citations field is not a list", path, line)
        return []
    return citations


def _cited_ids(paths: list[Path]) -> set[str]:
    cited: set[str] = set()
    for path in paths:
        for _, record in iter_jsonl(path, SkipCounter()):
            citations = record.get("citations")
            if isinstance(citations, list):
                cited.update(str(c["cited_id"]) for c in citations if isinstance(c, dict) and c.get("cited_id") is not None)
    return cited


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream title -> abstract pairs, then citation pairs whose cited paper was found in the shard."""
    cited = _cited_ids(paths) if options.citations else set()
    cited_texts: dict[str, str] = {}
    waiting: list[tuple[str, str, dict[str, Any]]] = []  # (context, cited id, meta with file and line)
    for path in paths:
        for line, record in iter_jsonl(path, skips):
            paper_id = _paper_id(record)
            title, abstract = text_field(record, "title"), text_field(record, "abstract", "paperAbstract")
            if title is None or abstract is None:
                skips.add("paper without title or abstract", path, line)
            else:
                title, abstract = _SPACES.sub(" ", title), _SPACES.sub(" ", abstract)
                yield Pair(title, abstract, file_meta(path, line=line, id=paper_id, kind="title-abstract"))
                if paper_id in cited:
                    cited_texts[paper_id] = f"{title}\n{abstract}"
            if not options.citations:
                continue
            for index, citation in enumerate(_citations(path, line, record, skips)):
                context = text_field(citation, "context") if isinstance(citation, dict) else None
                if context is None:
                    skips.add("citation without context", path, line)
                    continue
                meta = file_meta(path, line=line, id=paper_id, kind="citation", citation=index, cited_id=citation.get("cited_id"))
                inline_title = text_field(citation, "cited_title")
                if inline_title is not None:
                    cited_text = f"{inline_title}\n{text_field(citation, 'cited_abstract') or ''}".strip()
                    yield Pair(context, cited_text, meta, symmetric=True)
                elif citation.get("cited_id") is not None:
                    waiting.append((context, str(citation["cited_id"]), meta))
                else:
                    skips.add("citation without cited paper", path, line)
    for context, cited_id, meta in waiting:
        if cited_id in cited_texts:
            yield Pair(context, cited_texts[cited_id], meta, symmetric=True)
        else:
            skips.add("cited paper not in shard", meta["file"], meta["line"])
