"""Users' own evaluation files (issue 18, item 9): every task reads its fields from columns named
otherwise through a column mapping (``--columns FIELD=COLUMN,...`` or ``columns:`` in a config), so a
SICK-style TSV runs as it is, and scores exactly as the same data under the default column names."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.evaluation.classification import evaluate_classification
from e5kit.evaluation.pair_classification import evaluate_pair_classification
from e5kit.evaluation.reranking import evaluate_reranking
from e5kit.evaluation.sts import evaluate_sts
from e5kit.io.files import InputFormatError

SICK_HEADER = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")
SICK_COLUMNS = "sentence1=sentence_A,sentence2=sentence_B,score=relatedness_score"


class HashModel:
    """A fake encoder: each text's vector is seeded by its text (the same text, the same vector)."""

    def encode(self, texts, role=None, batch_size=32, normalize=None, show_progress=None):
        return np.array([np.random.default_rng(zlib.crc32(text.encode())).normal(size=8) for text in texts], dtype=np.float32).reshape(-1, 8)


def write_tsv(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows), encoding="utf-8")
    return path


def sick_rows(count: int = 12):
    """SICK-like rows: pair id, two sentences, a 1-5 relatedness score, an entailment label."""
    return [(i, f"the cat {i} sat", f"a dog {i % 4} ran", 1 + (i % 9) / 2, "NEUTRAL") for i in range(count)]


def test_a_sick_style_tsv_scores_as_the_same_data_with_sts_b_columns(tmp_path):
    # Given the same pairs as a SICK-style TSV and as an STS-B-style TSV
    rows = sick_rows()
    sick = write_tsv(tmp_path / "sick.tsv", SICK_HEADER, rows)
    stsb = write_tsv(tmp_path / "stsb.tsv", ("sentence1", "sentence2", "score"), [(a, b, s) for _, a, b, s, _ in rows])
    # When the SICK file is read through a column mapping
    mapped = evaluate_sts(HashModel(), sick, columns={"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"})
    # Then every metric equals the STS-B-named file's
    assert mapped.metrics == evaluate_sts(HashModel(), stsb).metrics and mapped.details == {"pairs": 12}


def test_without_a_mapping_the_error_names_the_columns_and_the_option(tmp_path):
    # Given a SICK-style file read with the default column names
    sick = write_tsv(tmp_path / "sick.tsv", SICK_HEADER, sick_rows())
    # When evaluated, Then the error names the missing fields, the file's columns, and --columns
    with pytest.raises(InputFormatError, match=r"sick.tsv:1: header lacks column\(s\) sentence1, sentence2, score \(has: pair_ID, sentence_A.*--columns FIELD=COLUMN"):
        evaluate_sts(HashModel(), sick)


def test_a_bad_score_is_named_by_its_own_column(tmp_path):
    # Given a SICK-style file with a score that is not a number on line 3
    rows = sick_rows(4)
    rows[1] = (1, "a", "b", "high", "NEUTRAL")
    sick = write_tsv(tmp_path / "sick.tsv", SICK_HEADER, rows)
    # Then the error names file, line and the file's column
    with pytest.raises(InputFormatError, match=r"sick.tsv:3: relatedness_score 'high' is not a number"):
        evaluate_sts(HashModel(), sick, columns={"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"})


def test_sts_cli_takes_columns_and_records_them(tmp_path, tiny_bert_dir):
    # Given a SICK-style test split
    write_tsv(tmp_path / "test.tsv", SICK_HEADER, sick_rows())
    # When evaluated from the command line with --columns
    outcome = CliRunner().invoke(app, ["eval", "sts", "-m", str(tiny_bert_dir), "-d", str(tmp_path), "--columns", SICK_COLUMNS,
                                       "--results-dir", str(tmp_path / "r"), "--no-cache"])
    # Then it runs, and the result file records the mapping among the task's settings
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    assert result["details"]["settings"]["columns"] == {"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"}
    assert result["details"]["pairs"] == 12


