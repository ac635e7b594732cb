"""Pair-shard discovery (``e5kit.io.pairs.resolve_shard_paths``): a stage's output folder means its pairs/,
and a damaged Parquet file is refused by name before any work."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e5kit.io.pairs import ShardError, resolve_shard_paths


def _shard(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"query": ["q"], "passage": ["p"], "source": ["s"]}), path)
    return path


def test_a_stage_output_folder_means_its_pairs_folder_only(tmp_path):
    # Given a curate output (pairs/ plus work/ shards) and a holdout output (pairs/ plus BEIR JSONL files)
    curated = tmp_path / "curated"
    final = _shard(curated / "pairs" / "news-00000.parquet")
    _shard(curated / "work" / "news-shard00000.parquet")
    held = tmp_path / "held"
    kept = _shard(held / "pairs" / "news-00000.parquet")
    (held / "heldout" / "news").mkdir(parents=True)
    (held / "heldout" / "news" / "corpus.jsonl").write_text('{"_id": "d0", "text": "t"}\n')
    # When each folder is given as training data, Then only the pairs/ shards are read (not work/ copies, not BEIR files)
    assert resolve_shard_paths([curated]) == [final]
    assert resolve_shard_paths([held]) == [kept]
    # And a plain folder of shards is still read below it
    plain = _shard(tmp_path / "mine" / "reddit" / "a.parquet")
    assert resolve_shard_paths([tmp_path / "mine"]) == [plain]


def test_a_damaged_parquet_shard_is_refused_by_name(tmp_path):
    # Given a file named like a shard that is not Parquet, When it is resolved, Then the error names it
    bad = tmp_path / "notashard.parquet"
    bad.write_text("hello\n")
    with pytest.raises(ShardError, match="notashard.parquet: not a readable Parquet file"):
        resolve_shard_paths([bad])
