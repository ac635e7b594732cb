"""Every curation reader on the corrupt-input corpus: damaged gz/bz2/xz/zst streams, invalid UTF-8,
broken JSON, out-of-range numbers and paths that are not files. Each case ends in pairs and counted,
located skips that reconcile with what the file held, or in an error naming the path; never a traceback.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from corrupt_corpus import CODECS, DAMAGED_CASES, complete_lines_before_cut, unreadable_paths, write
from curation_dumps import json_lines, posts_xml
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.data.curation import CurateConfig, curate
from e5kit.data.curation.planner import check_inputs
from e5kit.data.readers import arxiv, generic, news, reddit, stackexchange, stdlib_docs, warc, wikipedia
from e5kit.data.skips import SkipCounter
from e5kit.io.files import INVALID_UTF8, TRUNCATED, UNREADABLE, CorruptStream, iter_byte_lines
from e5kit.io.tables import CORRUPT_JSON, NOT_AN_OBJECT

RECORDS = 2000  # about 250 kB of text: several bz2 blocks, so a cut stream still holds whole ones
PARAGRAPH = "with enough plain words in it to pass every length rule of every reader here"


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(line + b"\n" for line in json_lines(records))


def _json_units(lines: list[bytes]) -> int:
    """Units of a line-per-record file: every line that is not blank (an undecodable one is a unit too)."""
    return sum(1 for line in lines if line.strip())


@dataclass
class LineFormat:
    """One reader on one line-based format: how to write ``RECORDS`` records and how many units lines hold."""

    name: str
    module: object
    file_name: str
    data: Callable[[], bytes]
    units: Callable[[list[bytes]], int] = _json_units
    records_per_pair: int = 1
    options: dict | None = None


def _stack_xml() -> bytes:
    rows = []
    for i in range(RECORDS // 2):
        rows.append({"Id": 2 * i + 1, "PostTypeId": 1, "AcceptedAnswerId": 2 * i + 2, "Score": 1, "Title": f"Question {i} {PARAGRAPH}", "Body": "<p>Body</p>"})
        rows.append({"Id": 2 * i + 2, "PostTypeId": 2, "ParentId": 2 * i + 1, "Score": 1, "Body": f"<p>Answer {i} {PARAGRAPH}</p>"})
    return posts_xml(rows)


def _wiki_xml() -> bytes:
    pages = "".join(
        f"  <page>\n    <title>Article {i}</title>\n    <ns>0</ns>\n    <id>{i}</id>\n"
        f'    <revision><text xml:space="preserve">Paragraph {i} {" ".join([PARAGRAPH] * 4)}.</text></revision>\n  </page>\n'
        for i in range(RECORDS // 4)  # fewer, longer pages: as many bytes as the other formats, less parsing
    )
    return f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n{pages}</mediawiki>\n'.encode()


def _csv(delimiter: str) -> Callable[[], bytes]:
    return lambda: (f"query{delimiter}passage\n" + "".join(f"question {i}{delimiter}answer {i} {PARAGRAPH}\n" for i in range(RECORDS))).encode()


def _pushshift() -> bytes:
    records = []
    for i in range(RECORDS // 2):
        records.append({"id": f"p{i}", "title": f"Post {i}", "selftext": "", "subreddit": "test"})
        records.append({"id": f"c{i}", "link_id": f"t3_p{i}", "parent_id": f"t3_p{i}", "score": 3, "body": f"Comment {i} {PARAGRAPH}"})
    return _jsonl(records)


LINE_FORMATS = [
    LineFormat("reddit-pushshift", reddit, "RC_2020-01.jsonl", _pushshift, records_per_pair=2),
    LineFormat("reddit-joined", reddit, "pairs.jsonl", lambda: _jsonl([{"post_title": f"Post {i}", "comment": f"Comment {i} {PARAGRAPH}", "score": 5} for i in range(RECORDS)])),
    LineFormat("stackexchange-joined", stackexchange, "qa.jsonl", lambda: _jsonl([{"title": f"Question {i}", "answer_body": f"Answer {i} {PARAGRAPH}"} for i in range(RECORDS)])),
    LineFormat("stackexchange-xml", stackexchange, "Posts.xml", _stack_xml, lambda lines: sum(1 for line in lines if line.strip().startswith(b"<row")), records_per_pair=2),
    LineFormat("wikipedia-json", wikipedia, "wiki.jsonl", lambda: _jsonl([{"title": f"Article {i}", "text": f"Paragraph {i} {PARAGRAPH}"} for i in range(RECORDS)])),
    LineFormat("wikipedia-xml", wikipedia, "pages-articles.xml", _wiki_xml, lambda lines: sum(1 for line in lines if line.strip().startswith(b"<page"))),
    LineFormat("arxiv", arxiv, "papers.jsonl", lambda: _jsonl([{"id": str(i), "title": f"Paper {i}", "abstract": f"Abstract {i} {PARAGRAPH}"} for i in range(RECORDS)])),
    LineFormat("news", news, "news.jsonl", lambda: _jsonl([{"title": f"Headline {i}", "text": f"Story {i} {PARAGRAPH}"} for i in range(RECORDS)])),
    LineFormat("generic-jsonl", generic, "pairs.jsonl", lambda: _jsonl([{"query": f"q {i}", "passage": f"p {i} {PARAGRAPH}"} for i in range(RECORDS)])),
    LineFormat("generic-csv", generic, "pairs.csv", _csv(","), lambda lines: max(_json_units(lines) - 1, 0)),
    LineFormat("generic-tsv", generic, "pairs.tsv", _csv("\t"), lambda lines: max(_json_units(lines) - 1, 0)),
]


def read_all(fmt: LineFormat, path: Path) -> tuple[list, SkipCounter]:
    skips = SkipCounter()
    pairs = list(fmt.module.read([path], fmt.module.Options(**(fmt.options or {})), skips))
    return pairs, skips


def delivered_lines(path: Path) -> list[bytes]:
    """The lines e5kit's decompression layer gives out of ``path`` before any damage."""
    lines = []
    try:
        for _, line in iter_byte_lines(path):
            lines.append(line)
    except CorruptStream:
        pass
    return lines


