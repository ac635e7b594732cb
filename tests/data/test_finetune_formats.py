"""Fine-tuning input formats: FlagEmbedding JSONL, BEIR qrels, MS MARCO triples, NLI; bad records counted and named."""

from __future__ import annotations

import pytest

from e5kit.data.finetune_formats import RecordIssues, read_examples
from e5kit.io.files import InputFormatError


def test_flag_jsonl_keeps_good_records_and_names_bad_ones(tmp_path, write_jsonl):
    # Given FlagEmbedding records: good, without positives, with scores of the wrong length, with one score list only
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"query": "q1", "pos": ["p1"], "neg": ["n1", "n2"], "pos_scores": [3.0], "neg_scores": [1.0, 0.5], "query_id": "a"},
            {"query": "q2", "pos": [], "neg": ["n1"]},
            {"query": "q3", "pos": ["p3"], "neg": ["n1", "n2"], "pos_scores": [3.0], "neg_scores": [1.0]},
            {"query": "q4", "pos": "p4", "neg": ["n4"], "pos_scores": [1.0]},
            {"query": "q5", "pos": ["p5"]},
        ],
    )
    issues = RecordIssues()
    # When read
    examples = list(read_examples("flag", path, issues))
    # Then the good records come through (a bare-string positive and missing negatives are accepted)
    assert [e.query for e in examples] == ["q1", "q5"]
    assert examples[0].has_teacher_scores and examples[0].negative_scores == [1.0, 0.5] and examples[0].query_id == "a"
    assert not examples[1].has_teacher_scores and examples[1].negatives == []
    # And each bad record is counted under its reason with its line named
    assert issues.summary() == {
        "query without positives": {"count": 1, "records": [f"{path}:2"]},
        "teacher scores of the wrong length": {"count": 1, "records": [f"{path}:3"]},
        "pos_scores and neg_scores must be given together": {"count": 1, "records": [f"{path}:4"]},
    }
    assert f"{path}:3" in issues.describe()


@pytest.mark.parametrize("score", [float("inf"), float("-inf"), float("nan"), 1e400])
def test_teacher_scores_out_of_range_are_counted_records(tmp_path, write_jsonl, score):
    # Given a scored record whose negative score is Infinity, -Infinity, NaN or 1e400 (json: Infinity), and a good one
    path = write_jsonl(
        tmp_path / "scored.jsonl",
        [
            {"query": "q1", "pos": ["p1"], "neg": ["n1"], "pos_scores": [3.0], "neg_scores": [score]},
            {"query": "q2", "pos": ["p2"], "neg": ["n2"], "pos_scores": [3.0], "neg_scores": [1.0]},
        ],
    )
    issues = RecordIssues()
    # When read, then the bad record is a counted issue naming its line (its loss would be NaN), the good one trains
    assert [example.query for example in read_examples("flag", path, issues)] == ["q2"]
    assert issues.summary() == {"a teacher score is not a finite number": {"count": 1, "records": [f"{path}:1"]}}


def test_teacher_scored_empty_negatives_are_left_out_and_the_group_kept(tmp_path, write_jsonl):
    # Given a score-teacher record whose mined negatives include an empty passage (kept there with score 0)
    path = write_jsonl(
        tmp_path / "scored.jsonl",
        [{"query": "q1", "pos": ["p1"], "neg": ["n1", "", "\u200b", "n2"], "pos_scores": [3.0], "neg_scores": [1.0, 0.0, 0.0, 0.5], "neg_ids": ["a", "e", "z", "b"]}],
    )
    issues = RecordIssues()
    # When read for fine-tuning
    (example,) = read_examples("flag", path, issues)
    # Then the empty negatives go with their scores and ids, the group stays, and the drop is counted
    assert (example.negatives, example.negative_scores, example.negative_ids) == (["n1", "n2"], [1.0, 0.5], ["a", "b"])
    assert issues.summary() == {"negative without visible text left out (the group is kept)": {"count": 1, "records": [f"{path}:1"]}}


