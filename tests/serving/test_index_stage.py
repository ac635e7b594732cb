"""``e5kit index build`` as a stage (``e5kit.stage``): OUT/report.json marks a finished build; a rerun with
the same settings, model and corpus is skipped, a changed setting or corpus or --force rebuilds it, a
runtime-only setting does not, and an index no build recorded is replaced only with --force."""

from __future__ import annotations

import json
import os
import shutil

from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.stage import REPORT_FILE

SKIPPED = "done before, skipped"


def _cli(*argv) -> str:
    result = CliRunner().invoke(app, [str(arg) for arg in argv])
    assert result.exit_code == 0, result.output
    return result.output


def test_index_build_is_skipped_when_done_and_rebuilt_when_its_settings_or_corpus_change(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given a corpus and a finished build
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"document {i} about cells and genes"}) + "\n" for i in range(6)))
    out = tmp_path / "idx"
    argv = ["index", "build", "--model", tiny_bert_dir, "--corpus", corpus, "--out", out, "--overlap", "4"]
    _cli(*argv)
    marker = json.loads((out / REPORT_FILE).read_text())
    assert marker["stage"] == "index" and marker["added"] == 6 and marker["outputs"] == {"index": str(out)}
    built = (out / "vectors.faiss").stat().st_mtime_ns
    # When it runs again unchanged, or with only a runtime setting changed, Then nothing is rebuilt
    assert SKIPPED in _cli(*argv) and SKIPPED in _cli(*argv, "--batch-size", "3")
    assert (out / "vectors.faiss").stat().st_mtime_ns == built
    # When a setting changes, Then the index is rebuilt with it
    assert SKIPPED not in _cli(*argv, "--kind", "hnsw")
    assert json.loads((out / "index.json").read_text())["settings"]["kind"] == "hnsw"
    # When the corpus is rewritten, or with --force, Then it is rebuilt
    os.utime(corpus, ns=(1, 1))
    assert "settings or inputs changed" in _cli(*argv, "--kind", "hnsw")
    again = (out / "vectors.faiss").stat().st_mtime_ns
    assert SKIPPED not in _cli(*argv, "--kind", "hnsw", "--force") and (out / "vectors.faiss").stat().st_mtime_ns != again


def test_an_index_no_build_recorded_is_replaced_only_with_force(tmp_path, tiny_bert_dir, single_torch_thread):
    # Given a finished index without a report.json (an older e5kit's, or one the user made by hand)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"document {i} about cells"}) + "\n" for i in range(4)))
    out = tmp_path / "idx"
    argv = ["index", "build", "--model", tiny_bert_dir, "--corpus", corpus, "--out", out]
    _cli(*argv)
    (out / REPORT_FILE).unlink()
    # When built over, Then it is refused, naming --force; with --force it is replaced
    result = CliRunner().invoke(app, [str(arg) for arg in argv])
    assert result.exit_code == 2 and "an index already exists here" in result.output and "--force" in result.output
    _cli(*argv, "--force")
    assert (out / REPORT_FILE).is_file()
    shutil.rmtree(out)