def assert_located(skips: SkipCounter, path: Path) -> None:
    """Every skip names its file: the per-file counts add up to the skip counts, reason by reason."""
    for reason, count in skips.items():
        assert sum(skips.files[reason].values()) == count, reason
        assert skips.examples[reason], reason
    assert set().union(*(files for files in skips.files.values())) <= {str(path)}


@pytest.mark.parametrize("fmt", LINE_FORMATS, ids=lambda fmt: fmt.name)
@pytest.mark.parametrize("suffix", ["", *CODECS])
def test_every_codec_reads_every_record(tmp_path, fmt, suffix):
    # Given the same records plain and compressed with each codec
    path = write(tmp_path / f"{fmt.file_name}{suffix}", fmt.data())
    # When read
    pairs, skips = read_all(fmt, path)
    # Then every record is a pair and nothing is skipped
    assert not skips
    assert len(pairs) * fmt.records_per_pair == fmt.units(fmt.data().splitlines())


@pytest.mark.parametrize("fmt", LINE_FORMATS, ids=lambda fmt: fmt.name)
@pytest.mark.parametrize(("damage", "suffix"), DAMAGED_CASES, ids=lambda value: value)
def test_damaged_streams_keep_the_records_before_the_damage_and_count_it_once(tmp_path, fmt, damage, suffix):
    # Given a damaged compressed file
    path = write(tmp_path / f"{fmt.file_name}{suffix}", fmt.data(), damage)
    # When read
    pairs, skips = read_all(fmt, path)
    # Then the damage is one located skip at the line of the cut, after the last complete line
    lines = delivered_lines(path)
    assert skips[TRUNCATED] == 1
    assert skips.examples[TRUNCATED] == [{"file": str(path), "line": len(lines) + 1}]
    assert_located(skips, path)
    # And the records before it are all there: pairs + other skips reconcile with the lines given out
    assert len(pairs) * fmt.records_per_pair + sum(skips.values()) - 1 == fmt.units(lines)
    if damage == "truncated":
        assert len(lines) == complete_lines_before_cut(path.read_bytes(), suffix) > 0
    if damage == "garbage-after-member":  # the first member (half of the lines) is read whole
        assert len(lines) == len(fmt.data().splitlines()) // 2


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_invalid_utf8_and_broken_json_lines_are_located_skips(tmp_path, suffix):
    # Given news lines with invalid UTF-8 (line 2), broken JSON (line 3) and a non-object (line 4)
    good = json_lines([{"title": f"Headline {i}", "text": f"Story {i} {PARAGRAPH}"} for i in range(3)])
    path = write(tmp_path / f"news.jsonl{suffix}", b"\n".join([good[0], b'{"title": "caf\xe9"}', b"{broken", b"[1, 2]", good[1], good[2]]) + b"\n")
    # When read
    skips = SkipCounter()
    pairs = list(news.read([path], news.Options(), skips))
    # Then each bad line is one skip at its line, and the good ones are pairs
    assert len(pairs) == 3
    assert skips.where() == {
        INVALID_UTF8: {"files": {str(path): 1}, "examples": [{"file": str(path), "line": 2}]},
        CORRUPT_JSON: {"files": {str(path): 1}, "examples": [{"file": str(path), "line": 3}]},
        NOT_AN_OBJECT: {"files": {str(path): 1}, "examples": [{"file": str(path), "line": 4}]},
    }


