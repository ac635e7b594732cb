"""Hard-negative mining: never a positive, rank window and margin hold; dense mining through on-disk
embedding stores equals one in-memory search, resumes after a kill, and gives the same output under
torchrun and Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_runs import check_engines_write_the_local_file

from e5kit.config import ConfigError, load_config
from e5kit.data.mining import (
    MiningConfig,
    dense_candidates,
    embed_for_mining,
    mine_hard_negatives,
    random_positions,
    select_negatives,
    work_folder,
)
from e5kit.io.beir import CorpusStream
from e5kit.retrieval.dense import dense_search, encode_corpus, merge_top_k

#: Tiny-model steps here run on one intra-op thread, as in tests/finetune (see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@settings(max_examples=200, deadline=None)
@given(
    corpus_size=st.integers(2, 40),
    data=st.data(),
    negatives=st.integers(1, 8),
    skip_top=st.integers(0, 5),
    margin=st.one_of(st.none(), st.floats(0, 2)),
    relative=st.one_of(st.none(), st.floats(0, 0.9)),
    sampling=st.sampled_from(["top", "random"]),
    seed=st.integers(0, 1000),
)
def test_selection_never_returns_a_positive_and_respects_window_and_margin(corpus_size, data, negatives, skip_top, margin, relative, sampling, seed):
    # Given a random ranking of a random corpus, random positives (some possibly unranked), random empty
    # passages and copies of a positive, and random settings
    positives = set(data.draw(st.lists(st.integers(0, corpus_size - 1), min_size=1, max_size=corpus_size - 1, unique=True)))
    others = sorted(set(range(corpus_size)) - positives)
    empty = set(data.draw(st.lists(st.sampled_from(others), unique=True)))
    duplicates = set(data.draw(st.lists(st.sampled_from(others), unique=True))) - empty
    depth = data.draw(st.integers(skip_top + 1, skip_top + 30))
    rng = np.random.default_rng(seed)
    ranked = rng.permutation(corpus_size)[: min(depth, corpus_size)]
    ranked_scores = np.sort(rng.normal(size=len(ranked)))[::-1].astype(np.float32)
    scored = [s for p, s in zip(ranked, ranked_scores) if p in positives]
    positive_score = max(scored) if scored else -np.inf
    config = MiningConfig(negatives=negatives, depth=depth, skip_top=skip_top, margin=margin, relative_margin=relative, sampling=sampling)
    # When negatives are selected (with random back-fill)
    selection = select_negatives(
        ranked, ranked_scores, positives, positive_score, config, np.random.default_rng(seed), corpus_size, empty=empty, duplicates=duplicates
    )
    # Then no positive, empty passage or copy of a positive is ever returned, picks are distinct, and
    # there are as many as the other documents allow
    assert not (positives | empty | duplicates) & set(selection.negatives)
    assert len(set(selection.negatives)) == len(selection.negatives)
    assert len(selection.negatives) == min(negatives, corpus_size - len(positives | empty | duplicates))
    # And every rejected candidate of the window is counted under its reason
    window = [int(p) for p in ranked[skip_top:depth]]
    assert selection.rejected["empty"] == len(empty & set(window))
    assert selection.rejected["duplicate of a positive"] == len(duplicates & set(window))
    # And every retrieved (not back-filled) negative lies in the window and below the margin ceiling
    rank_of = {int(p): r for r, p in enumerate(ranked)}
    score_of = dict(zip(map(int, ranked), ranked_scores))
    retrieved = selection.negatives[: len(selection.negatives) - selection.backfilled]
    for position in retrieved:
        assert skip_top <= rank_of[position] < depth
        if margin is not None:
            assert score_of[position] <= positive_score - margin
        if relative is not None:
            assert score_of[position] <= positive_score * (1 - relative)


def test_top_sampling_takes_the_best_window_candidates_in_rank_order():
    # Given ranks 0..9 with scores 10..1 and positives at ranks 1 and 4
    ranked, scores = np.arange(10), np.arange(10, 0, -1).astype(np.float32)
    config = MiningConfig(negatives=3, depth=10, skip_top=2, sampling="top")
    # When selecting without a margin
    selection = select_negatives(ranked, scores, {1, 4}, 9.0, config, np.random.default_rng(0), 10)
    # Then ranks 0-1 are skipped, the positive at rank 4 is passed over, and the next three are taken
    assert selection.negatives == [2, 3, 5] and selection.backfilled == 0
    assert selection.rejected == {"positive": 1}
    # And with margin 6 (ceiling 9 - 6 = 3), only candidates scoring <= 3 qualify: ranks 7, 8, 9
    margin = select_negatives(ranked, scores, {1, 4}, 9.0, config.model_copy(update={"margin": 6.0}), np.random.default_rng(0), 10)
    assert margin.negatives == [7, 8, 9] and margin.rejected["within the margin of the positive"] == 4


def test_unscored_positive_rejects_every_candidate_under_a_margin():
    # Given BM25 results that do not contain the positive (its score is below all of them: -inf)
    config = MiningConfig(negatives=2, depth=5, margin=0.0, backfill=False)
    # When selecting
    selection = select_negatives(np.arange(5), np.linspace(5, 1, 5), {7}, -np.inf, config, np.random.default_rng(0), 10)
    # Then no retrieved candidate can be shown to be below the positive, so none is taken
    assert selection.negatives == [] and selection.rejected["within the margin of the positive"] == 5


def test_random_positions_are_distinct_and_avoid_forbidden_even_when_nearly_all_are():
    rng = np.random.default_rng(3)
    picked = random_positions(rng, 12, 5, forbidden=set(range(9)))
    assert sorted(picked) == [9, 10, 11]
    picked = random_positions(rng, 10_000, 50, forbidden={1, 2, 3})
    assert len(set(picked)) == 50 and not {1, 2, 3} & set(picked)


def test_merge_top_k_equals_a_full_sort():
    rng = np.random.default_rng(0)
    a_scores, b_scores = -np.sort(-rng.normal(size=(3, 4))), -np.sort(-rng.normal(size=(3, 5)))
    a_index, b_index = rng.integers(0, 100, (3, 4)), rng.integers(100, 200, (3, 5))
    scores, indices = merge_top_k(a_scores, a_index, b_scores, b_index, 6)
    for row in range(3):
        pairs = sorted(zip(np.r_[a_scores[row], b_scores[row]], np.r_[a_index[row], b_index[row]]), reverse=True)[:6]
        assert np.allclose(scores[row], [s for s, _ in pairs]) and list(indices[row]) == [i for _, i in pairs]


def test_invalid_options_name_the_field():
    with pytest.raises(ConfigError, match="invalid mining config: .*skip_top"):
        load_config(MiningConfig, options={"skip_top": 10, "depth": 10})
    with pytest.raises(ConfigError, match="engine: BM25 .* runs in one process"):
        load_config(MiningConfig, options={"model": "bm25", "engine": "ray"})
    with pytest.raises(ConfigError, match="margin"):
        load_config(MiningConfig, options={"margin": -1})


def read_mined(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bm25_mining_writes_flag_records_without_positives(beir_dir, tmp_path):
    # Given the tiny BEIR folder (each query has 2 positives among 6 same-topic docs)
    out = tmp_path / "mined.jsonl"
    config = MiningConfig(negatives=4, depth=20, skip_top=1)
    # When mining with BM25
    report = mine_hard_negatives(config, beir_dir / "queries.jsonl", beir_dir / "corpus.jsonl", beir_dir / "qrels" / "train.tsv", out)
    records = read_mined(out)
    # Then every judged query has 4 negatives, none of them a positive, with texts matching ids
    assert report["queries"] == 12 == len(records)
    corpus = {r["_id"]: r for r in map(json.loads, (beir_dir / "corpus.jsonl").read_text().splitlines())}
    for record in records:
        assert len(record["neg"]) == 4 and len(record["pos_ids"]) == 2
        assert not set(record["neg_ids"]) & set(record["pos_ids"])
        assert record["neg"] == [f"{corpus[i]['title']} {corpus[i]['text']}" for i in record["neg_ids"]]
    assert json.loads(out.with_name("mined.jsonl.stats.json").read_text())["queries"] == 12


def test_bad_qrels_are_counted_and_named(beir_dir, tmp_path):
    # Given qrels with a document id missing from the corpus, a query whose only judgement is missing,
    # an unknown query id and a query judged only non-relevant
    qrels = beir_dir / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q-sky-0\tghost\t1\nq-cell-0-x\tcell-1\t1\nq-sky-1\tsky-5\t0\n")
    (beir_dir / "queries.jsonl").write_text((beir_dir / "queries.jsonl").read_text() + '{"_id": "lonely", "text": "sky"}\n')
    qrels.write_text(qrels.read_text() + "lonely\tmissing-doc\t1\n")
    # When mining
    report = mine_hard_negatives(MiningConfig(negatives=2, depth=10), beir_dir / "queries.jsonl", beir_dir / "corpus.jsonl", qrels, tmp_path / "m.jsonl")
    # Then each problem is counted with the record named, and the good queries are still mined
    skipped = report["skipped"]
    assert skipped["document id not in the corpus"]["count"] == 2
    assert any("ghost" in name for name in skipped["document id not in the corpus"]["records"])
    assert skipped["query id not in the queries file"] == {"count": 1, "records": [f"{qrels} query 'q-cell-0-x'"]}
    assert skipped["query without positives"] == {"count": 1, "records": [f"{qrels} query 'lonely'"]}
    assert report["queries"] == 12


def test_stored_dense_search_equals_one_in_memory_search(beir_dir, tmp_path, tiny_bert_dir):
    # Given a tiny dense model and the 36-document corpus, embedded into stores of 5-row blocks
    from e5kit.encoder import Encoder

    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    corpus = CorpusStream(beir_dir / "corpus.jsonl")
    queries = [json.loads(line)["text"] for line in (beir_dir / "queries.jsonl").read_text().splitlines()]
    positives = [[row % len(corpus.ids), (3 * row + 1) % len(corpus.ids)] for row in range(len(queries))]
    config = MiningConfig(model=str(tiny_bert_dir), depth=8, block_rows=5)
    stores = embed_for_mining(encoder, corpus, queries, config, tmp_path / "work")
    assert stores["passage"].layout.blocks == 8
    # When the candidates are searched block by block
    result = dense_candidates(stores["query"], stores["passage"], positives, config.depth)
    # Then they equal one exact search over every embedding held in memory at once, positives scored alike
    documents = encode_corpus(encoder, next(corpus.shards(None))[1], role="passage").embeddings
    probes = encoder.encode(queries, role="query")
    indices, scores = dense_search(probes, documents, config.depth)
    np.testing.assert_array_equal(result.indices, indices)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    expected = [max(probes[row] @ documents[position] for position in relevant) for row, relevant in enumerate(positives)]
    np.testing.assert_allclose(result.positive_scores, expected, atol=1e-5)


def mining_args(beir_dir):
    return beir_dir / "queries.jsonl", beir_dir / "corpus.jsonl", beir_dir / "qrels" / "train.tsv"


DENSE = {"negatives": 3, "depth": 8, "skip_top": 1, "margin": 0.0}


def test_blocks_of_any_size_mine_the_same_file_and_leave_no_work_folder(beir_dir, tmp_path, tiny_bert_dir):
    # Given a tiny dense model
    from e5kit.encoder import Encoder

    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    config = MiningConfig(model=str(tiny_bert_dir), **DENSE)
    # When mining with the corpus in one block and in blocks of 5 documents
    whole = mine_hard_negatives(config, *mining_args(beir_dir), tmp_path / "whole.jsonl", encoder=encoder)
    blocks = mine_hard_negatives(config.model_copy(update={"block_rows": 5}), *mining_args(beir_dir), tmp_path / "blocks.jsonl", encoder=encoder)
    # Then the mined files are the same bytes, dense positives are always scored, and the stores are gone
    assert (tmp_path / "whole.jsonl").read_bytes() == (tmp_path / "blocks.jsonl").read_bytes()
    assert whole["positives_unscored"] == blocks["positives_unscored"] == 0
    assert not work_folder(tmp_path / "blocks.jsonl").exists()


class DiesAtCall:
    """An encoder that stops the run (as kill -9 would) at its ``calls``-th ``encode``, counting calls."""

    def __init__(self, encoder, calls: int | None) -> None:
        self.encoder, self.calls, self.made = encoder, calls, 0
        self.dimension, self.fingerprint = encoder.dimension, encoder.fingerprint

    def encode(self, *args, **options):
        self.made += 1
        if self.made == self.calls:
            raise KeyboardInterrupt
        return self.encoder.encode(*args, **options)


def test_a_killed_dense_run_resumes_block_by_block_to_the_same_file(beir_dir, tmp_path, tiny_bert_dir):
    # Given the file an uninterrupted run mines, the corpus in 8 blocks of 5 documents
    from e5kit.encoder import Encoder

    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    config = MiningConfig(model=str(tiny_bert_dir), block_rows=5, **DENSE)
    mine_hard_negatives(config, *mining_args(beir_dir), tmp_path / "reference.jsonl", encoder=encoder)
    # When a run dies while embedding the corpus's fourth block
    out = tmp_path / "mined.jsonl"
    with pytest.raises(KeyboardInterrupt):
        mine_hard_negatives(config, *mining_args(beir_dir), out, encoder=DiesAtCall(encoder, 4))
    assert not out.exists() and (work_folder(out) / "passage" / "block-00002.ids.npy").is_file()
    # And runs again
    again = DiesAtCall(encoder, None)
    mine_hard_negatives(config, *mining_args(beir_dir), out, encoder=again)
    # Then only the 5 missing corpus blocks and the 3 query blocks are embedded, and the file is the uninterrupted run's
    assert again.made == 5 + 3
    assert out.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


def test_dense_mining_under_torchrun_and_ray_equals_one_process(beir_dir, tmp_path, tiny_bert_dir):
    # Given the file one process mines, with blocks of 5 documents so there are blocks to share out
    queries, corpus, qrels = mining_args(beir_dir)
    argv = ["mine-negatives", "--queries", str(queries), "--corpus", str(corpus), "--positives", str(qrels), "--model", str(tiny_bert_dir),
            "--negatives", "3", "--depth", "8", "--skip-top", "1", "--margin", "0", "--block-rows", "5"]
    # When it runs in one process, as two gloo ranks under torchrun, and on a local Ray of two actors,
    # Then the three files are the same bytes and the summary is printed once
    check_engines_write_the_local_file(argv, tmp_path)


# ---------------------------------------------------------------- issue 12: empty passages and copies of a positive
CASES = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures"


def mine_case(name: str, out: Path, *options: str):
    from typer.testing import CliRunner

    from e5kit.cli.app import app

    case = CASES / name
    return CliRunner().invoke(app, [
        "mine-negatives", "--queries", str(case / "queries.jsonl"), "--corpus", str(case / "corpus.jsonl"),
        "--positives", str(case / "qrels" / "test.tsv"), "--out", str(out), *options,
    ])


@pytest.mark.parametrize("margin", [[], ["--margin", "0"]])
def test_beir_dup_bm25_never_returns_a_copy_of_the_positive(tmp_path, margin):
    # Given beir_dup: d1-copy has the same title and text as q1's positive d1
    # When BM25 mines 2 negatives (with and without margin 0, under which the copy ties the positive)
    result = mine_case("beir_dup", tmp_path / "mined.jsonl", "--model", "bm25", "--negatives", "2", *margin)
    # Then d1-copy is never a negative, and the report counts it as a duplicate of a positive
    assert result.exit_code == 0, result.output
    records = {r["query_id"]: r for r in read_mined(tmp_path / "mined.jsonl")}
    assert all("d1-copy" not in r["neg_ids"] and len(r["neg_ids"]) == 2 for r in records.values())
    report = json.loads((tmp_path / "mined.jsonl.stats.json").read_text())
    assert report["candidates_rejected"]["duplicate of a positive"] == 1
    assert "'duplicate of a positive': 1" in result.output


def test_beir_dup_dense_mining_and_back_fill_never_return_a_copy(tmp_path, tiny_bert_dir):
    # Given beir_dup with q1's copy written differently: upper case, full-width letters, a zero-width
    # space and extra whitespace (the same text under normalized_text_key)
    folder = Path(shutil.copytree(CASES / "beir_dup", tmp_path / "beir_dup"))
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"_id": "d1-copy", "title": "ＭＩＴＯＳＩＳ", "text": "Mitosis  is the process\u200b by which a CELL divides into two identical daughter cells. "})
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    # When a dense model mines more negatives than the corpus allows (so back-fill runs)
    config = MiningConfig(model=str(tiny_bert_dir), negatives=4)
    report = mine_hard_negatives(config, folder / "queries.jsonl", folder / "corpus.jsonl", folder / "qrels" / "test.tsv", tmp_path / "m.jsonl")
    # Then the copy is rejected and counted, and back-fill does not pick it either
    records = {r["query_id"]: r for r in read_mined(tmp_path / "m.jsonl")}
    assert "d1-copy" not in records["q1"]["neg_ids"] and sorted(records["q1"]["neg_ids"]) == ["d2", "d3", "d4"]
    assert report["candidates_rejected"]["duplicate of a positive"] == 1
    assert report["skipped"]["fewer than 4 negatives found"] == {"count": 1, "records": ["query 'q1'"]}
    assert sorted(records["q2"]["neg_ids"]) == ["d1", "d1-copy", "d3", "d4"]  # a copy of another query's positive is fine


@pytest.mark.parametrize("model", ["bm25", "tiny"])
def test_beir_empty_mining_keeps_counts_and_never_picks_the_empty_document(tmp_path, tiny_bert_dir, model):
    # Given beir_empty: document 7915 has empty title and text
    # When mining (dense mining used to stop with exit 2) with 3 negatives, more than the corpus allows
    name = str(tiny_bert_dir) if model == "tiny" else "bm25"
    result = mine_case("beir_empty", tmp_path / "mined.jsonl", "--model", name, "--negatives", "3")
    # Then it succeeds, reports 1 empty document, and the empty passage is neither mined nor back-filled
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "mined.jsonl.stats.json").read_text())
    assert report["empty_documents"] == 1 and report["documents"] == 4
    assert report["candidates_rejected"]["empty"] == 2  # retrieved for both queries, rejected both times
    assert all("7915" not in r["neg_ids"] and "" not in r["neg"] for r in read_mined(tmp_path / "mined.jsonl"))
    assert "empty documents (kept, never negatives): 1" in result.output


def test_a_positive_without_visible_text_is_left_out_and_counted(tmp_path):
    # Given beir_empty where q1 also judges the empty document 7915 relevant, and q2 judges only it
    folder = Path(shutil.copytree(CASES / "beir_empty", tmp_path / "beir_empty"))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t7915\t1\nq2\t7915\t1\n")
    # When mining with BM25
    report = mine_hard_negatives(MiningConfig(negatives=1), folder / "queries.jsonl", folder / "corpus.jsonl", folder / "qrels" / "test.tsv", tmp_path / "m.jsonl")
    # Then q1 keeps its visible positive only, q2 (no visible positive left) is skipped, both counted
    records = read_mined(tmp_path / "m.jsonl")
    assert [r["pos_ids"] for r in records] == [["d1"]] and "" not in records[0]["pos"]
    assert report["skipped"]["positive without visible text (left out)"]["count"] == 2
    assert report["skipped"]["every positive is an empty passage"]["count"] == 1


def test_normalized_text_key_is_the_one_text_identity():
    from e5kit.io.text import normalized_text_key

    # NFKC, case folding, invisible characters removed, whitespace collapsed
    assert normalized_text_key("  Ｍｉｔｏｓｉｓ\u00a0IS\t\tthe ﬁle\u200b.\n") == normalized_text_key("mitosis is the file.") == "mitosis is the file."
    assert normalized_text_key("Straße") == normalized_text_key("STRASSE")
    assert normalized_text_key("\u200b \u2060\u00ad") == ""
    assert normalized_text_key("cell division") != normalized_text_key("cell divisions")
