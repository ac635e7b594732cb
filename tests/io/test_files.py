"""e5kit.io.files: the one decompression layer, the line reader and the output-folder check (read through e5kit.io.tables' strict readers)."""

from __future__ import annotations

import os

import pytest
from corrupt_corpus import CODECS, DAMAGED_CASES, complete_lines_before_cut, unreadable_paths, write

from e5kit.io.files import (
    CorruptStream,
    InputFormatError,
    InputPathError,
    OutputPathError,
    check_input_file,
    content_suffix,
    iter_byte_lines,
    writable_file,
    writable_folder,
)
from e5kit.io.tables import iter_jsonl, read_texts

LINES = [f"line {i} of a text file".encode() for i in range(20000)]  # about 500 kB: several bz2 and zstd blocks
DATA = b"\n".join(LINES) + b"\n"


@pytest.mark.parametrize("suffix", ["", *CODECS, ".GZ"])
def test_every_codec_gives_every_line(tmp_path, suffix):
    # Given the same lines plain and compressed (suffixes in any case)
    path = tmp_path / f"texts.txt{suffix}"
    path.write_bytes(CODECS.get(suffix.lower(), bytes)(DATA))
    # When read, then every line comes out in order
    assert [line for _, line in iter_byte_lines(path)] == LINES


@pytest.mark.parametrize("suffix", list(CODECS))
def test_concatenated_members_are_all_read(tmp_path, suffix):
    # Given two complete members/streams/frames back to back (pbzip2, cat a.gz b.gz, multi-frame zstd)
    path = tmp_path / f"texts.txt{suffix}"
    path.write_bytes(CODECS[suffix](b"a\nb\n") + CODECS[suffix](b"c\n"))
    # When read, then both are read
    assert [line for _, line in iter_byte_lines(path)] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(("damage", "suffix"), DAMAGED_CASES, ids=lambda value: value)
def test_damage_raises_after_the_lines_before_it(tmp_path, damage, suffix):
    # Given a damaged stream
    path = write(tmp_path / f"texts.txt{suffix}", DATA, damage)
    # When read line by line
    seen = []
    with pytest.raises(CorruptStream) as error:
        for _number, line in iter_byte_lines(path):
            seen.append(line)
    # Then the lines before the damage came out, and the error names the file, the line of the cut and the codec
    assert seen == LINES[: len(seen)]
    assert error.value.line == len(seen) + 1
    assert str(error.value).startswith(f"{path}:{len(seen) + 1}: truncated or corrupt ")
    if damage == "truncated":
        assert len(seen) == complete_lines_before_cut(path.read_bytes(), suffix) > 0


def test_crlf_lines_and_empty_files(tmp_path):
    # Given a CRLF file and empty files (plain and compressed)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a\r\nb\r\nc")
    empty = [tmp_path / f"empty.txt{suffix}" for suffix in ["", *CODECS]]
    for path in empty:
        path.write_bytes(b"")
    # When read, then CR is no part of a line, and an empty file has no lines (not a cut stream)
    assert read_texts(crlf) == ["a", "b", "c"]
    assert all(list(iter_byte_lines(path)) == [] for path in empty)


def test_strict_readers_name_file_and_line(tmp_path):
    # Given JSONL with invalid UTF-8 on line 2, and a truncated gzip of JSONL
    invalid = write(tmp_path / "docs.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    cut = write(tmp_path / "docs.jsonl.gz", b"".join(b'{"text": "line %d"}\n' % i for i in range(5000)), "truncated")
    # When read strictly, then each is an InputFormatError naming the file and line
    with pytest.raises(InputFormatError, match=rf"^{invalid}:2: invalid UTF-8"):
        list(iter_jsonl(invalid))
    with pytest.raises(InputFormatError, match=rf"^{cut}:\d+: truncated or corrupt gzip stream"):
        read_texts(cut)


def test_paths_that_are_not_readable_files_are_refused_before_reading(tmp_path):
    # Given every kind of path that is not a readable file (a FIFO would block an open() forever)
    for kind, path in unreadable_paths(tmp_path).items():
        # When checked or read, then the error names the path
        expected = FileNotFoundError if kind == "dangling-link" else InputPathError
        with pytest.raises(expected, match=str(path)):
            check_input_file(path)
        with pytest.raises(expected, match=str(path)):
            read_texts(path)


def test_content_suffix_leaves_compression_out():
    assert [content_suffix(name) for name in ("corpus.JSONL.gz", "a.tsv.bz2.zst", "Posts.xml", "README")] == [".jsonl", ".tsv", ".xml", ""]


def test_writable_folder_checks_without_creating(tmp_path):
    # Given a new nested folder, a file where a folder is wanted, and a path below a file
    (tmp_path / "file").write_text("x")
    # When checked, then the new folder passes and the others are named errors
    assert writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(OutputPathError, match=rf"{tmp_path / 'file'}: exists and is not a folder"):
        writable_folder(tmp_path / "file")
    with pytest.raises(OutputPathError, match=rf"{tmp_path / 'file' / 'sub'}: cannot create the output folder \({tmp_path / 'file'} is a file"):
        writable_folder(tmp_path / "file" / "sub")
    with pytest.raises(OutputPathError, match=rf"{tmp_path}: is a folder; an output file is needed"):
        writable_file(tmp_path)
    # And nothing was created or left behind (the probe file is gone)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_writable_folder_refuses_a_read_only_folder(read_only_folder):
    # Given a folder files cannot be created in; when it or a folder inside it is checked, then the error names it
    with pytest.raises(OutputPathError, match=rf"{read_only_folder}: output folder is not writable"):
        writable_folder(read_only_folder)
    with pytest.raises(OutputPathError, match=rf"{read_only_folder / 'run'}: cannot create the output folder \({read_only_folder} is not writable"):
        writable_folder(read_only_folder / "run")


# ------------------------------------------------------------------------------------ atomic outputs
def test_an_atomic_file_replaces_the_old_one_only_when_committed_and_writers_never_share_a_name(tmp_path):
    from e5kit.io.files import AtomicFile

    # Given an existing output and two writers of it (a rerun started while an old worker still writes)
    path = tmp_path / "shard.parquet"
    path.write_text("old")
    first, second = AtomicFile(path), AtomicFile(path)
    assert first.temporary != second.temporary and first.temporary.parent == tmp_path
    assert first.temporary.name.startswith(f".shard.parquet.{os.getpid()}.") and first.temporary.suffix == ".tmp"
    first.temporary.write_text("first")
    second.temporary.write_text("second")
    # When neither has committed, then the old file is still there
    assert path.read_text() == "old"
    # When both commit, then the last one wins and no temporary file is left (no FileNotFoundError)
    first.commit()
    second.commit()
    assert path.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["shard.parquet"]


def test_an_atomic_file_whose_writer_fails_leaves_the_old_file(tmp_path):
    from e5kit.io.files import AtomicFile, write_text_atomic

    # Given an existing output
    path = write_text_atomic(tmp_path / "report.json", "{}")
    # When a write fails midway, then the old file stays and the temporary one is gone
    with pytest.raises(RuntimeError), AtomicFile(path) as staged:
        staged.temporary.write_text('{"half": ')
        raise RuntimeError("killed")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_stale_temporaries_of_ended_processes_are_removed_and_those_of_running_ones_kept(tmp_path):
    import subprocess
    import sys

    from e5kit.io.files import remove_stale_temporaries, temporary_path

    # Given temporary files and folders of an ended process, one of this (running) process, and other files
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(ended.stdout)
    live = temporary_path(tmp_path / "a.parquet")
    live.write_text("being written")
    dead_file = tmp_path / live.name.replace(f".{os.getpid()}.", f".{dead_pid}.")
    dead_file.write_text("half")
    dead_folder = tmp_path / f".step-00000003.{dead_pid}.0123456789ab.tmp"
    dead_folder.mkdir()
    (dead_folder / "state.pt").write_text("half")
    (tmp_path / "keep.tmp").write_text("not ours")
    # When cleaning, then only the ended process's temporaries go
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "keep.tmp"])


