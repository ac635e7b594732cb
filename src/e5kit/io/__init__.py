"""The foundation every stage reads and writes through; imports nothing else from e5kit.

- ``files``: the one decompression layer (gz/bz2/xz/lzma/zst/plain, cut streams named), strict line,
  JSONL and TSV readers, input/output path checks, atomic file and folder writes.
- ``text``: the text rules every stage shares (visible text, normalised text identity).
- ``beir``: the one strict BEIR corpus/queries/qrels reader, streaming and in memory.
- ``hashing``: the one stable 64-bit text hash.
- ``pairs``: the one (query, passage) Pair schema and pair-shard discovery.
"""