OUT_OF_RANGE = ['"inf"', "Infinity", "-Infinity", "1e400", "NaN", '"nan"', '"12abc"']


def test_out_of_range_reddit_scores_are_counted_skips(tmp_path):
    # Given one post whose comments carry scores out of range or not numbers, and one valid comment
    post = b'{"id": "p1", "title": "Best way to learn chess", "selftext": "", "subreddit": "chess"}'
    comments = [
        f'{{"id": "c{i}", "link_id": "t3_p1", "parent_id": "t3_p1", "score": {score}, "body": "Comment {i} {PARAGRAPH}"}}'.encode()
        for i, score in enumerate([*OUT_OF_RANGE, "7"])
    ]
    # And pre-joined pairs with the same scores
    joined = [f'{{"post_title": "Post {i}", "comment": "Comment {PARAGRAPH}", "score": {score}}}'.encode() for i, score in enumerate(OUT_OF_RANGE)]
    path = write(tmp_path / "reddit.jsonl", b"\n".join([post, *comments, *joined]) + b"\n")
    # When read (it raised OverflowError before)
    skips = SkipCounter()
    pairs = list(reddit.read([path], reddit.Options(), skips))
    # Then every bad score is one skip at its line, and the valid comment pairs with the post
    assert [pair.meta["child_id"] for pair in pairs] == ["c7"]
    assert skips == {"score is not a finite number": 2 * len(OUT_OF_RANGE)}
    bad_lines = [2 + i for i in range(len(OUT_OF_RANGE))] + [3 + len(OUT_OF_RANGE) + i for i in range(len(OUT_OF_RANGE))]
    assert [example["line"] for example in skips.examples["score is not a finite number"]] == bad_lines[:5]
    assert 2 * len(pairs) + sum(skips.values()) == 2 + 2 * len(OUT_OF_RANGE)


