"""Reddit: (post title + body, highest-scored top-level comment), E5's first source.

Reads Pushshift-style ndjson (plain, .gz or .zst): submissions (``title``, ``selftext``) and comments
(``body``, ``link_id``, ``parent_id``, ``score``), either mixed in one file or in monthly ``RS_<month>``
/ ``RC_<month>`` files, which are grouped into one shard. Compact exports whose records carry
``kind`` ("post"/"comment") and ``text`` are read too, as are pre-joined pair exports
(``post_title``, ``post_body``, ``comment``, ``type``).

E5's rules: comments over 4,096 characters or with score < 1 are dropped, as is deleted or removed
content; a post pairs with its best remaining top-level comment.

Deleted and removed content is recognised by one rule, :func:`is_removal_notice`, for post titles,
self-texts and comments alike, before the top comment is chosen: "[deleted]", "[removed]",
"[deleted by user]", "[ Removed by Reddit ]", "[ Removed by reddit in response to a copyright
notice. ]", "[removed by moderator]" and every other bracketed notice that starts with "deleted" or
"removed", whatever its case and spacing. Posts and comments by bot authors (AutoModerator, plus the
``bot_authors`` option) are skipped too. Each is counted under its reason, never silently dropped.

Decoding: Reddit's API escapes ``&``, ``<`` and ``>`` in titles, self-texts and comment bodies as
``&amp;``, ``&lt;``, ``&gt;``, and Pushshift dumps keep that escaping; it is undone once, here
(``e5kit.data.text.unescape_reddit``), for submission and comment records. Pre-joined exports
(PRAW, which asks for unescaped ``raw_json``) are used as they are. ``api_escaped`` overrides both.
No Reddit text is ever parsed as HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from e5kit.data.text import unescape_reddit
from e5kit.io.pairs import Pair
from e5kit.io.tables import iter_jsonl

#: Bot accounts whose posts and comments are never passages, whatever ``bot_authors`` says.
BUILTIN_BOTS = ("AutoModerator",)
DELETED_POST = "deleted or removed post"
DELETED_COMMENT = "deleted or removed comment"
BOT_POST = "post by a bot author"
BOT_COMMENT = "comment by a bot author"
# After normalising (casefold, inner whitespace collapsed): "[" then "deleted" or "removed" as a word, then
# anything without brackets, then "]". Covers "[deleted]", "[removed]", "[deleted by user]",
# "[ removed by reddit ]", "[ removed by reddit in response to a copyright notice. ]", "[removed by moderator]".
_NOTICE = re.compile(r"\[ ?(?:deleted|removed)\b[^\[\]]*\]")
_WHITESPACE = re.compile(r"\s+")


def is_removal_notice(text: str | None) -> bool:
    """True when ``text`` is a Reddit deletion or removal placeholder rather than content.

    The text is stripped, case-folded and its inner whitespace collapsed, then matched whole against
    ``[ deleted|removed ... ]``; so "[deleted]", "[ Removed by Reddit ]" and "[REMOVED  by moderator]"
    match, and "[removed] but here is my answer" or "I [deleted] it" do not.
    """
    if not isinstance(text, str):
        return False
    return _NOTICE.fullmatch(_WHITESPACE.sub(" ", text.strip().casefold())) is not None


class Options(ReaderOptions):
    """Reddit reader options.

    Attributes:
        max_comment_chars: Longer comments are dropped (E5: 4,096).
        min_comment_score: Comments scored below are dropped (E5: 1).
        include_replies: In pre-joined exports, also keep (parent comment -> reply) pairs.
        bot_authors: Authors (case-insensitive) whose posts and comments are skipped, in addition to
            AutoModerator (always skipped). Records without an ``author`` field are not checked.
        api_escaped: Whether texts carry the Reddit API's ``&amp;``/``&lt;``/``&gt;`` escaping, undone once.
            None (default): yes for submission and comment records (Pushshift dumps), no for pre-joined exports.
    """

    max_comment_chars: int = 4096
    min_comment_score: int = 1
    include_replies: bool = False
    bot_authors: list[str] = []
    api_escaped: bool | None = None

    def is_bot(self, author: Any) -> bool:
        """True when ``author`` is AutoModerator or one of ``bot_authors`` (case-insensitive)."""
        if not isinstance(author, str):
            return False
        return author.strip().casefold() in {name.casefold() for name in (*BUILTIN_BOTS, *self.bot_authors)}


def group_shards(paths: list[Path]) -> list[list[Path]]:
    """One shard per file, except that ``RS_<x>`` and ``RC_<x>`` (submissions, comments) share one."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        key = path.name[3:].split(".")[0] if path.name[:3] in ("RS_", "RC_") else path.name  # RS_2020-01.zst ~ RC_2020-01.gz
        groups.setdefault(f"{path.parent}/{key}", []).append(path)
    return [sorted(group, key=lambda path: path.name.startswith("RC_")) for _, group in sorted(groups.items())]


