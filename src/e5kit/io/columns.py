"""One text column of Parquet shards, read in fixed-size blocks of rows without loading the shards.

The text side of the embedding stores (``e5kit.retrieval.store``): block ``b`` is rows
``[b * block_rows, (b + 1) * block_rows)`` of the shards taken in order as one table, read from the
row groups that hold them, so memory follows the block, never the data set. Picklable (paths and
row counts only), so data-parallel workers (Ray actors, torchrun ranks) each read their own blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class _RowGroup:
    file: int
    group: int
    start: int  # global row of the group's first row
    rows: int


@dataclass
class ParquetColumnBlocks:
    """Block ``b`` of column ``column`` over ``files`` (in the given order), as a list of values.

    Args:
        files: Parquet shards, read in this order as one table.
        column: The column (e.g. "query", "passage").
        block_rows: Rows per block.

    Raises:
        ValueError: naming a shard without ``column``.
    """

    files: Sequence[str | Path]
    column: str
    block_rows: int
    _groups: list[_RowGroup] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import pyarrow.parquet as pq

        self.files = [str(path) for path in self.files]
        self._groups = []
        start = 0
        for number, path in enumerate(self.files):
            metadata = pq.ParquetFile(path).metadata
            if self.column not in metadata.schema.to_arrow_schema().names:
                raise ValueError(f"{path}: no {self.column!r} column")
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                self._groups.append(_RowGroup(number, group, start, rows))
                start += rows
        self.rows = start

    @property
    def blocks(self) -> int:
        return -(-self.rows // self.block_rows)

    def __call__(self, block: int) -> list:
        import pyarrow.parquet as pq

        start, stop = block * self.block_rows, min((block + 1) * self.block_rows, self.rows)
        values: list = []
        for group in self._groups:
            if group.start + group.rows <= start or group.start >= stop:
                continue
            table = pq.ParquetFile(self.files[group.file]).read_row_group(group.group, columns=[self.column])
            low, high = max(start - group.start, 0), min(stop - group.start, group.rows)
            values += table.column(self.column).slice(low, high - low).to_pylist()
        return values

    def __iter__(self) -> Iterator[list]:
        for block in range(self.blocks):
            yield self(block)
