"""Retrieval evaluation through a corpus store (issue 16 item 3): the corpus embedded in bounded blocks
into ``stores/`` of the embedding cache and searched block by block scores exactly as the in-memory path,
is the corpus's cache on a rerun, resumes block by block after a kill, and torchrun (2 gloo processes)
and Ray (2 actors) give the scores one process gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_runs import Killed, kill_embedding_at_block, ray_cli, torchrun_cli
from test_eval_cache import CountingEncoder
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.evaluation.cache import CachedEncoder, EmbeddingCache
from e5kit.evaluation.retrieval import run_beir


def _scores(outcome) -> tuple[dict, dict]:
    details = {name: value for name, value in outcome.details.items() if name != "seconds"}
    return outcome.metrics, details


@pytest.mark.parametrize("block_rows", [65_536, 7], ids=["one-block", "7-row-blocks"])
def test_a_corpus_store_scores_exactly_as_the_in_memory_path(beir_dir, tiny_encoder, block_rows, single_torch_thread):
    # Given the in-memory evaluation of the tiny encoder
    expected = run_beir(tiny_encoder, beir_dir)
    # When the corpus is embedded into a store (one block, or 30 documents in blocks of 7) and searched per block
    stored = run_beir(tiny_encoder, beir_dir, corpus_store=True, block_rows=block_rows)
    # Then the metrics and the counts are the same
    assert _scores(stored) == _scores(expected)


def test_the_store_is_the_corpus_cache_and_a_killed_run_resumes_block_by_block(tmp_path, beir_dir, tiny_encoder, single_torch_thread):
    # Given a cached evaluation through a store of 7-row blocks that dies while reading block 2
    counting = CountingEncoder(tiny_encoder)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        kill_embedding_at_block(patch, 2)
        run_beir(CachedEncoder(counting, EmbeddingCache(tmp_path / "cache")), beir_dir, corpus_store=True, block_rows=7)
    (store,) = (tmp_path / "cache" / "stores").iterdir()
    assert len(list(store.glob("*.ids.npy"))) == 2
    # When it runs again, and once more
    counting.embedded = 0
    resumed = run_beir(CachedEncoder(counting, EmbeddingCache(tmp_path / "cache")), beir_dir, corpus_store=True, block_rows=7)
    embedded_resumed = counting.embedded
    again = run_beir(CachedEncoder(counting, EmbeddingCache(tmp_path / "cache")), beir_dir, corpus_store=True, block_rows=7)
    # Then the rerun embeds only the documents of the missing blocks (30 - 14), the next run nothing,
    # and both score as the in-memory evaluation
    assert embedded_resumed == 30 - 14 and counting.embedded == embedded_resumed
    assert _scores(resumed) == _scores(again) == _scores(run_beir(tiny_encoder, beir_dir))


def test_engines_other_than_local_need_the_shared_cache_folder(beir_dir, tiny_encoder):
    # Given no embedding cache, When torchrun is asked for, Then the error says why in one line
    with pytest.raises(ValueError, match="engine torchrun: the corpus store must be in a folder every worker sees"):
        run_beir(tiny_encoder, beir_dir, engine="torchrun")


def _eval_args(model: Path, data: Path, folder: Path, *extra: str) -> list[str]:
    return ["eval", "retrieval", "--model", str(model), "--data", str(data), "--results-dir", str(folder / "results"),
            "--cache-dir", str(folder / "cache"), "--block-rows", "7", *extra]


def _metrics(folder: Path) -> dict:
    (result,) = (folder / "results").glob("*.json")
    return json.loads(result.read_text())["metrics"]


@pytest.fixture()
def one_process_metrics(tiny_bert_dir, beir_dir, tmp_path) -> dict:
    outcome = CliRunner().invoke(app, _eval_args(tiny_bert_dir, beir_dir, tmp_path / "one", "--corpus-store"))
    assert outcome.exit_code == 0, outcome.output
    return _metrics(tmp_path / "one")


def test_torchrun_two_processes_score_as_one_process(tiny_bert_dir, beir_dir, tmp_path, one_process_metrics):
    # Given the metrics of one process through a store of 7-row blocks
    # When two gloo processes under torchrun evaluate, each embedding half of the corpus blocks
    torchrun_cli(_eval_args(tiny_bert_dir, beir_dir, tmp_path / "two"))
    # Then rank 0 wrote the one result file, with the same metrics
    assert _metrics(tmp_path / "two") == one_process_metrics


def test_ray_with_two_actors_scores_as_one_process(tiny_bert_dir, beir_dir, tmp_path, one_process_metrics, single_torch_thread):
    # Given the metrics of one process through a store of 7-row blocks
    # When a local Ray actor pool of two embeds the corpus blocks
    ray_cli(_eval_args(tiny_bert_dir, beir_dir, tmp_path / "ray"))
    # Then the metrics are the same
    assert _metrics(tmp_path / "ray") == one_process_metrics
