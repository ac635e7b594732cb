"""e5kit.io.tables: the one JSONL/TSV/CSV column reader, strict (one-line errors naming file:line) or
counting each malformed row with its reason and location."""

from __future__ import annotations

import gzip
import re

import pytest
from corrupt_corpus import write

from e5kit.io.files import TRUNCATED, InputFormatError
from e5kit.io.tables import CORRUPT_JSON, NOT_AN_OBJECT, iter_records, read_columns, table_format


class Skips:
    """A counted-mode sink that keeps every skip as (reason, file, line)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int | None]] = []

    def add(self, reason, file, line=None) -> None:
        self.seen.append((reason, str(file), line))


def test_format_comes_from_the_name_without_its_compression():
    # Given names with and without compression suffixes; when their format is asked, then compression is left out
    assert [table_format(name) for name in ("a.JSONL.gz", "b.tsv.zst", "c.csv", "d.ndjson", "e.txt")] == ["jsonl", "tsv", "csv", "jsonl", None]
    assert table_format("e.txt", "tsv") == "tsv"


def test_tsv_header_names_the_columns_and_gzip_is_read(tmp_path):
    # Given a gzip-compressed TSV with a header row and a blank line
    path = tmp_path / "sts.tsv.gz"
    path.write_bytes(gzip.compress(b"sentence1\tsentence2\tscore\na \"quoted\" one\tb\t1.5\n\nc\td\t2\n"))
    # When its records are read
    records = list(iter_records(path))
    # Then each row maps the header to its cells (a quote is text in a TSV), located at its line
    assert records == [
        (2, {"sentence1": 'a "quoted" one', "sentence2": "b", "score": "1.5"}),
        (4, {"sentence1": "c", "sentence2": "d", "score": "2"}),
    ]


def test_headerless_tsv_takes_the_callers_names(tmp_path):
    # Given a qrels-style file without a header
    path = tmp_path / "triples.tsv"
    path.write_text("q1\td1\t1\nq2\td2\t0\n")
    # When read with column names, then every row is a record under those names
    assert [row for _, row in iter_records(path, names=("query-id", "corpus-id", "score"))] == [
        {"query-id": "q1", "corpus-id": "d1", "score": "1"},
        {"query-id": "q2", "corpus-id": "d2", "score": "0"},
    ]


def test_csv_cells_may_be_quoted_across_lines(tmp_path):
    # Given a CSV whose quoted cell holds a comma and a line break
    path = tmp_path / "pairs.csv"
    path.write_text('query,passage\n"what, exactly","line one\nline two"\nq2,p2\n')
    # When read, then the quoted cell is one value, and the record is located at its last line
    assert list(iter_records(path)) == [(3, {"query": "what, exactly", "passage": "line one\nline two"}), (4, {"query": "q2", "passage": "p2"})]


def test_column_names_are_mapped_before_the_check(tmp_path):
    # Given an SNLI-style header under other names, in capitals
    path = tmp_path / "nli.tsv"
    path.write_text("Sentence1\tSentence2\tGold_Label\na\tb\tentailment\n")
    aliases = {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}
    # When read with a column-name mapping, then the record has the mapped names
    rows = iter_records(path, columns=("premise", "hypothesis", "label"), column_name=lambda name: aliases[name.lower()])
    assert [row for _, row in rows] == [{"premise": "a", "hypothesis": "b", "label": "entailment"}]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("a.jsonl", '{"text": "ok"}\n{"text": \n', {}, "a.jsonl:2: invalid JSON"),
        ("a.jsonl", '{"text": "ok"}\n[1, 2]\n', {}, "a.jsonl:2: expected a JSON object, got list"),
        ("a.jsonl", '{"text": "ok"}\n{"text": null}\n', {"columns": ("text",), "missing_hint": " (map it)"}, r"a.jsonl:2: missing field 'text' \(map it\)"),
        ("a.tsv", "x\ty\n1\t2\n3\n", {}, "a.tsv:3: expected 2 tab-separated columns, got 1"),
        ("a.tsv", "x\ty\n1\t2\n", {"columns": ("x", "score")}, r"a.tsv:1: header lacks column\(s\) score \(has: x, y\)"),
        ("a.csv", "x,y\n1,2,3\n", {}, "a.csv:2: expected 2 comma-separated columns, got 3"),
        # (an unclosed quote reads on until a cell passes the csv module's field size limit)
        ("a.csv", 'x,y\n1,"open\n' + "z" * 140_000 + "\n", {}, r"a.csv:3: malformed CSV \(field larger than field limit"),
    ],
)
def test_strict_mode_refuses_the_first_malformed_row_in_one_line(tmp_path, name, content, kwargs, message):
    # Given a table with a malformed row
    path = tmp_path / name
    path.write_text(content)
    # When read strictly
    with pytest.raises(InputFormatError) as error:
        list(iter_records(path, **kwargs))
    # Then the error is one line naming the file and the row's line
    assert "\n" not in str(error.value)
    assert re.match(rf"^{tmp_path}/{message}", str(error.value))


def test_counted_mode_passes_over_each_malformed_row_with_its_reason_and_location(tmp_path):
    # Given JSONL with invalid UTF-8, broken JSON, a non-object and a record missing a column between good ones
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "caf\xe9"}\n{broken\n[1]\n{"title": "no text"}\n{"text": "two"}\n')
    skips = Skips()
    # When read counting skips
    records = list(iter_records(path, columns=("text",), skips=skips))
    # Then the good rows come out, and each bad one is one skip at its file and line
    assert [(line, record["text"]) for line, record in records] == [(1, "one"), (6, "two")]
    assert skips.seen == [
        ("invalid UTF-8", str(path), 2),
        (CORRUPT_JSON, str(path), 3),
        (NOT_AN_OBJECT, str(path), 4),
        ("missing field 'text'", str(path), 5),
    ]


def test_counted_mode_counts_a_short_row_and_a_cut_stream_once(tmp_path):
    # Given a gzip TSV cut short, with a short row near its start
    rows = b"x\ty\n1\n" + b"".join(b"%d\tcell %d\n" % (i, i) for i in range(20000))
    path = write(tmp_path / "big.tsv.gz", rows, "truncated")
    skips = Skips()
    # When read counting skips
    records = list(iter_records(path, skips=skips))
    # Then the short row is a located skip, the rows before the cut all come out, and the cut is one skip after them
    assert skips.seen[0] == ("expected 2 tab-separated columns, got 1", str(path), 2)
    assert [reason for reason, _, _ in skips.seen[1:]] == [TRUNCATED]
    assert skips.seen[1][2] == records[-1][0] + 1
    assert [record["x"] for _, record in records] == [str(i) for i in range(len(records))]


def test_read_columns_gives_lists_and_refuses_empty_values(tmp_path):
    # Given a TSV with an empty score and a JSONL file
    tsv, jsonl = tmp_path / "a.tsv", tmp_path / "b.jsonl"
    tsv.write_text("text\tscore\nhello\t \n")
    jsonl.write_text('{"text": "hi", "score": 1}\n')
    # When their columns are read, then the lists follow the rows, and an empty value is refused unless allowed
    assert read_columns(jsonl, ("text", "score")) == {"text": ["hi"], "score": [1], "_line": [1]}
    assert read_columns(tsv, ("text", "score"), allow_empty=("score",)) == {"text": ["hello"], "score": [" "], "_line": [2]}
    with pytest.raises(InputFormatError, match=r"a.tsv:2: field 'score' has no visible text"):
        read_columns(tsv, ("text", "score"))