def test_the_mapping_in_a_yaml_config(tmp_path, tiny_bert_dir):
    # Given a config that maps SICK's columns
    write_tsv(tmp_path / "test.tsv", SICK_HEADER, sick_rows())
    config = tmp_path / "sick.yaml"
    config.write_text(f"models: [{tiny_bert_dir}]\ndata: {tmp_path}\ncache: false\nresults_dir: {tmp_path / 'r'}\n"
                      "columns: {sentence1: sentence_A, sentence2: sentence_B, score: relatedness_score}\n")
    # When evaluated with it, Then it runs
    outcome = CliRunner().invoke(app, ["eval", "sts", "--config", str(config)])
    assert outcome.exit_code == 0, outcome.output
    assert "cosine_spearman" in outcome.output


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ("sentence1=sentence_A,premise", "--columns 'sentence1=sentence_A,premise': expected FIELD=COLUMN pairs separated by commas, got 'premise'"),
        ("sentence1=a,sentence1=b", "field 'sentence1' is given twice"),
        ("sentence=sentence_A", "columns: Value error, the column mapping names unknown field(s) sentence; this task reads sentence1, sentence2, score"),
        ("sentence1=x,sentence2=x", "reads more than one of the fields sentence1, sentence2, score from column(s) x"),
    ],
)
def test_a_bad_mapping_is_a_one_line_error_before_any_model_loads(tmp_path, columns, message):
    # Given a SICK-style file and a malformed or unknown mapping
    write_tsv(tmp_path / "test.tsv", SICK_HEADER, sick_rows())
    # When evaluated with a model that does not exist (loading it would be a different error)
    outcome = CliRunner().invoke(app, ["eval", "sts", "-m", "no-such-model-anywhere", "-d", str(tmp_path), "--columns", columns])
    # Then one line names the problem
    assert outcome.exit_code == 2 and outcome.output.count("\n") == 1 and message in outcome.output, outcome.output


def test_retrieval_takes_no_mapping(tmp_path):
    # BEIR folders have fixed names: a columns field in a retrieval config is refused by name
    outcome = CliRunner().invoke(app, ["eval", "retrieval", "-d", str(tmp_path), "--set", "columns={text: body}"])
    assert outcome.exit_code == 2 and "columns: Extra inputs are not permitted" in outcome.output


def test_pair_classification_classification_and_reranking_read_mapped_fields(tmp_path):
    # Given a pair file, a labelled train/test folder and a reranking file, each with its own names
    pairs = write_tsv(tmp_path / "pairs.tsv", ("s1", "s2", "is_paraphrase"), [(f"text {i}", f"text {i % 3}", i % 2) for i in range(10)])
    canonical_pairs = write_tsv(tmp_path / "canonical.tsv", ("sentence1", "sentence2", "label"), [(f"text {i}", f"text {i % 3}", i % 2) for i in range(10)])
    labelled = tmp_path / "intents"
    labelled.mkdir()
    for split in ("train", "test"):
        write_tsv(labelled / f"{split}.tsv", ("utterance", "intent"), [(f"{split} utterance {i}", f"intent{i % 3}") for i in range(12)])
    reranking = tmp_path / "rerank.jsonl"
    reranking.write_text("".join(json.dumps({"q": f"query {i}", "pos": [f"good {i}"], "neg": [f"bad {i}", f"worse {i}"]}) + "\n" for i in range(5)))
    model = HashModel()
    # When each task reads them through its mapping
    pair_outcome = evaluate_pair_classification(model, pairs, columns={"sentence1": "s1", "sentence2": "s2", "label": "is_paraphrase"})
    classified = evaluate_classification(model, labelled, columns={"text": "utterance", "label": "intent"}, samples_per_label=2, experiments=2)
    reranked = evaluate_reranking(model, reranking, columns={"query": "q", "positive": "pos", "negative": "neg"})
    # Then each reads every record: the pair scores equal those of the default-named file
    assert pair_outcome.metrics == evaluate_pair_classification(model, canonical_pairs).metrics
    assert classified.details["train_texts"] == 12 and classified.details["labels"] == 3
    assert reranked.details["queries"] == 5 and reranked.details["candidates"] == 15
    # And a reranking record without the mapped key is named by that key
    with pytest.raises(InputFormatError, match=r"rerank.jsonl:1: 'query' is missing"):
        evaluate_reranking(model, reranking, columns={"positive": "pos", "negative": "neg"})
