"""Reading input files and checking output folders, with errors that name the file (and line).

This is e5kit's one decompression layer: every input the package reads (curation dumps, evaluation
and index files, fine-tuning data) comes through :func:`iter_chunks`, which picks the codec from the
file name's last suffix, in any case: ``.gz``, ``.bz2``, ``.xz``/``.lzma`` and ``.zst`` are
decompressed, any other suffix is read as it is; archive suffixes e5kit cannot read (``.zip``,
``.7z``, ...) are refused. Each codec runs through one loop (:func:`_decompressed_chunks`) over the
standard library's and zstandard's incremental decompressors, so every codec follows one rule:
concatenated members/streams/frames are all read (pbzip2, multi-member gzip, multi-frame zstd), and a
stream that ends early or holds bytes that do not decompress is an error, never a silent end. (The
file classes ``bz2.BZ2File`` and ``lzma.LZMAFile``, which fsspec also uses, end quietly at a corrupt
second stream, and fsspec's zstd codec ends quietly at a cut.)

Failure modes, all named:

* A path that is not a readable regular file (missing, a dangling symbolic link, a folder, a FIFO or
  device, no permission) is refused before a byte is read: ``FileNotFoundError`` when missing, else
  :class:`InputPathError`. :func:`check_input_file` runs the same check up front.
* A cut or corrupt compressed stream raises :class:`CorruptStream` after every byte that could be
  decompressed before the damage was given out; line readers raise it after the last complete line.
* :func:`iter_text_lines` reads in one of two modes. Strict (no ``skips``): the first bad line (invalid
  UTF-8) raises :class:`InputFormatError` ``"path:line: ..."``, a cut stream :class:`CorruptStream`.
  Counted (a :class:`Skips` sink, e.g. curation's ``SkipCounter``): each is passed over and counted
  under its reason with file and line (:data:`INVALID_UTF8`, :data:`TRUNCATED`, :data:`UNREADABLE`).
  The table reader above it (``e5kit.io.tables``: JSONL, TSV, CSV) follows the same two modes.

Lines are split on ``\\n``; a trailing ``\\r`` is removed (CRLF files read like LF files).

Outputs are written whole or not at all: :class:`AtomicFile` writes under a temporary name unique to
the process and call (``.NAME.PID.RANDOM.tmp`` beside the file) and renames it onto the file only when
complete, so a run killed mid-write (kill -9) leaves the previous file or none, and a rerun started while
an old process still writes the same file never collides with it; :class:`AtomicFolder` does the same
for a whole folder (a model, a checkpoint, a set of shards). :func:`remove_stale_temporaries` clears the
temporary files and folders of processes that no longer run.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol, Self

#: Bytes read from disk at a time (a compressed chunk of text decompresses to a few MB at most).
CHUNK_BYTES = 1 << 16
#: The input path that means standard input (``e5kit encode -i -``, ``e5kit search IDX -``).
STDIN = "-"
#: File-name suffix (lower case) -> codec e5kit decompresses.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".lzma": "lzma", ".zst": "zstd"}
COMPRESSED_SUFFIXES = tuple(COMPRESSIONS)
#: Suffixes of archives and compressions e5kit does not read: refused by name rather than read as text.
UNREADABLE_SUFFIXES = (".zip", ".7z", ".rar", ".tar", ".tgz", ".lz4", ".br", ".sz", ".z")

# Skip reasons of the counted mode (a report's keys, so they read as prose).
INVALID_UTF8 = "invalid UTF-8"
TRUNCATED = "truncated or corrupt compressed stream"
UNREADABLE = "unreadable file"


class InputFormatError(ValueError):
    """An input file cannot be read as records; the message names the file (and line)."""


class InputPathError(InputFormatError):
    """An input path is not a readable regular file (a folder, a FIFO, no permission, an unsupported
    compression); the message names it."""


class CorruptStream(InputFormatError):
    """A compressed stream is cut or corrupt.

    Attributes:
        path: The file.
        line: The line at the cut (one more than the last complete line), when read by lines; else None.
        codec: The compression (gzip, bz2, xz, lzma, zstd).
        detail: The codec's own words, when it gave any.
    """

    def __init__(self, path: str | Path, codec: str, line: int | None = None, detail: str = "") -> None:
        self.path, self.codec, self.line, self.detail = Path(path), codec, line, detail
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: truncated or corrupt {codec} stream{f' ({detail})' if detail else ''}")

    def at_line(self, line: int) -> CorruptStream:
        """The same error, placed at ``line``."""
        return CorruptStream(self.path, self.codec, line, self.detail)


class OutputPathError(ValueError):
    """An output folder cannot be created or written; the message names it."""


class Skips(Protocol):
    """Where a reader in counted mode reports each unit it passes over: ``reason`` with its ``file`` and
    ``line`` (1-based; None: unknown). Curation's ``e5kit.data.skips.SkipCounter`` and the fine-tuning
    formats' ``RecordIssues`` are such sinks."""

    def add(self, reason: str, file: str | Path | None, line: int | None = None) -> None: ...


