"""Pair datasets without copies (issue 16 item 2): the consistency filter's keep-mask is read through by
the training sampler exactly as the kept rows copied out, and a mask never outlives a change of its shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e5kit.data.consistency import ConsistencyConfig, consistency_filter, reapply_k
from e5kit.data.shards import PairSampler
from e5kit.io.pairs import ShardError, resolve_pair_shards, resolve_shard_paths, write_mask


@pytest.fixture
def two_source_pairs(tmp_path):
    """Three shards, two sources mixed within a shard, 60 pairs."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for part in range(3):
        rows = [{"query": f"question {part}-{i} about topic {i % 7}", "passage": f"topic {i % 7} answer {part} {i} with words",
                 "source": "alpha" if (i + part) % 3 else "beta", "meta": "{}"} for i in range(20)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"mix-{part:05d}.parquet", row_group_size=7)
    return folder


def _batches(sampler, count):
    return [[(pair.query, pair.passage, pair.source) for pair in sampler.next_batch()] for _ in range(count)]


def test_training_on_the_keep_mask_equals_training_on_the_kept_pairs_copied_out(two_source_pairs, tiny_bert_dir, tmp_path):
    # Given a filter run that writes its keep-mask and, to compare, the kept rows copied out
    config = ConsistencyConfig(pairs=[str(two_source_pairs)], model=str(tiny_bert_dir), output_dir=tmp_path / "f", pool_size=30, k=8, write_pairs=True)
    report = consistency_filter(config)
    assert 0 < report["kept"] < report["read"]
    # When the training sampler reads the mask folder, and the copies (several passes: the file order is reshuffled)
    masked = PairSampler([tmp_path / "f"], batch_size=6, seed=3)
    copied = PairSampler([tmp_path / "f" / "pairs"], batch_size=6, seed=3)
    # Then it sees the same rows per source, and draws the same batches
    assert masked.rows_by_source == copied.rows_by_source and sum(masked.rows_by_source.values()) == report["kept"]
    assert _batches(masked, 3 * report["kept"] // 6) == _batches(copied, 3 * report["kept"] // 6)
    # And a sampler resumed from a saved position over the mask continues exactly
    state = masked.state_dict()
    resumed = PairSampler([tmp_path / "f"], batch_size=6, seed=3)
    resumed.load_state_dict(state)
    assert _batches(resumed, 4) == _batches(masked, 4)


def test_a_new_k_rewrites_only_the_mask(two_source_pairs, tiny_bert_dir, tmp_path):
    # Given a mask-only filter output at k = 2
    consistency_filter(ConsistencyConfig(pairs=[str(two_source_pairs)], model=str(tiny_bert_dir), output_dir=tmp_path / "f", pool_size=30, k=2))
    scores = (tmp_path / "f" / "scores.parquet").read_bytes()
    before = sum(int(shard.keep.sum()) for shard in resolve_pair_shards([tmp_path / "f"]))
    # When k = 9 is re-applied, Then the ranks are untouched, no pairs are copied, and the mask keeps more
    report = reapply_k(tmp_path / "f", 9)
    assert (tmp_path / "f" / "scores.parquet").read_bytes() == scores and not (tmp_path / "f" / "pairs").exists()
    assert sum(int(shard.keep.sum()) for shard in resolve_pair_shards([tmp_path / "f"])) == report["kept"] >= before


def test_a_mask_refuses_shards_that_changed_and_commands_that_need_plain_shards(two_source_pairs, tmp_path):
    # Given a mask written over the three shards (ranks: everything kept)
    shards = resolve_shard_paths([two_source_pairs])
    folder = tmp_path / "mask"
    folder.mkdir()
    pq.write_table(pa.table({"query_rank": [1] * 60, "passage_rank": [1] * 60}), folder / "ranks.parquet")
    write_mask(folder, shards, [20, 20, 20], "ranks.parquet", k=2)
    assert [int(shard.keep.sum()) for shard in resolve_pair_shards([folder])] == [20, 20, 20]
    # When a command that reads plain shards is given the mask folder, Then it says what the folder is
    with pytest.raises(ShardError, match="keep-mask over other shards"):
        resolve_shard_paths([folder])
    # When a shard is rewritten with other rows, Then reading the mask names the shard
    pq.write_table(pa.Table.from_pylist([{"query": "q", "passage": "p"}]), shards[1])
    with pytest.raises(ShardError, match=f"{shards[1].name}: 1 rows, but the keep-mask"):
        resolve_pair_shards([folder])
