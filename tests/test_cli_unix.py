"""Unix conventions of the CLI (issue 18, item 6): ``-`` for standard input in ``encode`` and ``search``,
exit code 2 for bad input and 1 for runtime failures, help text printed as written within 80 columns."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder

runner = CliRunner()


# ------------------------------------------------------------------------------------- standard input


def test_encode_reads_lines_from_standard_input_and_writes_the_array_to_standard_output(tiny_unnormalized_dir):
    # Given two texts on standard input
    # When they are encoded from - to -
    result = runner.invoke(app, ["encode", "-m", str(tiny_unnormalized_dir), "-i", "-", "-o", "-", "--device", "cpu"], input="cells divide\ncats sit\n")
    # Then standard output is the .npy array of the two lines, in order
    assert result.exit_code == 0, result.stderr
    expected = Encoder.load(tiny_unnormalized_dir, device="cpu").encode(["cells divide", "cats sit"])
    np.testing.assert_allclose(np.load(io.BytesIO(result.stdout_bytes)), expected, atol=1e-5)


def test_encode_reads_jsonl_from_standard_input_when_told(tiny_unnormalized_dir, tmp_path):
    # Given JSONL records on standard input
    records = "".join(json.dumps({"body": text}) + "\n" for text in ("cells divide", "cats sit", "the sun"))
    # When encoded with --input-format jsonl and a field
    result = runner.invoke(
        app, ["encode", "-m", str(tiny_unnormalized_dir), "-i", "-", "--input-format", "jsonl", "--field", "body", "-o", str(tmp_path / "e.npy"), "--device", "cpu"],
        input=records,
    )
    # Then every record is one row
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "e.npy").shape == (3, 32)


def test_a_blank_line_on_standard_input_is_named_like_a_file_line(tiny_unnormalized_dir):
    # Given standard input whose second line is blank; When it is encoded
    result = runner.invoke(app, ["encode", "-m", str(tiny_unnormalized_dir), "-i", "-", "-o", "-"], input="cells\n\ncats\n")
    # Then it is a bad-input error naming standard input (-) and the line
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: -:2: line without visible text (every line is one text to embed)"


def test_search_reads_queries_from_standard_input(tiny_bert_dir, tmp_path):
    # Given an index of two documents
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in ({"_id": "d1", "text": "the cat sat"}, {"_id": "d2", "text": "python reads files"})))
    built = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    # When searched with - between two argument queries, and two queries on standard input
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), "first", "-", "last", "-k", "1", "--json"], input="cat on a mat\nread files\n")
    # Then the standard input lines are queries in their place
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["query"] for line in result.stdout.splitlines()] == ["first", "cat on a mat", "read files", "last"]


# ----------------------------------------------------------------------------------------- exit codes


def test_bad_input_exits_with_2(tmp_path):
    # Given an input file that does not exist; When it is encoded
    result = runner.invoke(app, ["encode", "-m", "unused", "-i", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "e.npy")])
    # Then the exit code is 2 with a one-line error naming the file
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "missing.txt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def out_of_memory(monkeypatch):
    """Every model load fails as a GPU out of memory would."""

    def load(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 1.00 GiB free)")

    monkeypatch.setattr(Encoder, "load", load)


def test_a_runtime_failure_exits_with_1_and_one_line(out_of_memory, tmp_path):
    # Given a model load that runs out of memory
    (tmp_path / "t.txt").write_text("cells\n")
    # When a command loads it
    result = runner.invoke(app, ["encode", "-m", "any", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "e.npy")])
    # Then the exit code is 1 and standard error is one line naming the failure, no traceback
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free) (e5kit -v ... shows the traceback)"
    ]


@pytest.mark.parametrize("options", [["-v"], ["--log-level", "debug"]])
def test_a_runtime_failure_shows_its_traceback_when_verbose(out_of_memory, tmp_path, options, restore_root_level):
    (tmp_path / "t.txt").write_text("cells\n")
    # When the failing command runs with -v or --log-level debug
    result = runner.invoke(app, [*options, "encode", "-m", "any", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "e.npy")])
    # Then the traceback comes first, the one-line error last
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: OutOfMemoryError: CUDA out of memory.")


def test_exit_codes_are_documented_in_the_root_help():
    result = runner.invoke(app, ["--help"], terminal_width=80)
    text = " ".join(result.output.split())
    assert "Exit codes: 0 success; 2 bad input" in text and "1 a runtime failure" in text


# --------------------------------------------------------------------------------------------- help


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer's groups are not click.Group subclasses)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def _help_sources(command) -> list[str]:
    """The help strings written for a command: its docstring and each parameter's help."""
    return [command.help or "", command.epilog or ""] + [getattr(param, "help", None) or "" for param in command.params]


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(path) or "e5kit" for path, _ in COMMANDS])
def test_help_keeps_every_bracket_and_fits_80_columns(path, command, monkeypatch):
    # Given a narrow, dumb terminal
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", "80")
    # When the command's help is printed
    result = runner.invoke(app, [*path, "--help"], terminal_width=80)
    # Then every [...] written in its help strings is shown (rich markup would eat them), and no line is wider than 80
    assert result.exit_code == 0, result.output
    # (a line may break after a hyphen, as in "e5kit-<newline>quickstart": the bracket is still shown whole)
    shown = re.sub(r"-\s+", "-", " ".join(result.output.split()))
    for source in _help_sources(command):
        for bracketed in re.findall(r"\[[^\]\n]*\]", " ".join(source.split())):
            assert bracketed in shown, f"{bracketed!r} missing from the help of {' '.join(path)}"
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_a_reader_that_stops_early_ends_the_command_quietly():
    # Given a command whose standard output is a pipe its reader has already closed (`e5kit ... | head -0`)
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "e5kit", "config", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    # When it writes, Then it stops with 128 + SIGPIPE, as Unix tools do, and prints no error or traceback
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "error" not in stderr.lower() and "Traceback" not in stderr


@pytest.mark.parametrize(
    "argv, says",
    [
        (["holdout", "--bogus"], "No such option: --bogus"),
        (["nosuchcmd"], "No such command"),
        (["eval", "retrieval", "--model", "bm25", "--data", ".", "--top-k", "0"], "--top-k"),
        (["search"], "Missing argument"),
    ],
)
def test_usage_errors_exit_with_2_and_name_the_option(argv, says):
    # Given a command line with a usage error, When it runs, Then click's usage message names it, exit 2, not a runtime failure
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert says in result.output and "error: " not in result.output  # e5kit's own lines are lower-case "error: ..."