def skip_or_raise(skips: Skips | None, reason: str, path: str | Path, line: int | None, detail: str = "") -> None:
    """Count a malformed unit in ``skips`` under ``reason``, or, in strict mode (``skips`` None), refuse it.

    Raises:
        InputFormatError: (strict mode only) ``"path:line: detail"`` (``reason`` when no ``detail`` is given).
    """
    if skips is None:
        raise InputFormatError(f"{path}:{line}: {detail or reason}" if line is not None else f"{path}: {detail or reason}")
    skips.add(reason, path, line)


# ------------------------------------------------------------------------------------------- paths
def compression(path: str | Path) -> str | None:
    """The codec of ``path`` by its last suffix (gzip, bz2, xz, lzma, zstd), or None for a plain file.

    Raises:
        InputPathError: an archive or compression e5kit does not read (``.zip``, ``.7z``, ``.tar``, ``.lz4``, ...).
    """
    suffix = Path(path).suffix.lower()
    if suffix in UNREADABLE_SUFFIXES:
        raise InputPathError(f"{path}: {suffix} files are not read (give the plain file, or one compressed with {', '.join(COMPRESSED_SUFFIXES)})")
    return COMPRESSIONS.get(suffix)


def content_suffix(path: str | Path) -> str:
    """The lower-cased suffix that says what a file holds, compression suffixes left out:
    ``.jsonl`` for ``corpus.JSONL.gz``, ``""`` when there is none."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes]
    while suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def find_compressed(folder: str | Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name`` with the first compression suffix that exists
    (``.gz``, ``.bz2``, ``.xz``, ``.lzma``, ``.zst``); None when there is none."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        candidate = Path(folder) / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """A short label per path: its last component, or as many trailing components as make it unique
    among ``paths`` (``a/heldout/news`` and ``b/heldout/news`` -> ``a/heldout/news``, ``b/heldout/news``;
    ``x/scifact`` alone -> ``scifact``), so results keyed by data set never overwrite each other."""
    parts = [Path(path).parts for path in paths]
    names = []
    for own in parts:
        depth = 1
        while depth < len(own) and sum(other[-depth:] == own[-depth:] for other in parts) > 1:
            depth += 1
        names.append("/".join(own[-depth:]))
    return names


def check_input_file(path: str | Path) -> Path:
    """Refuse, before any work, a path that cannot be read as a file; returns it as a Path.

    Raises:
        FileNotFoundError: nothing is there (or a dangling symbolic link), naming the path.
        InputPathError: a folder, a FIFO/socket/device, a file that cannot be opened (permissions),
            or an unsupported compression suffix, naming the path.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        dangling = f" (dangling symbolic link to {os.readlink(path)})" if path.is_symlink() else ""
        raise FileNotFoundError(f"{path}: no such file{dangling}") from None
    except OSError as error:
        raise InputPathError(f"{path}: cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise InputPathError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise InputPathError(f"{path}: is not a regular file (a FIFO, socket or device cannot be read as input)")
    compression(path)
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise InputPathError(f"{path}: cannot be read ({error.strerror})") from None
    return path


def check_replaceable(path: Path, replaces: str | None) -> None:
    """``AtomicFolder``'s rule for what it may replace: no file at ``path``, and (with ``replaces``) no
    non-empty folder without that file, so a folder a user named by mistake (``--out .``) is never removed.

    Raises:
        OutputPathError: naming ``path`` and why.
    """
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: exists and is not a folder (an output folder is needed)")
    if replaces is not None and path.is_dir() and any(path.iterdir()) and not (path / replaces).exists():
        raise OutputPathError(f"{path}: exists and holds no {replaces}; not replacing it (give a new or empty folder)")


def writable_folder(path: str | Path, existing: tuple[str, ...] = (), replaces: str | None = None) -> Path:
    """Check that ``path`` is, or can be created as, a folder in which files can be written, so a stage
    fails before its expensive work (loading a model). Nothing is created: a probe file is made and
    removed in ``path``, or in its nearest existing parent when ``path`` does not exist yet.

    Args:
        path: The output folder.
        existing: Names of files in it that will be rewritten in place (an index's store): each one
            that exists must be writable too.
        replaces: For a folder an ``AtomicFolder(path, replaces)`` will write: ``check_replaceable``'s rule.

    Raises:
        OutputPathError: naming the folder (or file), when it is a file, cannot be created (a parent is
            a file or not writable), or is not writable (read-only, permissions, a read-only file system).
    """
    path = Path(path)
    check_replaceable(path, replaces)
    ancestor = path
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        if ancestor == path:
            raise OutputPathError(f"{path}: exists and is not a folder (an output folder is needed)")
        raise OutputPathError(f"{path}: cannot create the output folder ({ancestor} is a file)")
    try:
        handle, probe = tempfile.mkstemp(prefix=".e5kit-write-check-", dir=ancestor)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        if ancestor == path:
            raise OutputPathError(f"{path}: output folder is not writable ({error.strerror})") from None
        raise OutputPathError(f"{path}: cannot create the output folder ({ancestor} is not writable: {error.strerror})") from None
    for name in existing:
        if (path / name).exists() and not os.access(path / name, os.W_OK):
            raise OutputPathError(f"{path / name}: is read-only")
    return path


def writable_file(path: str | Path) -> Path:
    """Check that the output file ``path`` can be written (its folder exists or can be created) before a
    stage's expensive work; nothing is created. Returns ``path``.

    Raises:
        OutputPathError: naming the path, when it is a folder or its folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; an output file is needed")
    writable_folder(path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{path}: is read-only")
    return path


# ------------------------------------------------------------------------------------- atomic outputs
#: A temporary name made by :func:`temporary_path`: ``.NAME.PID.RANDOM.tmp``.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$")


def temporary_path(path: str | Path) -> Path:
    """A fresh name beside ``path`` for writing it (a file or a folder) before it is renamed into place:
    ``.NAME.PID.RANDOM.tmp``, unique to this process and call, hidden, and recognised by
    :func:`remove_stale_temporaries` once its process has ended."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


class _Staged:
    """An output written under a temporary name: as a context manager, committed when the block ends
    normally and discarded when it raises (subclasses give ``commit`` and ``discard``)."""

    def commit(self) -> Path:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


class AtomicFile(_Staged):
    """An output file written under a :func:`temporary_path` and renamed onto ``path`` when complete.

    A run killed mid-write leaves ``path`` as it was (the previous file, or none); two processes writing
    the same file never share a temporary name, and the last to commit wins. As a context manager it
    commits when the block ends normally and discards the temporary file when it raises.

    Example:
        >>> with AtomicFile("report.json") as staged:                         # doctest: +SKIP
        ...     staged.temporary.write_text("{}")

    Attributes:
        path: The file to write.
        temporary: Where to write it first (not created: the writer creates it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.temporary = temporary_path(self.path)

    def commit(self) -> Path:
        """Flush the temporary file to disk and rename it onto ``path``; returns ``path``.

        Raises:
            FileNotFoundError: nothing was written to the temporary name.
            OSError: the rename or the flush failed (the temporary file is removed).
        """
        try:
            with self.temporary.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.temporary, self.path)
        except OSError:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if it was created); ``path`` is left as it was."""
        self.temporary.unlink(missing_ok=True)



class AtomicFolder(_Staged):
    """An output folder (a model, a checkpoint, a set of shards) written under a :func:`temporary_path`
    and renamed onto ``path`` when complete.

    A run killed mid-write leaves ``path`` as it was (the previous folder, or none), never a half folder
    that a later stage would take as complete. An existing folder is first renamed aside (a folder cannot
    be renamed onto a non-empty one), then removed; a kill between the two renames leaves no ``path`` and
    both folders under temporary names, which the next write of ``path`` removes. As a context manager it
    commits when the block ends normally and discards the temporary folder when it raises.

    Example:
        >>> with AtomicFolder("runs/pt/final") as staged:                      # doctest: +SKIP
        ...     model.save_pretrained(staged.temporary)

    Args:
        path: The folder to write.
        replaces: When given, a file name every folder of this kind holds (a model's ``config.json``): an
            existing non-empty folder without it is refused rather than replaced, so a folder a user
            named by mistake (``--out .``) is never removed. Without it, whatever is at ``path`` is replaced.

    Attributes:
        path: The folder to write.
        temporary: Where to write it first (created, empty, with its parents).

    Raises:
        OutputPathError: ``path`` is a file, or (with ``replaces``) a non-empty folder of another kind.
    """

    def __init__(self, path: str | Path, replaces: str | None = None) -> None:
        self.path = Path(path)
        check_replaceable(self.path, replaces)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent, self.path.name)  # what killed writes of this folder left
        self.temporary = temporary_path(self.path)
        self.temporary.mkdir()

    def commit(self) -> Path:
        """Flush every file of the temporary folder to disk and rename it onto ``path``; returns ``path``.

        Raises:
            OSError: a flush or rename failed (the temporary folder is removed, ``path`` is left as it was).
        """
        aside, moved = temporary_path(self.path), False
        try:
            for file in sorted(self.temporary.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    with file.open("rb+") as handle:
                        os.fsync(handle.fileno())
            if self.path.exists() or self.path.is_symlink():
                os.replace(self.path, aside)
                moved = True
            os.replace(self.temporary, self.path)
        except OSError:
            if moved:
                os.replace(aside, self.path)
            self.discard()
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        """Remove the temporary folder; ``path`` is left as it was."""
        shutil.rmtree(self.temporary, ignore_errors=True)



def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through an :class:`AtomicFile`; returns ``path``.

    Raises:
        OSError: the file cannot be written (``path`` is left as it was).
    """
    with AtomicFile(path) as staged:
        staged.temporary.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> int:
    """Remove the temporary files and folders (:func:`temporary_path` names) in ``folder`` whose process
    no longer runs (left by a killed run); those of running processes are kept. With ``name``, only the
    temporaries of that file (for a folder e5kit does not own). Returns how many went."""
    import psutil

    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or psutil.pid_exists(int(match.group(1))) or (name is not None and not entry.name.startswith(f".{name}.")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


# ---------------------------------------------------------------------------------- decompression
def _decompressor(codec: str):
    """A fresh incremental decompressor (``decompress(bytes)``, ``eof``, ``unused_data``) for one member/stream/frame."""
    if codec == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if codec == "bz2":
        return bz2.BZ2Decompressor()
    if codec in ("xz", "lzma"):
        return lzma.LZMADecompressor()
    import zstandard

    return zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj()  # Pushshift dumps use --long=31


def _codec_errors(codec: str) -> tuple[type[Exception], ...]:
    """What the decompressor raises on bytes that do not decompress (bz2: OSError)."""
    if codec == "zstd":
        import zstandard

        return (zstandard.ZstdError,)
    return (zlib.error, lzma.LZMAError, OSError)


def _decompressed_chunks(handle: IO[bytes], path: Path, codec: str) -> Iterator[bytes]:
    """The decompressed bytes of every concatenated member/stream/frame of ``handle``.

    Raises:
        CorruptStream: bytes that do not decompress (also after a complete member: never ignored), or a
            stream that ends before its end marker; always after the bytes decompressed before.
    """
    errors = _codec_errors(codec)
    data = handle.read(CHUNK_BYTES)
    if not data:
        return  # an empty file is an empty input
    decompressor = _decompressor(codec)
    while True:
        try:
            output = decompressor.decompress(data)
        except errors as error:
            raise CorruptStream(path, codec, detail=str(error)) from error
        if output:
            yield output
        if decompressor.eof:  # this member ended; anything after it must be another complete one
            data = decompressor.unused_data or handle.read(CHUNK_BYTES)
            if not data:
                return
            decompressor = _decompressor(codec)
            continue
        data = handle.read(CHUNK_BYTES)
        if not data:
            raise CorruptStream(path, codec, detail="the stream ends before its end marker")


def iter_chunks(path: str | Path) -> Iterator[bytes]:
    """The decompressed bytes of ``path``, chunk by chunk (plain files: as read, :data:`CHUNK_BYTES` at a time);
    :data:`STDIN` reads standard input, uncompressed.

    Raises:
        FileNotFoundError, InputPathError: before reading (see :func:`check_input_file`).
        CorruptStream: after the last bytes that decompressed, when the stream is cut or corrupt.
        OSError: a read error.
    """
    if str(path) == STDIN:
        yield from iter(lambda: sys.stdin.buffer.read(CHUNK_BYTES), b"")
        return
    path = check_input_file(path)
    codec = compression(path)
    with path.open("rb") as handle:
        if codec is None:
            while data := handle.read(CHUNK_BYTES):
                yield data
        else:
            yield from _decompressed_chunks(handle, path, codec)


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        self._chunks.close()
        super().close()


def open_binary(path: str | Path) -> IO[bytes]:
    """A binary file object of the decompressed bytes of ``path`` (for parsers that want a stream, e.g. WARC).

    Raises:
        FileNotFoundError, InputPathError: at once (see :func:`check_input_file`).
        CorruptStream: from ``read`` when the stream is cut or corrupt, after the bytes before it.
    """
    check_input_file(path)  # now, not at the first read of the (lazy) chunks
    return io.BufferedReader(_ChunkReader(iter_chunks(path)), CHUNK_BYTES)


# ------------------------------------------------------------------------------------------- lines
def iter_byte_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line without ``\\n`` or ``\\r\\n``) for every line, blank ones included.

    Raises:
        FileNotFoundError, InputPathError: before reading.
        CorruptStream: with ``line`` set to the line at the cut, after every complete line before it
            (the partial line of a cut stream is not a record and is not given out).
        OSError: a read error of a plain file.
    """
    number = 0
    rest = b""
    try:
        for chunk in iter_chunks(path):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                number += 1
                yield number, raw[:-1] if raw.endswith(b"\r") else raw
    except CorruptStream as error:
        raise error.at_line(number + 1) from error.__cause__
    if rest:
        yield number + 1, rest[:-1] if rest.endswith(b"\r") else rest


def decode_line(path: str | Path, line_number: int, raw: bytes) -> str:
    """``raw`` as UTF-8 text.

    Raises:
        InputFormatError: ``"path:line: invalid UTF-8 (byte N ...)"``.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFormatError(f"{path}:{line_number}: invalid UTF-8 (byte {error.start + 1} of the line: {error.reason})") from None


def iter_text_lines(path: str | Path, skips: Skips | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line of a UTF-8 file, blank ones included.

    Strict mode (``skips`` None) raises at the first bad line; counted mode passes over an undecodable line
    (:data:`INVALID_UTF8`), and ends the file at a cut or corrupt stream (:data:`TRUNCATED`, at the line of
    the cut, after every complete line before it) or a file that became unreadable after the up-front check
    (:data:`UNREADABLE`), each counted in ``skips`` with its location.

    Raises:
        FileNotFoundError, InputPathError: (strict mode) before reading (see :func:`check_input_file`).
        InputFormatError: (strict mode) ``"path:line: invalid UTF-8 ..."``.
        CorruptStream: (strict mode) at the cut, after the lines before it.
    """
    if skips is None:
        for line_number, raw in iter_byte_lines(path):
            yield line_number, decode_line(path, line_number, raw)
        return
    number = 0
    try:
        for number, raw in iter_byte_lines(path):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                skips.add(INVALID_UTF8, path, number)
                continue
            yield number, text
    except CorruptStream as error:
        skips.add(TRUNCATED, path, error.line)  # the partial last line of a cut stream is not a record
    except (OSError, ValueError):  # vanished or became unreadable after the up-front check
        skips.add(UNREADABLE, path, number + 1 if number else None)
