"""Teacher scoring: batched scores equal pair-by-pair scores; a killed run resumes to the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from e5kit.data import teacher as teacher_module
from e5kit.data.teacher import BiEncoderTeacher, CrossEncoderTeacher, load_teacher, partial_path, score_file
from e5kit.io.files import InputFormatError

#: Tiny-model steps here run on one intra-op thread, as in tests/finetune (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_torch_thread")

RECORDS = [
    {"query": f"what is cell {i}", "pos": [f"cell protein {i}"] * (1 + i % 2), "neg": [f"cat dog {j}" for j in range(i % 4)], "query_id": str(i)}
    for i in range(11)
]


def naive_cross_scores(folder, record):
    """One pair per forward pass, no padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [model(**tokenizer(record["query"], text, return_tensors="pt")).logits[0, 0].item() for text in record["pos"] + record["neg"]]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cross_encoder_scores_match_unbatched_scoring(tmp_path, tiny_cross_encoder_dir, write_jsonl):
    # Given mined records and a tiny random cross-encoder (picked automatically from its architecture)
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS + [{"query": "no positive", "pos": [], "neg": ["x"]}])
    teacher = load_teacher(tiny_cross_encoder_dir, batch_size=4, device="cpu")
    assert isinstance(teacher, CrossEncoderTeacher)
    # When scoring the file
    report = score_file(teacher, source, tmp_path / "scored.jsonl", show_progress=False)
    scored = read(tmp_path / "scored.jsonl")
    # Then every usable record gets one score per candidate, equal to pair-by-pair scoring, other fields kept
    assert report["scored"] == 11 and report["skipped"]["query without positives"]["records"] == [f"{source}:12"]
    for record, original in zip(scored, RECORDS):
        assert record["query_id"] == original["query_id"]
        assert len(record["pos_scores"]) == len(original["pos"]) and len(record["neg_scores"]) == len(original["neg"])
        assert np.allclose(record["pos_scores"] + record["neg_scores"], naive_cross_scores(tiny_cross_encoder_dir, original), atol=1e-5)


def test_killed_run_resumes_to_the_same_output(tmp_path, tiny_cross_encoder_dir, write_jsonl, monkeypatch):
    # Given a full run's output, and a run killed after its first block and halfway through writing a line
    monkeypatch.setattr(teacher_module, "BLOCK_RECORDS", 4)
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    teacher = load_teacher(tiny_cross_encoder_dir, "cross-encoder", batch_size=3, device="cpu")
    score_file(teacher, source, tmp_path / "full.jsonl", show_progress=False)
    full_lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "scored.jsonl"
    partial_path(out).write_text("".join(full_lines[:4]) + full_lines[4][:20])
    # When resuming
    report = score_file(teacher, source, out, show_progress=False)
    # Then only the rest is scored and the output equals the uninterrupted run's
    assert report["already_done"] == 4 and report["scored"] == 7
    assert read(out) == read(tmp_path / "full.jsonl") and not partial_path(out).exists()


def test_resume_onto_another_inputs_output_is_refused(tmp_path, tiny_cross_encoder_dir, write_jsonl):
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    write_jsonl(tmp_path / "scored.jsonl", [{"query": "something else", "pos": ["p"], "neg": [], "pos_scores": [1.0], "neg_scores": []}])
    teacher = load_teacher(tiny_cross_encoder_dir, device="cpu")
    with pytest.raises(InputFormatError, match="scored.jsonl:1: holds query 'something else'"):
        score_file(teacher, source, tmp_path / "scored.jsonl", show_progress=False)


@pytest.mark.parametrize("model", ["tiny_bert_dir", "tiny_unnormalized_dir"])
def test_bi_encoder_teacher_scores_are_cosines(tmp_path, request, model):
    # Given a plain checkpoint (no classification head): auto picks the bi-encoder teacher; with or without a Normalize module
    teacher = load_teacher(request.getfixturevalue(model), device="cpu")
    assert isinstance(teacher, BiEncoderTeacher)
    # When scoring pairs
    queries, passages = ["cell protein", "cat dog", "cell protein"], ["gene data", "sun moon", "cancer"]
    scores = teacher.score_pairs(queries, passages)
    # Then each equals the cosine of the separately embedded raw query and passage vectors
    encoder = teacher.encoder

    def raw(text, role):
        return encoder.encode([text], role=role, normalize=False)[0]

    expected = [float(raw(q, "query") @ raw(p, "passage") / (np.linalg.norm(raw(q, "query")) * np.linalg.norm(raw(p, "passage")))) for q, p in zip(queries, passages)]
    assert np.allclose(scores, expected, atol=1e-5)
    # And a teacher asked for dot products scores raw dot products
    dot = load_teacher(request.getfixturevalue(model), device="cpu", similarity_fn_name="dot")
    assert np.allclose(dot.score_pairs(queries, passages), [float(raw(q, "query") @ raw(p, "passage")) for q, p in zip(queries, passages)], rtol=1e-4)