def test_beir_reader_gives_one_example_per_judged_query_with_document_texts(beir_dir):
    folder = beir_dir
    qrels = folder / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q-sky-0\tghost\t1\n")
    issues = RecordIssues()
    examples = list(read_examples("beir", folder, issues, split="train"))
    assert len(examples) == 12
    first = examples[0]
    assert first.query == "what is cell cell" and first.positive_ids == ["cell-0", "cell-2"]
    assert first.positives[0] == "cell cell cells protein gene data 0"
    assert issues.summary()["document id not in the corpus"]["records"] == [f"{qrels} query 'q-sky-0' document 'ghost'"]


def test_msmarco_triples_group_by_query(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("what is a\tA is a letter\tB is a letter\nwhat is a\tA is a letter\tC is too\nwhat is b\tB is\tA is\nbroken line\n")
    issues = RecordIssues()
    examples = list(read_examples("msmarco", path, issues))
    assert [(e.query, e.positives, e.negatives) for e in examples] == [
        ("what is a", ["A is a letter"], ["B is a letter", "C is too"]),
        ("what is b", ["B is"], ["A is"]),
    ]
    assert issues.summary() == {"expected 3 tab-separated columns, got 1": {"count": 1, "records": [f"{path}:4"]}}


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_nli_entailment_is_positive_contradiction_is_hard_negative(tmp_path, write_jsonl, suffix):
    rows = [
        ("A man plays .", "A person plays .", "entailment"),
        ("A man plays .", "Nobody plays .", "contradiction"),
        ("A man plays .", "He is tall .", "neutral"),
        ("Two dogs run .", "Cats sleep .", "contradiction"),
        ("Two dogs run .", "Animals move .", "0"),
        ("Kids sing .", "Kids are silent .", "2"),
        ("Kids sing .", "x", "maybe"),
    ]
    path = tmp_path / f"nli{suffix}"
    if suffix == ".tsv":
        path.write_text("premise\thypothesis\tlabel\n" + "".join("\t".join(row) + "\n" for row in rows))
    else:
        write_jsonl(path, [{"sentence1": p, "sentence2": h, "gold_label": label} for p, h, label in rows])
    issues = RecordIssues()
    examples = list(read_examples("nli", path, issues))
    assert [(e.query, e.positives, e.negatives) for e in examples] == [
        ("A man plays .", ["A person plays ."], ["Nobody plays ."]),
        ("Two dogs run .", ["Animals move ."], ["Cats sleep ."]),
    ]
    counts = {reason: item["count"] for reason, item in issues.summary().items()}
    assert counts == {"neutral pair (not used)": 1, "query without positives": 1, "unknown NLI label 'maybe'": 1}


def test_nli_tsv_without_the_needed_columns_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "nli.tsv"
    path.write_text("a\tb\nx\ty\n")
    with pytest.raises(InputFormatError, match=r"nli.tsv:1: header lacks column\(s\) premise, hypothesis, label \(has: a, b\) \(NLI reads"):
        list(read_examples("nli", path, RecordIssues()))


@pytest.mark.shared
def test_shared_samples_read_cleanly(shared_dir):
    # Given the FlagEmbedding MS MARCO / NQ samples and SNLI dev in ../shared
    finetune = shared_dir / "data" / "finetune"
    issues = RecordIssues()
    msmarco = list(read_examples("flag", finetune / "msmarco" / "flagembedding_msmarco_hardneg_examples.jsonl.gz", issues))
    nq = list(read_examples("flag", finetune / "nq" / "flagembedding_nq_hardneg_examples.jsonl.gz", issues))
    snli = list(read_examples("nli", finetune / "snli" / "dev.tsv.gz", issues))
    # Then the samples' documented shapes come out, and SNLI only skips its neutral pairs
    assert len(msmarco) == len(nq) == 10 and all(len(e.negatives) == 25 for e in msmarco)
    assert 3000 < len(snli) <= 3400 and all(e.positives for e in snli)
    assert set(issues.counts) <= {"neutral pair (not used)", "query without positives"}