def _score(record: dict[str, Any]) -> int | None:
    """The record's score as an int; None when absent.

    Raises:
        BadField: the score is out of range or not a number (``base.number_field``).
    """
    score = number_field(record, "score")
    return None if score is None else int(score)


def _kind(record: dict[str, Any]) -> str:
    kind = record.get("kind")
    if kind in ("post", "submission", "comment"):
        return "comment" if kind == "comment" else "post"
    if "post_title" in record:
        return "joined"
    return "comment" if "link_id" in record else "post"


def _decoder(escaped: bool) -> Callable[[str], str]:
    return unescape_reddit if escaped else (lambda text: text)


def _items(paths: list[Path], options: Options):
    api_texts = _decoder(options.api_escaped is not False)
    joined_texts = _decoder(options.api_escaped is True)

    def stream(skips: SkipCounter) -> Iterator[Parent | Child | Pair]:
        for path in paths:
            for line, record in iter_jsonl(path, skips):
                kind = _kind(record)
                try:
                    if kind == "joined":
                        pair = _joined_pair(path, line, record, options, joined_texts, skips)
                    elif kind == "post":
                        pair = _post(path, line, record, options, api_texts, skips)
                    else:
                        pair = _comment(path, line, record, options, api_texts, skips)
                except BadField as error:
                    skips.add(str(error), path, line)
                    continue
                if pair is not None:
                    yield pair

    return stream


def _post(path: Path, line: int, record: dict[str, Any], options: Options, decode: Callable[[str], str], skips: SkipCounter) -> Parent | None:
    post_id, title = record.get("id"), text_field(record, "title")
    if not isinstance(post_id, str) or title is None:
        skips.add("post without id or title", path, line)
        return None
    title, body = decode(title), decode(text_field(record, "selftext", "text") or "")
    if is_removal_notice(title) or is_removal_notice(body):
        skips.add(DELETED_POST, path, line)
        return None
    if options.is_bot(record.get("author")):
        skips.add(BOT_POST, path, line)
        return None
    meta = file_meta(path, line=line, id=post_id, subreddit=record.get("subreddit"))
    return Parent(id=post_id, text=f"{title}\n{body}".strip(), file=path, line=line, meta=meta)


def _comment(path: Path, line: int, record: dict[str, Any], options: Options, decode: Callable[[str], str], skips: SkipCounter) -> Child | None:
    body, link_id, parent_id, score = text_field(record, "body", "text"), record.get("link_id"), record.get("parent_id"), _score(record)
    if body is None or not isinstance(link_id, str) or not isinstance(parent_id, str) or score is None:
        skips.add("comment without body, link_id, parent_id or score", path, line)
        return None
    body = decode(body)
    if parent_id != link_id:
        skips.add("comment is not top-level", path, line)
        return None
    if reason := _comment_rule(body, score, record.get("author"), options):
        skips.add(reason, path, line)
        return None
    post_id = link_id.removeprefix("t3_")
    return Child(id=str(record.get("id")), parent_id=post_id, score=score, text=body, file=path, line=line, meta={"line": line, "id": record.get("id"), "score": score})


def _comment_rule(body: str, score: int | None, author: Any, options: Options) -> str | None:
    """Why a comment can never be a passage (checked before the top comment is chosen), or None."""
    if is_removal_notice(body):
        return DELETED_COMMENT
    if options.is_bot(author):
        return BOT_COMMENT
    if len(body) > options.max_comment_chars:
        return f"comment over {options.max_comment_chars} characters"
    if score is not None and score < options.min_comment_score:
        return f"comment score < {options.min_comment_score}"
    return None


def _joined_pair(path: Path, line: int, record: dict[str, Any], options: Options, decode: Callable[[str], str], skips: SkipCounter) -> Pair | None:
    comment = text_field(record, "comment")
    if record.get("type") == "comment-reply":
        if not options.include_replies:
            skips.add("comment-reply pair (include_replies is off)", path, line)
            return None
        parts = [text_field(record, "parent_text")]
    else:
        parts = [text_field(record, "post_title"), text_field(record, "post_body")]
    if parts[0] is None or comment is None:
        skips.add("pair without post or comment text", path, line)
        return None
    parts, comment = [decode(part) for part in parts if part is not None], decode(comment)
    if any(is_removal_notice(part) for part in parts):
        skips.add(DELETED_POST, path, line)
        return None
    if reason := _comment_rule(comment, _score(record), record.get("author"), options):
        skips.add(reason, path, line)
        return None
    meta = file_meta(path, line=line, id=record.get("comment_id"), subreddit=record.get("subreddit"), type=record.get("type"))
    return Pair("\n".join(parts), comment, meta)


def read(paths: list[Path], options: Options, skips: SkipCounter) -> Iterator[Pair]:
    """Stream the (post, top comment) pairs of one shard (its files read twice: ids first, then texts)."""
    yield from join_best_child(
        _items(paths, options),
        skips,
        min_fallback_score=float("-inf"),
        no_child_reason="post without an eligible top-level comment",
        not_chosen_reason="comment is not its post's top comment",
    )