def test_stale_temporaries_can_be_limited_to_one_file(tmp_path):
    from e5kit.io.files import remove_stale_temporaries

    # Given stale temporaries of two files in a folder e5kit does not own (no system hands out pid 999999999)
    for name in ("mined.jsonl", "other.jsonl"):
        (tmp_path / f".{name}.999999999.0123456789ab.tmp").write_text("half")
    # When cleaning those of one file, then the other's stay
    assert remove_stale_temporaries(tmp_path, "mined.jsonl") == 1
    assert [p.name for p in tmp_path.iterdir()] == [".other.jsonl.999999999.0123456789ab.tmp"]


def test_an_atomic_folder_replaces_the_old_one_only_when_committed(tmp_path):
    from e5kit.io.files import AtomicFolder

    # Given an existing model folder, and a new one being written beside it
    final = tmp_path / "final"
    final.mkdir()
    (final / "model.safetensors").write_text("old")
    staged = AtomicFolder(final)
    (staged.temporary / "model.safetensors").write_text("new")
    (staged.temporary / "sub").mkdir()
    (staged.temporary / "sub" / "config.json").write_text("{}")
    # When it has not committed, then the old folder is whole and the new one is hidden
    assert [p.name for p in final.iterdir()] == ["model.safetensors"] and staged.temporary.name.startswith(".final.")
    # When it commits, then the new folder is in place and nothing else is left
    staged.commit()
    assert (final / "model.safetensors").read_text() == "new" and (final / "sub" / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_an_atomic_folder_whose_writer_fails_leaves_the_old_folder_and_a_killed_ones_leftovers_go(tmp_path):
    from e5kit.io.files import AtomicFolder

    # Given an existing folder, and what a killed write of it left (a dead process's temporary folder)
    final = tmp_path / "final"
    final.mkdir()
    (final / "a").write_text("old")
    (tmp_path / ".final.999999999.0123456789ab.tmp").mkdir()
    # When a write fails midway, then the old folder stays and no temporary folder is left
    with pytest.raises(RuntimeError), AtomicFolder(final) as staged:
        (staged.temporary / "a").write_text("half")
        raise RuntimeError("killed")
    assert (final / "a").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["final"]


def test_an_atomic_folder_refuses_to_replace_a_folder_of_another_kind(tmp_path):
    from e5kit.io.files import AtomicFolder, OutputPathError

    # Given a folder of the user's files named as a model's output (`--out .` by mistake)
    (tmp_path / "notes.txt").write_text("mine")
    # When a model folder would replace it, then it is refused by name and left as it was
    with pytest.raises(OutputPathError, match=rf"{tmp_path}: exists and holds no config.json; not replacing it"):
        AtomicFolder(tmp_path, replaces="config.json")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_unique_names_add_parent_folders_only_where_two_data_sets_share_a_name():
    # Given two held-out "news" splits and a SciFact folder, When they are named, Then each name is unique and short
    from e5kit.io.files import unique_names

    assert unique_names(["a/heldout/news", "b/heldout/news", "../shared/beir/scifact"]) == ["a/heldout/news", "b/heldout/news", "scifact"]
    assert unique_names(["runs/x/news", "runs/y/news"]) == ["x/news", "y/news"]
