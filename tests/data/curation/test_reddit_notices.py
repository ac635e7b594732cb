"""Reddit removal notices and bot comments never become passages (issue 12, item 4).

The kind of fault: only three exact placeholder strings were known, so any other deletion or removal
notice ("[ Removed by reddit in response to a copyright notice. ]") with a high score became the top
comment, displacing the real answer. One normalising rule (``reddit.is_removal_notice``) now covers
posts and comments, and bot authors are skipped, each counted under its reason.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from curation_dumps import json_lines, write_lines
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.data.readers import reddit
from e5kit.data.skips import SkipCounter

CASE = Path(__file__).parent / "fixtures" / "reddit_notice"  # copy of ../shared/cases/reddit_notice
REAL_ANSWER = (
    "Start with the official Python tutorial, then work through small projects such as automating a "
    "spreadsheet report you already do by hand."
)
NOTICES = [
    "[deleted]",
    "[removed]",
    "[deleted by user]",
    "[ Removed by Reddit ]",
    "[ Removed by reddit in response to a copyright notice. ]",
    "[ Removed by Reddit on account of violating the content policy. ]",
    "[removed by moderator]",
    "[Removed]",
    "  [DELETED]  ",
    "[ removed\n   by  reddit ]",
    "[\tdeleted by user\t]",
]
NOT_NOTICES = ["[removed] but here is my answer", "I [deleted] my old post", "[deleted", "removed", "[Serious] answer", "[deletedness]", "[ not removed ]"]


def read(paths, **options):
    skips = SkipCounter()
    pairs = list(reddit.read(list(paths), reddit.Options(**options), skips))
    return pairs, skips


def thread(comment_body: str, author: str = "someone", score: int = 100) -> tuple[list[dict], list[dict]]:
    """One post with a high-scored first comment and a lower-scored real answer."""
    posts = [{"id": "p1", "title": "How do I reverse a list in Python?", "selftext": "", "score": 3}]
    comments = [
        {"id": "c1", "link_id": "t3_p1", "parent_id": "t3_p1", "score": score, "body": comment_body, "author": author},
        {"id": "c2", "link_id": "t3_p1", "parent_id": "t3_p1", "score": 2, "body": "Use reversed(items) or items[::-1].", "author": "helper"},
    ]
    return posts, comments


def write_thread(folder: Path, posts: list[dict], comments: list[dict]) -> list[Path]:
    return [write_lines(folder / "RS_2021-02.jsonl", json_lines(posts)), write_lines(folder / "RC_2021-02.jsonl", json_lines(comments))]


@pytest.mark.parametrize("text", NOTICES)
def test_every_placeholder_variant_is_a_removal_notice(text):
    assert reddit.is_removal_notice(text)


@pytest.mark.parametrize("text", NOT_NOTICES)
def test_content_mentioning_deletion_is_not_a_notice(text):
    assert not reddit.is_removal_notice(text)


def test_shared_case_the_real_answer_is_the_passage(tmp_path):
    """Given the reddit_notice case (a Pushshift month whose top-scored top-level comment is a copyright notice),
    When the RS_/RC_ pair is read as one shard,
    Then the notice is skipped under its reason and the real answer is the passage."""
    shards = reddit.group_shards(sorted(CASE.iterdir()))
    assert len(shards) == 1
    pairs, skips = read(shards[0])
    assert [p.passage for p in pairs] == [REAL_ANSWER]
    assert pairs[0].query.startswith("What is the best way to learn Python as a complete beginner?")
    assert skips == Counter({reddit.DELETED_COMMENT: 1})
    assert 2 * len(pairs) + sum(skips.values()) == 3  # 1 post + 2 comments, all accounted for


def test_shared_case_through_e5kit_curate(tmp_path):
    # Given the case files and a curate config over them
    raw = tmp_path / "raw"
    shutil.copytree(CASE, raw)
    config = tmp_path / "curate.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nworkers: 1\nsources:\n  - type: reddit\n    paths: ['{raw}/R[SC]_*']\n")
    # When `e5kit curate` runs
    result = CliRunner().invoke(app, ["curate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    # Then the one pair's passage is the real answer and the notice is a counted drop
    rows = pq.read_table(tmp_path / "out" / "pairs" / "reddit-00000.parquet").to_pylist()
    assert [row["passage"] for row in rows] == [REAL_ANSWER]
    assert "deleted or removed comment" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("notice", NOTICES)
def test_high_scored_notice_never_displaces_the_answer(tmp_path, notice):
    # Given a notice scored 100 above a real answer scored 2
    pairs, skips = read(write_thread(tmp_path, *thread(notice)))
    # Then the answer is chosen and the notice is counted
    assert [p.passage for p in pairs] == ["Use reversed(items) or items[::-1]."]
    assert skips[reddit.DELETED_COMMENT] == 1


@pytest.mark.parametrize("field", ["title", "selftext"])
@pytest.mark.parametrize("notice", ["[ Removed by Reddit ]", "[deleted by user]", " [REMOVED] "])
def test_removed_post_is_skipped(tmp_path, field, notice):
    posts, comments = thread("A real comment.", score=5)
    posts[0][field] = notice
    pairs, skips = read(write_thread(tmp_path, posts, comments))
    assert pairs == []
    assert skips[reddit.DELETED_POST] == 1
    assert 2 * len(pairs) + sum(skips.values()) == 3


def test_automoderator_is_always_a_bot(tmp_path):
    # Given AutoModerator's sticky comment on top (any case of the name)
    pairs, skips = read(write_thread(tmp_path, *thread("Please read the rules before posting.", author="automoderator")))
    # Then it is skipped as a bot comment and the real answer wins
    assert [p.passage for p in pairs] == ["Use reversed(items) or items[::-1]."]
    assert skips == Counter({reddit.BOT_COMMENT: 1})


def test_configurable_bot_authors(tmp_path):
    posts, comments = thread("I will be messaging you in 2 days to remind you of this link.", author="RemindMeBot")
    paths = write_thread(tmp_path, posts, comments)
    # Without the option the bot's comment wins on score
    pairs, _ = read(paths)
    assert [p.passage for p in pairs] == ["I will be messaging you in 2 days to remind you of this link."]
    # With it (matched case-insensitively) the bot is skipped, with its reason
    pairs, skips = read(paths, bot_authors=["remindmebot"])
    assert [p.passage for p in pairs] == ["Use reversed(items) or items[::-1]."]
    assert skips == Counter({reddit.BOT_COMMENT: 1})
    # And a post by a listed bot is skipped too
    posts[0]["author"] = "RemindMeBot"
    pairs, skips = read(write_thread(tmp_path, posts, comments), bot_authors=["RemindMeBot"])
    assert pairs == [] and skips[reddit.BOT_POST] == 1


def test_pre_joined_exports_use_the_same_rule(tmp_path):
    # Given pre-joined (post, comment) records with notices in the comment and in the post body
    records = [
        {"type": "post-comment", "post_title": "Question one here", "post_body": "", "comment": "[ Removed by Reddit ]", "score": 9},
        {"type": "post-comment", "post_title": "Question two here", "post_body": "[removed by moderator]", "comment": "An answer.", "score": 9},
        {"type": "post-comment", "post_title": "Question three", "post_body": "", "comment": "A real answer.", "score": 9, "author": "AutoModerator"},
        {"type": "post-comment", "post_title": "Question four", "post_body": "Body", "comment": "Kept answer.", "score": 9},
    ]
    pairs, skips = read([write_lines(tmp_path / "pairs.jsonl", json_lines(records))])
    assert [(p.query, p.passage) for p in pairs] == [("Question four\nBody", "Kept answer.")]
    assert skips == Counter({reddit.DELETED_COMMENT: 1, reddit.DELETED_POST: 1, reddit.BOT_COMMENT: 1})


def test_api_escaping_is_undone_once_in_dumps_and_not_in_joined_exports(tmp_path):
    # Given a Pushshift comment with the API's escaping, and a PRAW-style joined export that is not escaped
    posts, comments = thread("a &lt; b &amp;&amp; c &gt; d; literally &amp;lt;", score=5)
    dump = write_thread(tmp_path, posts, comments)
    joined = [write_lines(tmp_path / "joined.jsonl", json_lines([{"type": "post-comment", "post_title": "Q &amp; A", "comment": "x &amp; y < z", "score": 2}]))]
    # When read with the defaults, Then the dump's three escapes are decoded once and the export is left as is
    assert [p.passage for p in read(dump)[0]] == ["a < b && c > d; literally &lt;"]
    assert [(p.query, p.passage) for p in read(joined)[0]] == [("Q &amp; A", "x &amp; y < z")]
    # And api_escaped overrides both ways
    assert [p.passage for p in read(dump, api_escaped=False)[0]] == ["a &lt; b &amp;&amp; c &gt; d; literally &amp;lt;"]
    assert [(p.query, p.passage) for p in read(joined, api_escaped=True)[0]] == [("Q & A", "x & y < z")]
