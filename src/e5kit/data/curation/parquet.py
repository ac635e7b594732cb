"""Pair files: the schemas of the work and final shards, and a batched writer committed whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from e5kit.data.curation.registry import FILTERS
from e5kit.io.files import AtomicFile
from e5kit.io.pairs import PAIR_COLUMNS

#: Rows per row group (and per read batch of the global pass).
WRITE_BATCH = 8192
#: Work-shard columns the report's length summaries read: words as the length filter counts them (``e5kit.data.text.words``).
WORD_COLUMNS = ("query_words", "passage_words")
_KEY_TYPES = {"dedup_key": pa.int64(), "minhash": pa.binary()}


def pair_schema(with_dedup: bool) -> pa.Schema:
    """The final shards' schema (string columns query, passage, source, meta), or with ``with_dedup`` the
    work shards' one: plus each global filter's key column and the word counts of both sides."""
    fields = [pa.field(name, pa.string()) for name in PAIR_COLUMNS]
    if with_dedup:
        fields += [pa.field(entry.column, _KEY_TYPES[entry.column]) for entry in FILTERS if entry.stage == "global"]
        fields += [pa.field(name, pa.int32()) for name in WORD_COLUMNS]
    return pa.schema(fields)


class ParquetWriter:
    """Writes rows (``add``) or Arrow tables (``add_table``) to ``path`` in row groups of ``WRITE_BATCH`` rows,
    through an ``AtomicFile`` committed on close."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.staged = AtomicFile(path)
        self.writer = pq.ParquetWriter(self.staged.temporary, schema)
        self.rows: dict[str, list] = {name: [] for name in schema.names}
        self.tables: list[pa.Table] = []
        self.buffered = 0
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        for name in self.schema.names:
            self.rows[name].append(row[name])
        self.count += 1
        self.buffered += 1
        if self.buffered >= WRITE_BATCH:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Append ``table``'s rows (the schema's columns, in order); row groups are cut as with ``add``."""
        self._take_rows()
        self.tables.append(table.select(self.schema.names))
        self.count += table.num_rows
        self.buffered += table.num_rows
        while self.buffered >= WRITE_BATCH:
            self._flush()

    def _take_rows(self) -> None:
        if self.rows[self.schema.names[0]]:
            self.tables.append(pa.Table.from_pydict(self.rows, schema=self.schema))
            self.rows = {name: [] for name in self.schema.names}

    def _flush(self) -> None:
        self._take_rows()
        if not self.buffered:
            return
        table = pa.concat_tables(self.tables)
        self.writer.write_table(table.slice(0, WRITE_BATCH))
        rest = table.slice(WRITE_BATCH)
        self.tables = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows

    def close(self) -> None:
        while self.buffered:
            self._flush()
        self.writer.close()
        self.staged.commit()
