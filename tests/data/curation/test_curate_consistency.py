"""Consistency filter: FAISS ranks equal a naive implementation; stored ranks re-apply; iterations re-train."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.data.consistency import ConsistencyConfig, consistency_filter, consistency_ranks, keep_mask, reapply_k
from e5kit.retrieval.store import store_from_vectors


def _stores(folder, queries, passages):
    return store_from_vectors(folder / "q", queries, 64), store_from_vectors(folder / "p", passages, 64)


def naive_ranks(queries, passages, pool, max_rank):
    """Rank of pair i's own passage among pool passages + it (and the reverse), by a full score matrix."""
    def one_side(probes, targets, candidates):
        ranks = []
        for i in range(len(probes)):
            own = probes[i] @ targets[i]
            ahead = sum(1 for j in pool if j != i and probes[i] @ candidates[j] > own)
            ranks.append(min(ahead + 1, max_rank + 1))
        return np.array(ranks)

    return one_side(queries, passages, passages), one_side(passages, queries, queries)


@pytest.mark.parametrize("pool_size,max_rank,chunk", [(60, 5, 7), (200, 300, 64), (15, 3, 1000)])
def test_faiss_ranks_equal_naive(pool_size, max_rank, chunk, tmp_path):
    # Given random unit vectors with correlated pairs
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(200, 16)).astype(np.float32)
    passages = (queries + rng.normal(scale=1.5, size=queries.shape)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    pool = np.sort(rng.choice(200, size=pool_size, replace=False))
    # When ranked with FAISS in chunks, from stores of 64-row blocks with the pool read in shards of 50
    ranks = consistency_ranks(*_stores(tmp_path, queries, passages), pool, max_rank, chunk, pool_block_rows=50)
    # Then both directions equal the naive ranks
    expected_query, expected_passage = naive_ranks(queries, passages, pool, max_rank)
    np.testing.assert_array_equal(ranks["query_rank"], expected_query)
    np.testing.assert_array_equal(ranks["passage_rank"], expected_passage)
    assert keep_mask(ranks["query_rank"], ranks["passage_rank"], 2).sum() == ((expected_query <= 2) & (expected_passage <= 2)).sum()


@pytest.fixture
def pair_dir(tmp_path):
    words = "cell protein gene cancer disease patients study results treatment python file data model train test search index vector cat dog".split()
    rng = np.random.default_rng(1)
    topics = [" ".join(rng.choice(words, size=6)) for _ in range(40)]
    queries = [f"what is {t}" for t in topics]
    passages = [f"{t} is the answer about {t}" if i % 4 else " ".join(rng.choice(words, size=8)) for i, t in enumerate(topics)]
    folder = tmp_path / "curated" / "pairs"
    folder.mkdir(parents=True)
    for part in range(2):
        rows = slice(part * 20, (part + 1) * 20)
        pq.write_table(pa.table({"query": queries[rows], "passage": passages[rows], "source": ["toy"] * 20, "meta": ["{}"] * 20}), folder / f"toy-{part:05d}.parquet")
    return tmp_path / "curated"


def test_filter_writes_ranks_and_reapply_equals_a_fresh_run(pair_dir, tiny_bert_dir, tmp_path):
    # Given a filter run at k=2
    config = ConsistencyConfig(pairs=[str(pair_dir)], model=str(tiny_bert_dir), output_dir=tmp_path / "k2", pool_size=25, k=2, max_rank=10)
    report = consistency_filter(config)
    scores = pq.read_table(tmp_path / "k2" / "scores.parquet")
    assert len(scores) == 40 and report["read"] == 40
    assert report["read"] == report["kept"] + sum(report["dropped"].values())
    # And the output is a keep-mask over the input shards, no copy of the pairs
    assert sum(len(rows) for rows in kept_rows(tmp_path / "k2").values()) == report["kept"]
    assert not (tmp_path / "k2" / "pairs").exists()
    # When k=5 is re-applied from the stored ranks, and a fresh run uses k=5
    reapplied = reapply_k(tmp_path / "k2", 5)
    fresh = consistency_filter(config.model_copy(update={"k": 5, "output_dir": tmp_path / "k5"}))
    # Then both keep the same pairs, and the re-apply rewrote only the mask
    assert reapplied["kept"] == fresh["kept"] >= report["kept"]
    assert kept_rows(tmp_path / "k2") == kept_rows(tmp_path / "k5")
    assert sorted(p.name for p in (tmp_path / "k2").iterdir()) == ["mask.json", "report.json", "scores.parquet"]
    with pytest.raises(ValueError, match="max_rank"):
        reapply_k(tmp_path / "k2", 11)


def test_iterations_alternate_filter_and_training(pair_dir, tiny_bert_dir, tmp_path):
    # Given a training step that records its inputs and returns the same model
    calls = []

    def train(model, pairs_dir, output_dir, settings):
        calls.append((model, (pairs_dir / "mask.json").is_file(), output_dir, settings))
        return tiny_bert_dir

    config = ConsistencyConfig(pairs=[str(pair_dir)], model=str(tiny_bert_dir), output_dir=tmp_path / "it", pool_size=25, iterations=3, train={"max_steps": 5})
    report = consistency_filter(config, train_fn=train)
    # Then it trained twice, each time on the previous round's kept pairs, and the last round is the output
    # (re-training scores as the filter ranked: its similarity_fn_name is passed on)
    assert len(calls) == 2 and calls[0][3] == {"similarity_fn_name": "cosine", "max_steps": 5} and calls[0][1]
    assert calls[0][2] == tmp_path / "it" / "iter-0" / "model"
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1, 2]
    assert json.loads((tmp_path / "it" / "report.json").read_text())["kept"] == report["kept"]