@pytest.mark.parametrize("xml", [True, False], ids=["Posts.xml", "jsonl"])
def test_out_of_range_stack_exchange_scores_are_counted_skips(tmp_path, xml):
    # Given a question with an unaccepted answer of score "inf" and one of score 3
    if xml:
        rows = [
            {"Id": 1, "PostTypeId": 1, "Score": 1, "Title": "Why is the sky blue", "Body": "<p>Asking.</p>"},
            {"Id": 2, "PostTypeId": 2, "ParentId": 1, "Score": "inf", "Body": f"<p>Infinite {PARAGRAPH}</p>"},
            {"Id": 3, "PostTypeId": 2, "ParentId": 1, "Score": "1e400", "Body": f"<p>Huge {PARAGRAPH}</p>"},
            {"Id": 4, "PostTypeId": 2, "ParentId": 1, "Score": 3, "Body": f"<p>Rayleigh {PARAGRAPH}</p>"},
        ]
        path = tmp_path / "Posts.xml"
        path.write_bytes(posts_xml(rows))
    else:
        records = [
            b'{"id": 1, "post_type": "question", "title": "Why is the sky blue", "body": "Asking."}',
            f'{{"id": 2, "post_type": "answer", "parent_id": 1, "score": Infinity, "body": "Infinite {PARAGRAPH}"}}'.encode(),
            f'{{"id": 3, "post_type": "answer", "parent_id": 1, "score": 1e400, "body": "Huge {PARAGRAPH}"}}'.encode(),
            f'{{"id": 4, "post_type": "answer", "parent_id": 1, "score": 3, "body": "Rayleigh {PARAGRAPH}"}}'.encode(),
        ]
        path = write(tmp_path / "posts.jsonl", b"\n".join(records) + b"\n")
    # When read
    skips = SkipCounter()
    pairs = list(stackexchange.read([path], stackexchange.Options(), skips))
    # Then the two bad scores are counted skips and the valid answer pairs with the question
    assert [pair.passage.split()[0] for pair in pairs] == ["Rayleigh"]
    assert skips == {"score is not a finite number": 2}
    assert 2 * len(pairs) + sum(skips.values()) == 4


def _warc(pages: int) -> bytes:
    """An uncompressed WET-style WARC: a warcinfo record and ``pages`` conversion records."""
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=False)
    writer.write_record(writer.create_warcinfo_record("cc.warc", {"software": "e5kit-tests"}))
    for i in range(pages):
        payload = f"Page title {i}\nPage {i} {PARAGRAPH}.\n".encode()
        writer.write_record(writer.create_warc_record(f"https://example.org/{i}", "conversion", payload=io.BytesIO(payload), warc_content_type="text/plain"))
    return buffer.getvalue()


WARC_PAGES = 600  # several bz2 blocks


@pytest.mark.parametrize(("suffix", "damage"), [(suffix, None) for suffix in ["", *CODECS]] + [(suffix, "truncated") for suffix in CODECS])
def test_warc_reads_every_codec_and_keeps_the_pages_before_a_cut(tmp_path, suffix, damage):
    # Given a WARC of many pages, plain or compressed with each codec (whole, or cut)
    path = write(tmp_path / f"cc.warc{suffix}", _warc(WARC_PAGES), damage)
    # When read
    skips = SkipCounter()
    pairs = list(warc.read([path], warc.Options(), skips))
    # Then every page is a pair when whole, and a cut keeps the pages before it with one located skip
    if not damage:
        assert len(pairs) == WARC_PAGES and skips == {"non-content WARC record (warcinfo, request, metadata)": 1}
    else:
        assert skips[TRUNCATED] == 1 and skips.files[TRUNCATED] == {str(path): 1}
        assert 0 < len(pairs) < WARC_PAGES
    assert_located(skips, path)


def test_pydoc_counts_python_files_that_do_not_parse(tmp_path):
    # Given a source folder with one documented module and one that does not parse
    (tmp_path / "good.py").write_text('"""A documented module about parsing text files."""\n')
    (tmp_path / "broken.py").write_text('"""Docs."""\ndef (:\n')
    # When read
    skips = SkipCounter()
    pairs = list(stdlib_docs.read([tmp_path], stdlib_docs.Options(members=False, topics=False), skips))
    # Then the broken file is a located skip
    assert [pair.meta["id"] for pair in pairs] == ["good"]
    assert skips.where() == {"Python file that does not parse": {"files": {str(tmp_path / "broken.py"): 1}, "examples": [{"file": str(tmp_path / "broken.py"), "line": None}]}}


