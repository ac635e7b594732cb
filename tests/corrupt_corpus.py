"""A corrupt-input corpus: the same records plain, compressed with every codec e5kit reads, cut,
followed by garbage, or with flipped bytes; plus paths that are not readable files.

Used by the reader tests (tests/data/curation) and the evaluation and index input tests.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from pathlib import Path

import zstandard

#: Suffix -> compress(bytes) -> bytes. bz2 uses 100 kB blocks, so a cut stream still holds whole blocks
#: (each decompresses at once); zstd writes a content checksum, as the zstd tool does by default.
CODECS = {
    ".gz": gzip.compress,
    ".bz2": lambda data: bz2.compress(data, compresslevel=1),
    ".xz": lzma.compress,
    ".zst": zstandard.ZstdCompressor(write_checksum=True).compress,
}
#: Suffix -> a reference incremental decompression of a whole (possibly cut) stream.
_REFERENCE = {
    ".gz": lambda blob: zlib.decompressobj(wbits=31).decompress(blob),
    ".bz2": lambda blob: bz2.BZ2Decompressor().decompress(blob),
    ".xz": lambda blob: lzma.LZMADecompressor().decompress(blob),
    ".zst": lambda blob: zstandard.ZstdDecompressor().decompressobj().decompress(blob),
}
#: Damage kinds; each leaves a stream e5kit must read up to the damage and then count (or name) once.
DAMAGES = ("truncated", "garbage-after-member", "flipped-bytes")
#: (damage, suffix) for every damage of every codec.
DAMAGED_CASES = [(damage, suffix) for damage in DAMAGES for suffix in CODECS]


def damaged(data: bytes, suffix: str, damage: str) -> bytes:
    """``data`` compressed with ``suffix``'s codec and damaged:

    * truncated: the compressed stream cut at 85 % (a download cut short);
    * garbage-after-member: the first half of the lines as one complete member/stream/frame, then
      bytes that are not a stream (what a corrupt second stream of pbzip2 or a concatenated dump looks like);
    * flipped-bytes: 16 bytes in the middle of the stream inverted (each codec's checksum catches it).
    """
    compress = CODECS[suffix]
    if damage == "truncated":
        blob = compress(data)
        return blob[: int(len(blob) * 0.85)]
    if damage == "garbage-after-member":
        lines = data.splitlines(keepends=True)
        return compress(b"".join(lines[: len(lines) // 2])) + b"\x17not a compressed stream\x00" * 4
    if damage == "flipped-bytes":
        blob = bytearray(compress(data))
        middle = len(blob) // 2
        blob[middle : middle + 16] = bytes(255 - b for b in blob[middle : middle + 16])
        return bytes(blob)
    raise ValueError(damage)


def complete_lines_before_cut(blob: bytes, suffix: str) -> int:
    """Complete lines a correct reader gives out of a cut stream (a reference decompressor's view)."""
    return _REFERENCE[suffix](blob).count(b"\n")


def write(path: Path, data: bytes, damage: str | None = None) -> Path:
    """Write ``data`` to ``path``: compressed by its suffix (and damaged when asked), or plain."""
    suffix = path.suffix
    if suffix in CODECS:
        data = damaged(data, suffix, damage) if damage else CODECS[suffix](data)
    path.write_bytes(data)
    return path


def unreadable_paths(folder: Path) -> dict[str, Path]:
    """Paths that are not readable input files, by kind: a folder, a FIFO, a dangling symbolic link,
    an archive suffix e5kit does not read, and (when not running as root, where permission bits do
    not stop reads) a file without read permission."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"folder": folder / "a-folder.jsonl"}
    paths["folder"].mkdir()
    paths["fifo"] = folder / "a-fifo.jsonl"
    os.mkfifo(paths["fifo"])
    paths["dangling-link"] = folder / "a-link.jsonl"
    paths["dangling-link"].symlink_to(folder / "missing-target.jsonl")
    paths["zip-archive"] = folder / "records.zip"
    paths["zip-archive"].write_bytes(b"PK\x03\x04 not read")
    if os.geteuid() != 0:
        paths["no-permission"] = folder / "locked.jsonl"
        paths["no-permission"].write_text("{}\n")
        paths["no-permission"].chmod(0)
    return paths