def test_iterations_need_a_training_step_from_the_caller(pair_dir, tiny_bert_dir, tmp_path):
    # The data stage never imports the trainer: re-training is handed in (the CLI and pipeline pass pretrain_on)
    config = ConsistencyConfig(pairs=[str(pair_dir)], model=str(tiny_bert_dir), output_dir=tmp_path / "it", iterations=2)
    with pytest.raises(ValueError, match="train_fn"):
        consistency_filter(config)
    assert not (tmp_path / "it").exists()


def test_pairs_without_visible_text_are_left_out_and_counted(tiny_unnormalized_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Given a shard from elsewhere with a zero-width-only passage and an empty query among 6 pairs
    folder = tmp_path / "pairs"
    folder.mkdir()
    queries = ["cat", "dog", "", "sun", "moon", "python"]
    passages = ["the cat sat", "a dog ran", "blue sky", "\u200b", "the moon", "python file"]
    pq.write_table(pa.table({"query": queries, "passage": passages}), folder / "x.parquet")
    # When the filter runs with a model without a Normalize module
    report = consistency_filter(ConsistencyConfig(pairs=[str(folder)], model=str(tiny_unnormalized_dir), output_dir=tmp_path / "out", k=4))
    # Then the 2 pairs are counted as skipped and the other 4 are ranked, none crashing the encoder
    assert report["skipped_without_visible_text"] == 2 and report["read"] == 4


def test_shards_are_found_as_every_stage_finds_them(tiny_unnormalized_dir, tmp_path):
    import gzip

    from e5kit.io.pairs import ShardError

    # Given a folder of pair shards as training reads them: a Parquet shard and a gzip JSONL shard in a subfolder
    folder = tmp_path / "mine"
    (folder / "more").mkdir(parents=True)
    pq.write_table(pa.table({"query": ["cat", "dog"], "passage": ["the cat sat", "a dog ran"]}), folder / "a.parquet")
    rows = [{"query": "sun", "passage": "the sun shone", "source": "sky"}, {"query": "moon", "passage": "the moon rose", "source": "sky"}]
    (folder / "more" / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    # When the filter runs on the folder (e5kit.io.pairs.resolve_shard_paths, the one shard discovery)
    report = consistency_filter(ConsistencyConfig(pairs=[str(folder)], model=str(tiny_unnormalized_dir), output_dir=tmp_path / "out", k=4, write_pairs=True))
    # Then both shards are read, and each kept set is copied out as <stem>.parquet when asked for
    assert report["read"] == 4 and report["input_paths"] == [str(folder / "a.parquet"), str(folder / "more" / "b.jsonl.gz")]
    assert sorted(p.name for p in (tmp_path / "out" / "pairs").iterdir()) == ["a.parquet", "b.parquet"]
    assert pq.read_table(tmp_path / "out" / "pairs" / "b.parquet").column("source").to_pylist() == ["sky", "sky"]
    # And two shards whose outputs would share a name are refused by name before any work
    pq.write_table(pa.table({"query": ["x"], "passage": ["y"]}), folder / "more" / "a.parquet")
    with pytest.raises(ShardError, match="a: two pair shards share this file name"):
        consistency_filter(ConsistencyConfig(pairs=[str(folder)], model=str(tiny_unnormalized_dir), output_dir=tmp_path / "again", k=4))
    assert not (tmp_path / "again").exists()


def test_cli_filter_consistency_and_reapply(pair_dir, tiny_bert_dir, tmp_path):
    runner = CliRunner()
    output = tmp_path / "cli"
    result = runner.invoke(app, ["filter", "consistency", "--pairs", str(pair_dir), "--model", str(tiny_bert_dir), "--output", str(output), "--pool-size", "20", "--k", "3"])
    assert result.exit_code == 0, result.output
    assert "of 40 pairs at k=3" in result.output
    again = runner.invoke(app, ["filter", "consistency", "--output", str(output), "--reapply", "--k", "1"])
    assert again.exit_code == 0 and "at k=1" in again.output
    bad = runner.invoke(app, ["filter", "consistency", "--output", str(output), "--pairs", str(tmp_path / "none"), "--model", "x"])
    assert bad.exit_code == 2 and "matches no pair shard" in bad.output


# ------------------------------------------------------------------------------ kill -9 (issue 14, item 3)
#: (point, when, calls it gets in one filter run over pair_dir) for the seeded draws.
KILL_POINTS = [
    ("e5kit.encoder:Encoder.encode", "after", 2),  # queries embedded, nothing written
    ("e5kit.retrieval.store:put_block", "after", 2),  # a side's embedding block written (resumed, not redone)
    ("e5kit.retrieval.store:_count_ahead", "after", 2),  # a direction's ranking counted (its counts kept, or not yet)
    ("pyarrow.parquet:write_table", "after", 1),  # scores written under their temporary name
    ("pyarrow.parquet:ParquetWriter.write_table", "after", 2),  # a kept shard half written under its temporary name
    ("e5kit.io.files:AtomicFile.commit", "after", 2),  # scores or the report renamed into place
    ("e5kit.io.files:AtomicFolder.commit", "before", 1),  # every kept shard written, pairs/ not yet renamed into place
]


def kept_rows(folder):
    """Shard name -> the row numbers a filter output's keep-mask keeps."""
    from e5kit.io.pairs import resolve_pair_shards

    return {shard.path.name: np.flatnonzero(shard.keep).tolist() for shard in resolve_pair_shards([folder])}


def filter_outputs(folder):
    """Kept rows, ranks and the report of a filter run, timings and the run's own paths and fingerprint left out."""
    from e5kit.stage import ENVELOPE

    report = json.loads((folder / "report.json").read_text())
    for key in ("embed_s", "search_s", "search_pairs_per_s", *ENVELOPE):
        report.pop(key, None)
    return {
        "kept": kept_rows(folder),
        "pairs": {path.name: pq.read_table(path).to_pylist() for path in sorted((folder / "pairs").glob("*.parquet"))},
        "scores": pq.read_table(folder / "scores.parquet").to_pylist(),
        "report": report,
    }


def check_killed_filter(kill, pair_dir, tiny_bert_dir, tmp_path):
    from kill_points import run_killed

    # Given an uninterrupted filter run, and the same run killed at the point
    argv = ["filter", "consistency", "--pairs", str(pair_dir), "--model", str(tiny_bert_dir), "--pool-size", "25", "--set", "max_rank=10",
            "--set", "write_pairs=true"]  # the kept rows copied out too, so every write below is a kill point
    runner = CliRunner()
    assert runner.invoke(app, [*argv, "--output", str(tmp_path / "straight")]).exit_code == 0
    run_killed([*argv, "--output", tmp_path / "killed"], kill)
    # When it is run again, then the output equals the uninterrupted run's and no temporary file is left
    result = runner.invoke(app, [*argv, "--output", str(tmp_path / "killed")])
    assert result.exit_code == 0, result.output
    assert filter_outputs(tmp_path / "killed") == filter_outputs(tmp_path / "straight")
    assert not [path for path in (tmp_path / "killed").rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize(  # a run takes a subprocess (~14 s on 2 busy cores): the commits by default, the rest slow
    "point", [point if point[0].endswith("commit") else pytest.param(point, marks=pytest.mark.slow) for point in KILL_POINTS], ids=lambda point: point[0].rsplit(".", 1)[-1]
)
def test_filter_killed_at_each_point_reruns_to_the_uninterrupted_output(point, pair_dir, tiny_bert_dir, tmp_path):
    from kill_points import at_seeded_call

    check_killed_filter(at_seeded_call(0, *point), pair_dir, tiny_bert_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
def test_filter_killed_at_more_seeded_points(seed, pair_dir, tiny_bert_dir, tmp_path):
    from kill_points import seeded_points

    check_killed_filter(seeded_points(seed, KILL_POINTS), pair_dir, tiny_bert_dir, tmp_path)


def test_filter_killed_while_re_training_resumes_the_training_to_the_uninterrupted_output(pair_dir, tiny_bert_dir, tmp_path, single_torch_thread):
    from kill_points import KillPoint, run_killed

    # Given a two-round filter (round one re-trains with e5kit pre-training, checkpointing every 2 steps)
    train = ["--set", "train.max_steps=4", "--set", "train.batch_size=8", "--set", "train.chunk_size=4", "--set", "train.checkpoint_every=2"]
    argv = ["filter", "consistency", "--pairs", str(pair_dir), "--model", str(tiny_bert_dir), "--pool-size", "25", "--iterations", "2", *train]
    runner = CliRunner()
    assert runner.invoke(app, [*argv, "--output", str(tmp_path / "straight")]).exit_code == 0
    # When a run is killed after re-training step 3 (its last checkpoint is step 2) and run again
    run_killed([*argv, "--output", tmp_path / "killed"], KillPoint("e5kit.training.metrics:MetricsLog.log", count=3))
    assert not (tmp_path / "killed" / "report.json").exists()
    result = runner.invoke(app, [*argv, "--output", str(tmp_path / "killed")])
    # Then the training resumed (no "already holds checkpoints" refusal) and the output equals the uninterrupted run's
    assert result.exit_code == 0, result.output
    killed, straight = filter_outputs(tmp_path / "killed"), filter_outputs(tmp_path / "straight")
    for entry in [killed["report"], straight["report"], *killed["report"]["iterations"], *straight["report"]["iterations"]]:
        entry["model"] = entry["model"].replace(str(tmp_path / "killed"), "OUT").replace(str(tmp_path / "straight"), "OUT")
    assert killed == straight
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "iter-0" / "model" / "metrics.jsonl").read_text().splitlines()] for run in ("killed", "straight")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_other_passages_of_the_same_query_do_not_count_against_a_pair(tmp_path):
    # Given a query text shared by three pairs (three paragraphs of one Wikipedia section) and unrelated pairs
    rng = np.random.default_rng(4)
    shared = rng.normal(size=16)
    queries = np.stack([shared] * 3 + [rng.normal(size=16) for _ in range(20)]).astype(np.float32)
    passages = np.stack([shared + rng.normal(scale=0.3, size=16) for _ in range(3)] + [rng.normal(size=16) for _ in range(20)]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    pool = np.arange(23)
    groups = np.array([7, 7, 7, *range(100, 120)], dtype=np.int64)
    # When ranked by pair alone, the section's paragraphs push each other down; grouped by query text, they do not
    stores = _stores(tmp_path, queries, passages)
    alone = consistency_ranks(*stores, pool, max_rank=10, chunk=5)
    grouped = consistency_ranks(*stores, pool, max_rank=10, chunk=5, query_groups=groups, passage_groups=np.arange(23))
    assert alone["query_rank"][:3].max() > 1
    assert (grouped["query_rank"][:3] == 1).all()
    # And for pairs whose query is their own, grouping changes nothing
    np.testing.assert_array_equal(grouped["query_rank"][3:], alone["query_rank"][3:])
    np.testing.assert_array_equal(grouped["passage_rank"], alone["passage_rank"])


# ----------------------------------------------------------------- engines (issue 16, item 3)
def test_filter_under_torchrun_and_ray_equals_one_process(pair_dir, tiny_bert_dir, tmp_path):
    import os
    import subprocess
    import sys

    # Given the filter run in one process, with blocks of 16 pairs so there are blocks to share out
    argv = ["filter", "consistency", "--pairs", str(pair_dir), "--model", str(tiny_bert_dir), "--pool-size", "25",
            "--set", "max_rank=10", "--set", "block_rows=16", "--set", "pool_block_rows=10"]
    runner = CliRunner()
    assert runner.invoke(app, [*argv, "--output", str(tmp_path / "local")]).exit_code == 0
    # When two gloo ranks under torchrun share the embedding (rank 0 ranks and writes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "e5kit",
               *argv, "--engine", "torchrun", "--output", str(tmp_path / "torchrun")]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Then the kept pairs, ranks and report equal the one-process run's, and the output is printed once
    assert filter_outputs(tmp_path / "torchrun") == filter_outputs(tmp_path / "local")
    assert done.stdout.count("pairs at k=") == 1 and done.stdout.count("[consistency] running") == 1
    # And a local Ray actor pool of two gives the same output
    pytest.importorskip("ray")
    import ray

    try:
        result = runner.invoke(app, [*argv, "--engine", "ray", "--workers", "2", "--output", str(tmp_path / "ray")])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert filter_outputs(tmp_path / "ray") == filter_outputs(tmp_path / "local")