# ------------------------------------------------------------------------------- paths that are not files
SOURCE_TYPES = ["reddit", "stackexchange", "wikipedia", "arxiv", "news", "generic", "commoncrawl"]


@pytest.mark.parametrize("source_type", SOURCE_TYPES)
def test_paths_that_are_not_readable_files_are_config_errors_naming_them(tmp_path, source_type):
    # Given every kind of path that is not a readable file
    for kind, path in unreadable_paths(tmp_path / "bad").items():
        if source_type == "generic" and kind == "folder":
            continue  # a folder is the generic reader's documented datasets input: see the next test
        # When a source lists it
        config = {"output_dir": str(tmp_path / "out"), "sources": [{"type": source_type, "paths": [str(path)]}]}
        with pytest.raises(ValueError) as error:
            check_inputs(CurateConfig.model_validate(config))
        # Then the planner's input check fails, naming the source and the path (before any work starts)
        message = str(error.value)
        assert "sources.0.paths" in message and str(path) in message, (kind, message)


def test_a_glob_matching_a_folder_is_refused_by_name(tmp_path):
    # Given a glob that matches a file and a sub-folder
    (tmp_path / "dumps").mkdir()
    write(tmp_path / "dumps" / "a.jsonl", b'{"title": "t", "text": "x"}\n')
    (tmp_path / "dumps" / "older").mkdir()
    # When a source lists it, then the folder is named
    with pytest.raises(ValueError, match=r"older: is a folder, not a file"):
        check_inputs(CurateConfig.model_validate({"output_dir": str(tmp_path / "out"), "sources": [{"type": "news", "paths": [str(tmp_path / "dumps" / "*")]}]}))


def test_generic_folder_names_the_missing_datasets_extra(tmp_path, monkeypatch):
    # Given a folder saved with datasets' save_to_disk, and no datasets package
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    monkeypatch.setattr(generic.importlib.util, "find_spec", lambda name: None if name == "datasets" else object())
    # When a generic source lists it, then the error names the folder and the extra to install
    with pytest.raises(ValueError, match=r"saved: .*pip install 'e5kit\[hf\]'"):
        check_inputs(CurateConfig.model_validate({"output_dir": str(tmp_path / "out"), "sources": [{"type": "generic", "paths": [str(folder)]}]}))


@pytest.mark.parametrize(("layout", "message"), [("plain", "not a saved Hugging Face dataset"), ("dict", "several splits")])
def test_generic_folder_that_is_not_one_saved_dataset_is_refused(tmp_path, monkeypatch, layout, message):
    # Given datasets installed, and a folder that is not one saved Dataset
    folder = tmp_path / "folder"
    folder.mkdir()
    if layout == "dict":
        (folder / "dataset_dict.json").write_text("{}")
    monkeypatch.setattr(generic.importlib.util, "find_spec", lambda name: object())
    # When a generic source lists it, then it is refused by name
    with pytest.raises(ValueError, match=message):
        check_inputs(CurateConfig.model_validate({"output_dir": str(tmp_path / "out"), "sources": [{"type": "generic", "paths": [str(folder)]}]}))


def test_a_path_that_vanishes_after_the_check_is_a_located_skip(tmp_path):
    # Given a file that the config check saw, removed before the reader opens it
    path = write(tmp_path / "news.jsonl.gz", b'{"title": "t", "text": "x"}\n')
    path.unlink()
    # When read, then it is one skip naming the file, not a crash
    skips = SkipCounter()
    assert list(news.read([path], news.Options(), skips)) == []
    assert skips == {UNREADABLE: 1} and skips.files[UNREADABLE] == {str(path): 1}


def test_json_dump_of_the_report_locations_round_trips():
    # Given skips from two files
    skips = SkipCounter()
    for line in range(1, 9):
        skips.add(TRUNCATED if line % 2 else CORRUPT_JSON, f"f{line % 3}.gz", line)
    # When written as JSON and read back (as done markers are)
    again = SkipCounter.from_json(json.loads(json.dumps(dict(skips))), json.loads(json.dumps(skips.where())))
    # Then counts, per-file counts and examples survive
    assert again == skips and again.where() == skips.where()


