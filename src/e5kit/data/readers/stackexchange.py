"""Stack Exchange: (question title + body, accepted answer, else the best answer above a score threshold).

Reads the data dump's ``Posts.xml`` (one ``<row .../>`` per line, parsed row by row so a malformed
row costs one record, not the file), its JSONL extraction (``post_type``, ``id``, ``parent_id``,
``accepted_answer_id``, ``score``, ``title``, ``body``) and pre-joined question/answer pair exports
(``title``, ``question_body``, ``answer_body``).

Decoding, exactly once (``e5kit.data.text``): in ``Posts.xml`` the XML parser unescapes each
attribute once; a ``Body`` is then HTML markup, converted to its visible text once by
:func:`~e5kit.data.text.html_to_text` (``&lt;int&gt;`` in a code block becomes ``<int>``; a literal
``&amp;lt;`` in the HTML is the visible text ``&lt;`` and stays so). A ``Title`` is plain text after
the XML unescape and is never HTML-decoded. JSONL extractions and pair exports usually carry text
already decoded (as the shared ``posts.jsonl`` does): their bodies are used as they are unless
``body_format: html`` says they hold HTML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from e5kit.data.readers.base import (
    BadField,
    Child,
    Parent,
    ReaderOptions,
    file_meta,
    join_best_child,
    number_field,
    text_field,
)
from e5kit.data.skips import SkipCounter
from e5kit.data.text import html_to_text
from e5kit.io.files import iter_text_lines
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_jsonl
from e5kit.io.text import has_visible_text

_XML_KINDS = {"1": "question", "2": "answer"}


class Options(ReaderOptions):
    """Stack Exchange reader options.

    Attributes:
        min_answer_score: An answer that is not the accepted one needs at least this score.
        include_question_body: Query = title + body (True) or the title alone.
        body_format: What the body fields hold. ``auto``: HTML in ``Posts.xml`` (the dump's format),
            plain text in JSONL extractions and pair exports; ``html`` or ``text`` for every file.
            HTML bodies are converted to text once; text bodies are never decoded. Titles are always text.
    """

    min_answer_score: int = 1
    include_question_body: bool = True
    body_format: Literal["auto", "html", "text"] = "auto"


def _xml_posts(path: Path, skips: SkipCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_number, line in iter_text_lines(path, skips):
        stripped = line.strip()
        if not stripped.startswith("<row"):
            if not stripped or stripped.startswith(("<?xml", "<posts", "</posts")):
                continue
            skips.add("malformed XML row", path, line_number)
            continue
        try:
            attributes = ElementTree.fromstring(stripped).attrib
        except ElementTree.ParseError:
            skips.add("malformed XML row", path, line_number)
            continue
        yield line_number, {
            "id": attributes.get("Id"),
            "post_type": _XML_KINDS.get(attributes.get("PostTypeId"), attributes.get("PostTypeId")),
            "parent_id": attributes.get("ParentId"),
            "accepted_answer_id": attributes.get("AcceptedAnswerId"),
            "score": attributes.get("Score"),
            "title": attributes.get("Title"),
            "body": attributes.get("Body"),
        }


def _records(path: Path, skips: SkipCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    if ".xml" in path.suffixes:
        return _xml_posts(path, skips)
    return iter_jsonl(path, skips)


def _optional_id(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _body_decoder(path: Path, options: Options) -> Callable[[str], str]:
    """How this file's body fields become text: HTML converted once, or text used as it is."""
    html = options.body_format == "html" or (options.body_format == "auto" and ".xml" in path.suffixes)
    return html_to_text if html else (lambda body: body)


def _items(paths: list[Path], options: Options):
    def stream(skips: SkipCounter) -> Iterator[Parent | Child | Pair]:
        for path in paths:
            body_text = _body_decoder(path, options)
            for line, record in _records(path, skips):
                site = record.get("site") or path.parent.name
                try:
                    if "answer_body" in record:
                        item = _joined_pair(path, line, site, record, options, body_text, skips)
                    else:
                        item = _post(path, line, site, record, options, body_text, skips)
                except BadField as error:
                    skips.add(str(error), path, line)
                    continue
                if item is not None:
                    yield item

    return stream


def _question_text(title: str, body: object, options: Options, body_text: Callable[[str], str]) -> str:
    text = body_text(body) if isinstance(body, str) and options.include_question_body else ""
    return f"{title}\n{text}".strip()


def _post(path: Path, line: int, site: str, record: dict[str, Any], options: Options, body_text: Callable[[str], str], skips: SkipCounter) -> Parent | Child | None:
    post_id, kind = _optional_id(record.get("id")), record.get("post_type")
    if post_id is None:
        skips.add("post without id", path, line)
        return None
    meta = file_meta(path, line=line, site=site)
    if kind == "question":
        title = text_field(record, "title")
        if title is None:
            skips.add("question without title", path, line)
            return None
        meta["question_id"] = post_id
        text = _question_text(title, record.get("body"), options, body_text)
        accepted = _optional_id(record.get("accepted_answer_id"))
        # Ids are unique within a site only; files may mix sites.
        return Parent(id=f"{site}/{post_id}", text=text, file=path, line=line, meta=meta, preferred_child=accepted and f"{site}/{accepted}")
    if kind == "answer":
        parent_id, body, score = _optional_id(record.get("parent_id")), text_field(record, "body"), number_field(record, "score")
        if parent_id is None or body is None or score is None:
            skips.add("answer without parent, body or score", path, line)
            return None
        text = body_text(body)
        if not has_visible_text(text):  # e.g. an image-only body: it must not displace a readable answer
            skips.add("answer without visible text", path, line)
            return None
        return Child(id=f"{site}/{post_id}", parent_id=f"{site}/{parent_id}", score=score, text=text, file=path, line=line, meta={"answer_id": post_id, "score": score})
    skips.add("post is neither question nor answer", path, line)
    return None


def _joined_pair(path: Path, line: int, site: str, record: dict[str, Any], options: Options, body_text: Callable[[str], str], skips: SkipCounter) -> Pair | None:
    title, answer = text_field(record, "title"), text_field(record, "answer_body")
    if title is None or answer is None:
        skips.add("pair without title or answer", path, line)
        return None
    meta = file_meta(path, line=line, site=site, question_id=record.get("question_id"), answer_id=record.get("answer_id"), accepted=record.get("accepted"))
    return Pair(_question_text(title, record.get("question_body"), options, body_text), body_text(answer), meta)


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream the (question, answer) pairs of one shard (read twice: ids and scores first, then texts)."""
    yield from join_best_child(
        _items(paths, options),
        skips,
        min_fallback_score=options.min_answer_score,
        no_child_reason="question without accepted or high-scored answer",
        not_chosen_reason="answer is not its question's chosen answer",
    )
