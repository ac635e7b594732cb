"""Teacher scoring: batched scores equal pair-by-pair scores; a killed run resumes to the same file; a
bi-encoder teacher's stores give the in-memory scores, resume after a kill, and the same file under
torchrun and Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from store_runs import check_engines_write_the_local_file

from e5kit.data import teacher as teacher_module
from e5kit.data.teacher import BiEncoderTeacher, CrossEncoderTeacher, load_teacher, partial_path, score_file, work_folder
from e5kit.io.files import InputFormatError
from e5kit.retrieval.engines import StoreEmbedding

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
    write_jsonl(partial_path(tmp_path / "scored.jsonl"), [{"query": "something else", "pos": ["p"], "neg": [], "pos_scores": [1.0], "neg_scores": []}])
    teacher = load_teacher(tiny_cross_encoder_dir, device="cpu")
    with pytest.raises(InputFormatError, match="scored.jsonl.partial:1: holds query 'something else'"):
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
    if kind == "cross-encoder":

        def refusing(queries, passages):
            assert all(text.strip() for text in passages), passages
            seen.extend(passages)
            return score_pairs(queries, passages)

        teacher.score_pairs = refusing
    else:  # it embeds through stores: its encoder is what must never see the empty passage
        encode = teacher.encoder.encode

        def refusing(texts, role=None, **options):
            assert all(text.strip() for text in texts), texts
            seen.extend(texts if role == "passage" else [])
            return encode(texts, role=role, **options)

        teacher.encoder.encode = refusing
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
    # Given a partial file that holds something else (fewer lines than a block, which a resume would cut)
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    other = partial_path(tmp_path / "notes.jsonl")
    other.write_text('{"note": "mine"}\n')
    teacher = load_teacher(tiny_cross_encoder_dir, device="cpu")
    # When resuming into it, then the line is named and the file is untouched
    with pytest.raises(InputFormatError, match="notes.jsonl.partial:1: not a scored record"):
        score_file(teacher, source, tmp_path / "notes.jsonl", show_progress=False)
    assert other.read_text() == '{"note": "mine"}\n'


# ---------------------------------------------------------------- issue 16: a bi-encoder teacher through embedding stores
def test_bi_encoder_scores_through_stores_equal_the_in_memory_scores(tmp_path, tiny_bert_dir, write_jsonl):
    # Given 11 records (31 pairs) and a bi-encoder teacher
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    teacher = load_teacher(tiny_bert_dir, "bi-encoder", batch_size=4, device="cpu")
    # When the file is scored with the texts in one embedding block, and in blocks of 5
    score_file(teacher, source, tmp_path / "one.jsonl", show_progress=False)
    report = score_file(teacher, source, tmp_path / "blocks.jsonl", show_progress=False, embedding=StoreEmbedding(block_rows=5))
    # Then both files are the same bytes, the stores are gone, and each record's scores are its pairs' in-memory scores
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "blocks.jsonl").read_bytes()
    assert report["scored"] == 11 and report["pairs_scored"] == 31 and not work_folder(tmp_path / "blocks.jsonl").exists()
    for record in read(tmp_path / "blocks.jsonl"):
        passages = record["pos"] + record["neg"]
        in_memory = teacher.score_pairs([record["query"]] * len(passages), passages)
        np.testing.assert_allclose(record["pos_scores"] + record["neg_scores"], in_memory, atol=1e-6)


def test_a_cross_encoder_refuses_ray(tmp_path, tiny_cross_encoder_dir, write_jsonl):
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    with pytest.raises(ValueError, match="engine ray: a cross-encoder scores each pair jointly"):
        score_file(load_teacher(tiny_cross_encoder_dir, device="cpu"), source, tmp_path / "scored.jsonl", show_progress=False, embedding=StoreEmbedding(engine="ray"))


class CountsEncodes:
    """The teacher's encoder, counting ``encode`` calls and stopping the run (as kill -9 would) at call ``dies_at``."""

    def __init__(self, teacher, dies_at: int | None = None) -> None:
        self.calls, self.dies_at, self.encode = 0, dies_at, teacher.encoder.encode
        teacher.encoder.encode = self

    def __call__(self, *args, **options):
        self.calls += 1
        if self.calls == self.dies_at:
            raise KeyboardInterrupt
        return self.encode(*args, **options)