# ------------------------------------------------------------------------------------ the curate stage
def test_curate_report_traces_every_drop_reason_to_files_and_lines(tmp_path):
    # Given three news files: two cut streams (gz, bz2), and a plain one with a broken line (3),
    # a passage too short for the length filter (4) and an exact copy of its first record (5)
    records = [{"title": f"Headline {i}", "text": f"Story {i} {PARAGRAPH}"} for i in range(300)]
    cut_gz = write(tmp_path / "a.jsonl.gz", _jsonl(records[:100]), "truncated")
    cut_bz2 = write(tmp_path / "b.jsonl.bz2", _jsonl(records[100:200]), "truncated")
    lines = json_lines(records[200:202]) + [b"{broken", json_lines([{"title": "Short", "text": "too short"}])[0], json_lines(records[200:201])[0]]
    plain = write(tmp_path / "c.jsonl", b"\n".join(lines) + b"\n")
    config = {"output_dir": str(tmp_path / "out"), "workers": 1, "filters": {"near_dedup": {"enabled": False}},
              "sources": [{"type": "news", "paths": [str(tmp_path / "*.jsonl*")]}]}
    # When curated
    report = curate(CurateConfig.model_validate(config))
    # Then every drop reason says how many drops each file had and where the first ones are
    where = report["sources"]["news"]["drop_where"]
    assert where["reader: truncated or corrupt compressed stream"]["files"] == {str(cut_gz): 1, str(cut_bz2): 1}
    assert [example["file"] for example in where["reader: truncated or corrupt compressed stream"]["examples"]] == [str(cut_gz), str(cut_bz2)]
    assert where["reader: corrupt JSON line"] == {"files": {str(plain): 1}, "examples": [{"file": str(plain), "line": 3}]}
    length_drop = next(reason for reason in where if reason.startswith("length"))
    assert where[length_drop]["examples"] == [{"file": str(plain), "line": 4}]
    duplicate = next(reason for reason in where if reason.startswith("exact_dedup"))
    assert {"file": str(plain), "line": 5} in where[duplicate]["examples"]
    # And the counts agree with the drop counts, and report.md shows the locations
    for reason, count in report["sources"]["news"]["dropped"].items():
        assert sum(where[reason]["files"].values()) == count
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"{plain}:3" in markdown and f"{cut_gz}: 1" in markdown
    assert report["reconciled"]


def test_curate_cli_reads_a_wikipedia_bz2_dump(tmp_path):
    # Given a MediaWiki dump compressed as Wikipedia ships it (pages-articles.xml.bz2), which crashed curate
    dump = write(tmp_path / "enwiki-latest-pages-articles.xml.bz2", _wiki_xml())
    # When curated from the command line
    result = CliRunner().invoke(app, ["curate", "--set", f"output_dir={tmp_path / 'out'}", "--workers", "1",
                                      "--set", f"sources=[{{type: wikipedia, paths: [{dump}]}}]"])
    # Then every page is read into a pair (the near-duplicate filter then drops look-alike pages)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sources"]["wikipedia"]["read"] == RECORDS // 4
    assert not [reason for reason in report["sources"]["wikipedia"]["dropped"] if reason.startswith("reader:")]


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling-link", "zip-archive"])
def test_curate_cli_refuses_an_unreadable_source_path_in_one_line(tmp_path, kind):
    # Given a source path that is not a readable file (a folder lost 300 records silently with exit 0)
    path = unreadable_paths(tmp_path / "bad")[kind]
    # When curated from the command line
    result = CliRunner().invoke(app, ["curate", "--set", f"output_dir={tmp_path / 'out'}",
                                      "--set", f"sources=[{{type: news, paths: ['{path}']}}]"])
    # Then exit 2 with one line naming the path, before any output is written
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1 and str(path) in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
