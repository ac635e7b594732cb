"""The ``e5kit`` command line: version, help, encode, similarity, and their errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit import __version__
from e5kit.cli import app
from e5kit.encoder import Encoder

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", [[], ["encode"], ["similarity"], ["demo"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_encode_txt_writes_rows_in_line_order(tiny_bert_dir, tmp_path):
    # Given a text file of three lines
    (tmp_path / "texts.txt").write_text("the cat sat\nhow do cells divide\npython reads files\n")
    # When encoded as queries
    result = runner.invoke(
        app,
        ["encode", "--model", str(tiny_bert_dir), "--role", "query", "--input", str(tmp_path / "texts.txt"),
         "--output", str(tmp_path / "emb.npy"), "--device", "cpu"],
    )
    # Then the matrix has one row per line, equal to the library's query embeddings
    assert result.exit_code == 0, result.output
    assert "prefix 'query: '" in result.output
    matrix = np.load(tmp_path / "emb.npy")
    expected = Encoder.load(tiny_bert_dir, device="cpu").encode_queries(["the cat sat", "how do cells divide", "python reads files"])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)


def test_encode_gzipped_jsonl_with_field(tiny_bert_dir, tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for text in ("cells divide", "cats sit"):
            handle.write(json.dumps({"body": text}) + "\n")
    result = runner.invoke(
        app,
        ["encode", "-m", str(tiny_bert_dir), "-r", "passage", "-i", str(path), "-o", str(tmp_path / "e.npy"),
         "--field", "body", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "e.npy").shape == (2, 32)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"text": "fine"}\n{"text": \n', ".jsonl", "docs.jsonl:2: invalid JSON"),
        ('{"text": "fine"}\n{"title": "no text"}\n', ".jsonl", "docs.jsonl:2: field 'text' is missing"),
        ("fine\n\nother\n", ".txt", "docs.txt:2: line without visible text"),
        # zero-width characters only: the encoder would refuse it mid-run; the reader names the line first
        ("fine\n\u200b\u2060\nother\n", ".txt", "docs.txt:2: line without visible text"),
        ('{"text": "fine"}\n{"text": "\u200b"}\n', ".jsonl", "docs.jsonl:2: field 'text' is missing, not a string or has no visible text"),
    ],
)
def test_encode_bad_input_names_file_and_line(tiny_bert_dir, tmp_path, content, suffix, message):
    path = tmp_path / f"docs{suffix}"
    path.write_text(content)
    result = runner.invoke(
        app, ["encode", "-m", str(tiny_bert_dir), "-r", "query", "-i", str(path), "-o", str(tmp_path / "e.npy")]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "e.npy").exists()


def test_encode_missing_model_file_is_a_clean_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "t.txt").write_text("hello\n")
    result = runner.invoke(
        app, ["encode", "-m", str(tmp_path / "model"), "-r", "query", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "e.npy")]
    )
    assert result.exit_code == 2 and "missing config.json" in result.output


def test_similarity_prints_cosine(tiny_bert_dir):
    same = runner.invoke(app, ["similarity", "-m", str(tiny_bert_dir), "cells divide", "cells divide", "--device", "cpu"])
    assert same.exit_code == 0, same.output
    assert float(same.stdout.strip().splitlines()[-1]) == pytest.approx(1.0, abs=1e-4)
    different = runner.invoke(app, ["similarity", "-m", str(tiny_bert_dir), "cells divide", "the blue sky", "--device", "cpu"])
    assert float(different.stdout.strip().splitlines()[-1]) < 0.9999


def test_encode_without_role_for_a_model_without_prompts_and_to_standard_output(tiny_unnormalized_dir, tiny_bert_dir, tmp_path):
    import io

    (tmp_path / "texts.txt").write_text("the cat sat\npython reads files\n")
    # Given a model without prompts, When encoded without --role to standard output (-)
    result = runner.invoke(app, ["encode", "-m", str(tiny_unnormalized_dir), "-i", str(tmp_path / "texts.txt"), "-o", "-", "--device", "cpu"])
    # Then standard output holds exactly the .npy array (the report goes to standard error)
    assert result.exit_code == 0, result.output
    matrix = np.load(io.BytesIO(result.stdout_bytes))
    expected = Encoder.load(tiny_unnormalized_dir, device="cpu").encode(["the cat sat", "python reads files"])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    assert not (tmp_path / "-.npy").exists() and not (tmp_path / "-").exists()
    # And a model with prompts still needs a role: one line names the choices
    refused = runner.invoke(app, ["encode", "-m", str(tiny_bert_dir), "-i", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "e.npy")])
    assert refused.exit_code == 2 and "no role given" in refused.output and "--role" in refused.output


def test_similarity_names_the_text_without_visible_text(tiny_bert_dir):
    # Given an empty second text, When compared, Then the error names TEXT_B (not "index 0"), exit 2
    result = runner.invoke(app, ["similarity", "-m", str(tiny_bert_dir), "a cat", "\u200b "])
    assert result.exit_code == 2 and "TEXT_B: no visible text" in result.output
