"""Reddit: (post title + body, highest-scored top-level comment), E5's first source.

Reads Pushshift-style ndjson (plain, .gz or .zst): submissions (``title``, ``selftext``) and comments
(``body``, ``link_id``, ``parent_id``, ``score``), either mixed in one file or in monthly ``RS_<month>``
/ ``RC_<month>`` files, which are grouped into one shard. Compact exports whose records carry
``kind`` ("post"/"comment") and ``text`` are read too, as are pre-joined pair exports
(``post_title``, ``post_body``, ``comment``, ``type``).

E5's rules: comments over 4,096 characters or with score < 1 are dropped, as is deleted or removed
content; a post pairs with its best remaining top-level comment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e5kit.data.pair import Pair
from e5kit.data.readers.base import Child, Parent, ReaderOptions, file_meta, iter_json_records, join_best_child, text_field

DELETED = {"[deleted]", "[removed]", "[deleted by user]"}


class Options(ReaderOptions):
    """Reddit reader options.

    Attributes:
        max_comment_chars: Longer comments are dropped (E5: 4,096).
        min_comment_score: Comments scored below are dropped (E5: 1).
        include_replies: In pre-joined exports, also keep (parent comment -> reply) pairs.
    """

    max_comment_chars: int = 4096
    min_comment_score: int = 1
    include_replies: bool = False


def group_shards(paths: list[Path]) -> list[list[Path]]:
    """One shard per file, except that ``RS_<x>`` and ``RC_<x>`` (submissions, comments) share one."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        key = path.name[3:].split(".")[0] if path.name[:3] in ("RS_", "RC_") else path.name  # RS_2020-01.zst ~ RC_2020-01.gz
        groups.setdefault(f"{path.parent}/{key}", []).append(path)
    return [sorted(group, key=lambda path: path.name.startswith("RC_")) for _, group in sorted(groups.items())]


def _score(record: dict[str, Any]) -> int | None:
    try:
        return int(float(record.get("score")))
    except (TypeError, ValueError):
        return None


def _kind(record: dict[str, Any]) -> str:
    kind = record.get("kind")
    if kind in ("post", "submission", "comment"):
        return "comment" if kind == "comment" else "post"
    if "post_title" in record:
        return "joined"
    return "comment" if "link_id" in record else "post"


def _items(paths: list[Path], options: Options):
    def stream(skips: Counter) -> Iterator[Parent | Child | Pair]:
        for path in paths:
            for line, record in iter_json_records(path, skips):
                kind = _kind(record)
                if kind == "joined":
                    pair = _joined_pair(path, line, record, options, skips)
                elif kind == "post":
                    pair = _post(path, line, record, skips)
                else:
                    pair = _comment(path, line, record, options, skips)
                if pair is not None:
                    yield pair

    return stream


def _post(path: Path, line: int, record: dict[str, Any], skips: Counter) -> Parent | None:
    post_id, title = record.get("id"), text_field(record, "title")
    if not isinstance(post_id, str) or title is None:
        skips["post without id or title"] += 1
        return None
    body = text_field(record, "selftext", "text") or ""
    if title in DELETED or body in DELETED:
        skips["deleted or removed post"] += 1
        return None
    meta = file_meta(path, line=line, id=post_id, subreddit=record.get("subreddit"))
    return Parent(id=post_id, text=f"{title}\n{body}".strip(), meta=meta)


def _comment(path: Path, line: int, record: dict[str, Any], options: Options, skips: Counter) -> Child | None:
    body, link_id, parent_id, score = text_field(record, "body", "text"), record.get("link_id"), record.get("parent_id"), _score(record)
    if body is None or not isinstance(link_id, str) or not isinstance(parent_id, str) or score is None:
        skips["comment without body, link_id, parent_id or score"] += 1
        return None
    if parent_id != link_id:
        skips["comment is not top-level"] += 1
        return None
    if reason := _comment_rule(body, score, options):
        skips[reason] += 1
        return None
    post_id = link_id.removeprefix("t3_")
    return Child(id=str(record.get("id")), parent_id=post_id, score=score, text=body, meta={"line": line, "id": record.get("id"), "score": score})


def _comment_rule(body: str, score: int | None, options: Options) -> str | None:
    if body in DELETED:
        return "deleted or removed comment"
    if len(body) > options.max_comment_chars:
        return f"comment over {options.max_comment_chars} characters"
    if score is not None and score < options.min_comment_score:
        return f"comment score < {options.min_comment_score}"
    return None


def _joined_pair(path: Path, line: int, record: dict[str, Any], options: Options, skips: Counter) -> Pair | None:
    comment = text_field(record, "comment")
    if record.get("type") == "comment-reply":
        if not options.include_replies:
            skips["comment-reply pair (include_replies is off)"] += 1
            return None
        query = text_field(record, "parent_text")
    else:
        title, body = text_field(record, "post_title"), text_field(record, "post_body") or ""
        query = None if title is None else f"{title}\n{body}".strip()
    if query is None or comment is None:
        skips["pair without post or comment text"] += 1
        return None
    if query in DELETED or any(part in DELETED for part in query.split("\n")):
        skips["deleted or removed post"] += 1
        return None
    if reason := _comment_rule(comment, _score(record), options):
        skips[reason] += 1
        return None
    meta = file_meta(path, line=line, id=record.get("comment_id"), subreddit=record.get("subreddit"), type=record.get("type"))
    return Pair(query, comment, meta)


def read(paths: list[Path], options: Options, skips: Counter) -> Iterator[Pair]:
    """Stream the (post, top comment) pairs of one shard (its files read twice: ids first, then texts)."""
    yield from join_best_child(
        _items(paths, options),
        skips,
        min_fallback_score=float("-inf"),
        no_child_reason="post without an eligible top-level comment",
        not_chosen_reason="comment is not its post's top comment",
    )