def test_a_bi_encoder_run_killed_while_embedding_or_scoring_resumes_to_the_same_bytes(tmp_path, tiny_bert_dir, write_jsonl, monkeypatch):
    # Given the uninterrupted output of 11 records in blocks of 4, the texts in embedding blocks of 5
    # (queries first: 3 blocks, then passages: 7 blocks)
    monkeypatch.setattr(teacher_module, "BLOCK_RECORDS", 4)
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    teacher = load_teacher(tiny_bert_dir, "bi-encoder", batch_size=3, device="cpu")
    score_file(teacher, source, tmp_path / "full.jsonl", show_progress=False, embedding=StoreEmbedding(block_rows=5))
    out = tmp_path / "scored.jsonl"
    # When a run dies embedding the second passage block
    CountsEncodes(teacher, dies_at=5)
    with pytest.raises(KeyboardInterrupt):
        score_file(teacher, source, out, show_progress=False, embedding=StoreEmbedding(block_rows=5))
    # And the rerun dies scoring its second block of records
    next_block, blocks = teacher_module._StoredScores.next_block, []

    def dies_at_the_second_block(self, pairs_per_record):
        blocks.append(pairs_per_record)
        if len(blocks) == 2:
            raise KeyboardInterrupt
        return next_block(self, pairs_per_record)

    monkeypatch.setattr(teacher_module._StoredScores, "next_block", dies_at_the_second_block)
    counted = CountsEncodes(teacher)
    with pytest.raises(KeyboardInterrupt):
        score_file(teacher, source, out, show_progress=False, embedding=StoreEmbedding(block_rows=5))
    monkeypatch.setattr(teacher_module._StoredScores, "next_block", next_block)
    # Then the rerun embedded only the 6 missing passage blocks
    assert counted.calls == 6
    # And a third run embeds nothing, keeps the written block and ends with the uninterrupted run's bytes
    counted = CountsEncodes(teacher)
    report = score_file(teacher, source, out, show_progress=False, embedding=StoreEmbedding(block_rows=5))
    assert counted.calls == 0 and report["already_done"] == 4 and report["scored"] == 7
    assert out.read_bytes() == (tmp_path / "full.jsonl").read_bytes()


def test_bi_encoder_scoring_under_torchrun_and_ray_equals_one_process(tmp_path, tiny_bert_dir, write_jsonl):
    # Given the file one process scores, texts in embedding blocks of 5 so there are blocks to share out
    source = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    argv = ["score-teacher", "--teacher", str(tiny_bert_dir), "--in", str(source), "--kind", "bi-encoder", "--device", "cpu", "--block-rows", "5"]
    # When it runs in one process, as two gloo ranks under torchrun, and on a local Ray of two actors,
    # Then the three files are the same bytes and the summary is printed once
    check_engines_write_the_local_file(argv, tmp_path)


TORCHRUN_SCORER = """
import os, sys
import torch.distributed as dist
from e5kit.data.teacher import load_teacher, score_file
from e5kit.retrieval.engines import StoreEmbedding
model, source, out, mode = sys.argv[1:5]
teacher = load_teacher(model, device="cpu", batch_size=16)
if os.environ["RANK"] == "1" and mode == "dies-before-the-barrier":
    dist.barrier = lambda: os._exit(3)  # rank 1's block is written; the launch fails as a kill would end it
if os.environ["RANK"] == "1" and mode == "refuses-to-score":
    teacher.score_pairs = None  # its block must come from the killed run's file
score_file(teacher, source, out, show_progress=False, embedding=StoreEmbedding(engine="torchrun"))
"""


def test_cross_encoder_scoring_under_torchrun_equals_one_process_and_resumes_by_block(tmp_path, tiny_cross_encoder_dir, write_jsonl):
    # Given the file one process scores: 150 records, so 3 blocks of 64 records for 2 ranks to share
    records = [{**RECORDS[i % len(RECORDS)], "query": f"what is cell {i}", "query_id": str(i)} for i in range(150)]
    source = write_jsonl(tmp_path / "mined.jsonl", records)
    score_file(load_teacher(tiny_cross_encoder_dir, device="cpu", batch_size=16), source, tmp_path / "local.jsonl", show_progress=False)
    worker = tmp_path / "worker.py"
    worker.write_text(TORCHRUN_SCORER)

    def launch(mode: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
                   str(tiny_cross_encoder_dir), str(source), str(tmp_path / "torchrun.jsonl"), mode]
        return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)

    # When a torchrun launch of two gloo ranks fails after rank 1 wrote its block, before rank 0 could write the output
    assert launch("dies-before-the-barrier").returncode != 0
    assert not (tmp_path / "torchrun.jsonl").exists()
    # And runs again with rank 1 unable to score
    done = launch("refuses-to-score")
    # Then rank 1's block came from the first launch, and the output is the one-process file, its blocks gone
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "torchrun.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert not work_folder(tmp_path / "torchrun.jsonl").exists()
