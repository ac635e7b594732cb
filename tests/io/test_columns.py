"""A Parquet text column read in fixed-size blocks across files and row groups."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e5kit.io.columns import ParquetColumnBlocks


def test_blocks_cross_files_and_row_groups_in_order(tmp_path):
    # Given two shards of 11 and 6 rows, the first in row groups of 4
    first = [f"a{i}" for i in range(11)]
    second = [f"b{i}" for i in range(6)]
    pq.write_table(pa.table({"query": first, "passage": first}), tmp_path / "1.parquet", row_group_size=4)
    pq.write_table(pa.table({"query": second, "passage": second}), tmp_path / "2.parquet")
    # When the passage column is read in blocks of 5
    blocks = ParquetColumnBlocks([tmp_path / "1.parquet", tmp_path / "2.parquet"], "passage", 5)
    # Then the blocks are the column of the shards in order, 5 rows each but the last
    assert blocks.rows == 17 and blocks.blocks == 4
    assert list(blocks) == [first[:5], first[5:10], [first[10], *second[:4]], second[4:]]
    # And the reader survives pickling (data-parallel workers each read their own blocks)
    assert pickle.loads(pickle.dumps(blocks))(2) == [first[10], *second[:4]]


def test_a_shard_without_the_column_is_named(tmp_path):
    # Given a shard without a passage column, When it is opened, Then the file and column are named
    pq.write_table(pa.table({"query": ["x"]}), tmp_path / "q.parquet")
    with pytest.raises(ValueError, match=r"q.parquet: no 'passage' column"):
        ParquetColumnBlocks([tmp_path / "q.parquet"], "passage", 4)
