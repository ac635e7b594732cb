"""The foundation every stage reads and writes through; imports nothing else from e5kit.

- ``files``: the one decompression layer (gz/bz2/xz/lzma/zst/plain, cut streams named), the line reader
  (strict, or counting bad lines), input/output path checks, atomic file and folder writes.
- ``tables``: the one reader of JSONL, TSV and CSV tables (columns by header or by name; strict, or
  counting malformed rows with file and line), and the texts-to-embed reader.
- ``text``: the text rules every stage shares (visible text, normalised text identity).
- ``beir``: the one strict BEIR corpus/queries/qrels reader, streaming and in memory.
- ``hashing``: the one stable 64-bit text hash.
- ``pairs``: the one (query, passage) Pair schema and pair-shard discovery.
"""