# ---------------------------------------------------------------- issue 12: empty passages
def beir_empty_records():
    """FlagEmbedding records from the beir_empty case (tests/evaluation/fixtures), the empty document 7915
    among q1's negatives as a file from another miner could have it."""
    folder = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures" / "beir_empty"
    corpus = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in map(json.loads, (folder / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    assert corpus["7915"] == ""
    return [
        {"query": queries["q1"], "pos": [corpus["d1"]], "neg": [corpus["d2"], corpus["7915"], corpus["d3"]], "neg_ids": ["d2", "7915", "d3"]},
        {"query": queries["q2"], "pos": [corpus["d2"]], "neg": [corpus["d1"]], "neg_ids": ["d1"]},
        {"query": queries["q2"], "pos": ["\u200b"], "neg": [corpus["d1"]]},  # no visible positive: unusable
    ]


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_beir_empty_teacher_scores_the_empty_passage_zero_without_the_model(tmp_path, write_jsonl, tiny_cross_encoder_dir, tiny_bert_dir, kind):
    # Given records whose negatives include the empty document, and a teacher that refuses empty text
    source = write_jsonl(tmp_path / "mined.jsonl", beir_empty_records())
    teacher = load_teacher(tiny_cross_encoder_dir if kind == "cross-encoder" else tiny_bert_dir, kind, device="cpu")
    seen = []
    score_pairs = teacher.score_pairs

    def refusing(queries, passages):
        assert all(text.strip() for text in passages), passages
        seen.extend(passages)
        return score_pairs(queries, passages)

    teacher.score_pairs = refusing
    # When the file is scored
    report = score_file(teacher, source, tmp_path / "scored.jsonl", show_progress=False)
    scored = read(tmp_path / "scored.jsonl")
    # Then it succeeds, the empty passage is kept in its record with score 0 and counted, never sent
    assert report["empty_passages"] == 1 and report["scored"] == 2 and report["pairs_scored"] == 5 == len(seen)
    assert report["skipped"]["query without positives"]["count"] == 1
    assert scored[0]["neg"][1] == "" and scored[0]["neg_scores"][1] == 0.0
    # And every other score equals the teacher's score of that pair alone
    alone = score_pairs([scored[0]["query"]] * 3, scored[0]["pos"] + [scored[0]["neg"][0], scored[0]["neg"][2]])
    assert np.allclose([*scored[0]["pos_scores"], scored[0]["neg_scores"][0], scored[0]["neg_scores"][2]], alone, atol=1e-5)


def test_bi_encoder_teacher_gives_an_empty_passage_cosine_zero(tiny_bert_dir):
    teacher = load_teacher(tiny_bert_dir, "bi-encoder", device="cpu")
    scores = teacher.score_pairs(["cell protein", "cell protein"], ["gene data", " \u2060"])
    assert scores[1] == 0.0 and scores[0] != 0.0


def test_resume_onto_a_file_that_is_not_scored_records_is_refused_and_left_as_it_was(tmp_path, tiny_cross_encoder_dir, write_jsonl):
    # Given an output path that holds something else (fewer lines than a block, which a resume would cut)
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    other = tmp_path / "notes.jsonl"
    other.write_text('{"note": "mine"}\n')
    teacher = load_teacher(tiny_cross_encoder_dir, device="cpu")
    # When scoring into it, then the line is named and the file is untouched
    with pytest.raises(InputFormatError, match="notes.jsonl:1: not a scored record"):
        score_file(teacher, source, other, show_progress=False)
    assert other.read_text() == '{"note": "mine"}\n'
