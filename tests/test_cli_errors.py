"""Errors of every stage are one line, ``error: ...``, naming the file (and line), exit code 2, no
traceback: output folders that cannot be written (checked before a model loads), damaged evaluation
and index inputs, and an index that cannot be written (issue 14, item 4)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from corrupt_corpus import unreadable_paths, write
from typer.testing import CliRunner

from e5kit.cli.app import app

NO_MODEL = "no-such-model-anywhere"  # loading it fails: an error naming an output path proves the check ran first


def assert_one_line_error(result, *names: object) -> None:
    """Exit 2 and a single ``error: `` line that names each of ``names``."""
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for name in names:
        assert str(name) in result.output, (name, result.output)


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Small valid inputs of every stage."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about cells"}) + "\n" for i in range(4)))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "cells"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\n")
    mined = tmp_path / "mined.jsonl"
    mined.write_text(json.dumps({"query": "cells", "pos": ["document 1 about cells"], "neg": ["document 2"]}) + "\n")
    news = tmp_path / "news.jsonl"
    news.write_text(json.dumps({"title": "Headline", "text": "A story with words"}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "passage": "p"}) + "\n")
    return {"beir": beir, "mined": mined, "news": news, "pairs": pairs}


def stage_commands(inputs: dict[str, Path], out: Path) -> dict[str, tuple[list[str], Path]]:
    """Each writing stage's command line with its output at (or under) ``out``, and the folder its error names."""
    beir = inputs["beir"]
    return {
        "curate": (["curate", "--set", f"output_dir={out}", "--set", f"sources=[{{type: news, paths: ['{inputs['news']}']}}]"], out),
        "eval": (["eval", "retrieval", "--model", NO_MODEL, "--data", str(beir), "--results-dir", str(out), "--no-cache"], out),
        "index build": (["index", "build", "--corpus", str(beir / "corpus.jsonl"), "--out", str(out), "--model", NO_MODEL], out),
        "pretrain": (["pretrain", "--set", f"init_model={NO_MODEL}", "--set", f"data.paths=[{inputs['pairs']}]", "--set", f"output_dir={out}", "--set", "max_steps=1"], out),
        "finetune": (["finetune", "--set", f"init_model={NO_MODEL}", "--set", f"output_dir={out}",
                      "--set", f"data.datasets=[{{name: m, format: flag, path: '{inputs['mined']}'}}]"], out),
        "mine-negatives": (["mine-negatives", "--model", NO_MODEL, "--queries", str(beir / "queries.jsonl"), "--corpus", str(beir / "corpus.jsonl"),
                            "--positives", str(beir / "qrels" / "test.tsv"), "--out", str(out / "mined.jsonl")], out),
        "score-teacher": (["score-teacher", "--teacher", NO_MODEL, "--in", str(inputs["mined"]), "--out", str(out / "scored.jsonl")], out),
        "filter consistency": (["filter", "consistency", "--pairs", str(inputs["pairs"]), "--model", NO_MODEL, "--output", str(out)], out),
        "encode": (["encode", "--model", NO_MODEL, "--role", "query", "--input", str(inputs["news"]), "--output", str(out / "embeddings.npy")], out),
    }


STAGES = ["curate", "eval", "index build", "pretrain", "finetune", "mine-negatives", "score-teacher", "filter consistency", "encode"]


@pytest.mark.parametrize("stage", STAGES)
def test_an_output_folder_below_a_file_is_named_before_the_model_loads(tmp_path, inputs, stage):
    # Given an output folder that cannot be created (a file stands where its parent should be)
    (tmp_path / "a-file").write_text("x")
    argv, folder = stage_commands(inputs, tmp_path / "a-file" / "out")[stage]
    # When the stage runs
    result = CliRunner().invoke(app, argv)
    # Then one line names the folder (not the missing model: the check runs before loading it)
    assert_one_line_error(result, folder, "cannot create the output folder")


@pytest.mark.parametrize("stage", STAGES)
def test_a_read_only_output_folder_is_named_before_the_model_loads(inputs, read_only_folder, stage):
    # Given an output folder in which no file can be created
    argv, folder = stage_commands(inputs, read_only_folder)[stage]
    # When the stage runs, then one line names it
    result = CliRunner().invoke(app, argv)
    assert_one_line_error(result, folder, "not writable")


# --------------------------------------------------------------------------- damaged eval and index inputs
INVALID_UTF8 = b'{"_id": "d0", "title": "", "text": "ok"}\n{"_id": "d1", "title": "", "text": "caf\xe9"}\n'
MANY_DOCS = b"".join(b'{"_id": "d%d", "title": "", "text": "document %d about cells"}\n' % (i, i) for i in range(20000))


def damaged_corpus(folder: Path, damage: str) -> Path:
    """corpus.jsonl with invalid UTF-8 on line 2, or a cut .gz / .bz2 / .zst of a large corpus."""
    if damage == "invalid-utf8":
        return write(folder / "corpus.jsonl", INVALID_UTF8)
    return write(folder / f"corpus.jsonl{damage}", MANY_DOCS, "truncated")


CORPUS_DAMAGES = ["invalid-utf8", ".gz", ".bz2", ".zst"]


def expected_location(path: Path, damage: str) -> str:
    return f"{path}:2: invalid UTF-8" if damage == "invalid-utf8" else f"{path}:"


@pytest.mark.parametrize("damage", CORPUS_DAMAGES)
def test_eval_retrieval_names_a_damaged_corpus_and_line(tmp_path, inputs, damage):
    # Given a BEIR folder whose corpus is damaged
    beir = inputs["beir"]
    (beir / "corpus.jsonl").unlink()
    corpus = damaged_corpus(beir, damage)
    # When evaluated (BM25: no model needed)
    result = CliRunner().invoke(app, ["eval", "retrieval", "--model", "bm25", "--data", str(beir), "--results-dir", str(tmp_path / "results")])
    # Then one line names the file and line (it was a 47-line traceback, or "Aborted!" for a cut .gz)
    assert_one_line_error(result, expected_location(corpus, damage))


@pytest.mark.parametrize("damage", ["invalid-utf8", ".gz"])
def test_eval_table_tasks_name_a_damaged_file_and_line(tmp_path, tiny_bert_dir, damage):
    # Given an STS split with invalid UTF-8 on line 2, or cut
    folder = tmp_path / "sts"
    folder.mkdir()
    if damage == "invalid-utf8":
        path = write(folder / "test.tsv", b"sentence1\tsentence2\tscore\nthe caf\xe9\ta cat\t3\n")
    else:
        rows = b"sentence1\tsentence2\tscore\n" + b"".join(b"a cat %d\ta dog %d\t%d\n" % (i, i, i % 5) for i in range(20000))
        path = write(folder / "test.tsv.gz", rows, "truncated")
    # When evaluated
    result = CliRunner().invoke(app, ["eval", "sts", "--model", str(tiny_bert_dir), "--data", str(tmp_path / "sts"),
                                      "--results-dir", str(tmp_path / "results"), "--no-cache"])
    # Then one line names the file and line
    assert_one_line_error(result, expected_location(path, damage))


@pytest.mark.parametrize("damage", CORPUS_DAMAGES)
@pytest.mark.parametrize("command", ["build", "add"])
def test_index_build_and_add_name_a_damaged_corpus_and_line(tmp_path, damage, command):
    # Given a damaged corpus
    corpus = damaged_corpus(tmp_path, damage)
    # When indexed (read before any model or index is opened)
    argv = ["index", "build", "--out", str(tmp_path / "idx"), "--model", NO_MODEL] if command == "build" else ["index", "add", str(tmp_path / "idx")]
    result = CliRunner().invoke(app, [*argv, "--corpus", str(corpus)])
    # Then one line names the file and line
    assert_one_line_error(result, expected_location(corpus, damage))


def test_index_delete_names_a_damaged_ids_file(tmp_path):
    # Given an ids file with invalid UTF-8 on line 2
    ids = write(tmp_path / "ids.txt", b"d0\nd\xe91\n")
    # When deleting, then one line names the file and line
    result = CliRunner().invoke(app, ["index", "delete", str(tmp_path / "idx"), "--ids-file", str(ids)])
    assert_one_line_error(result, f"{ids}:2: invalid UTF-8")


# ------------------------------------------------------------------------------------ an unwritable index
@pytest.fixture
def built_index(tmp_path, tiny_bert_dir, inputs) -> Path:
    folder = tmp_path / "idx"
    result = CliRunner().invoke(app, ["index", "build", "--corpus", str(inputs["beir"] / "corpus.jsonl"), "--out", str(folder), "--model", str(tiny_bert_dir)])
    assert result.exit_code == 0, result.output
    return folder


def test_index_add_to_a_read_only_index_is_named(built_index, inputs):
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not make an index read-only (the sqlite fallback is tested below)")
    # Given an index whose store is read-only
    (built_index / "docstore.sqlite").chmod(0o444)
    # When adding, then one line names the store before the model loads
    result = CliRunner().invoke(app, ["index", "add", str(built_index), "--corpus", str(inputs["beir"] / "corpus.jsonl")])
    assert_one_line_error(result, built_index / "docstore.sqlite", "read-only")


@pytest.mark.parametrize("command", ["add", "delete"])
def test_an_index_write_refused_by_sqlite_is_one_line(built_index, inputs, monkeypatch, command):
    from e5kit.serving.index import VectorIndex

    # Given a store that refuses writes (a read-only mount, or a file made read-only after the check)
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(VectorIndex, command, refuse)
    # When adding or deleting
    extra = ["--corpus", str(inputs["beir"] / "corpus.jsonl")] if command == "add" else ["d1"]
    result = CliRunner().invoke(app, ["index", command, str(built_index), *extra])
    # Then one line names the index and what sqlite said
    assert_one_line_error(result, built_index, "readonly database")


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling-link", "zip-archive"])
def test_eval_and_index_inputs_that_are_not_readable_files_are_named(tmp_path, tiny_bert_dir, kind):
    # Given an input path that is not a readable file (a FIFO would block a plain open() forever)
    path = unreadable_paths(tmp_path / "bad")[kind]
    runner = CliRunner()
    # When it is an evaluation split (a folder is looked into for test.tsv), an index corpus or an ids file
    model = str(tiny_bert_dir) if kind == "folder" else NO_MODEL  # a data file is checked before the model loads
    results = [
        runner.invoke(app, ["eval", "sts", "--model", model, "--data", str(path), "--results-dir", str(tmp_path / "results"), "--no-cache"]),
        runner.invoke(app, ["index", "build", "--corpus", str(path), "--out", str(tmp_path / "idx"), "--model", NO_MODEL]),
        runner.invoke(app, ["index", "add", str(tmp_path / "idx"), "--corpus", str(path)]),
        runner.invoke(app, ["index", "delete", str(tmp_path / "idx"), "--ids-file", str(path)]),
    ]
    # Then each is one line naming it
    for result in results:
        assert_one_line_error(result, path)


def test_a_library_message_with_line_breaks_is_printed_as_one_line(tmp_path):
    # Given a valid STS file and a model that cannot be found (the Hub client's message spans lines)
    data = write(tmp_path / "test.tsv", b"sentence1\tsentence2\tscore\na\tb\t1\n")
    # When evaluated, then the error is still one line, naming the model
    result = CliRunner().invoke(app, ["eval", "sts", "--model", NO_MODEL, "--data", str(data), "--results-dir", str(tmp_path / "results")])
    assert_one_line_error(result, NO_MODEL)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is present here")
@pytest.mark.parametrize("stage", ["filter consistency", "encode", "pretrain", "score-teacher"])
def test_a_device_this_machine_lacks_is_one_line_naming_it(tmp_path, inputs, tiny_bert_dir, tiny_cross_encoder_dir, stage):
    # Given a CPU-only machine and a stage asked to run on cuda:1
    command = {
        "filter consistency": ["filter", "consistency", "--pairs", str(inputs["pairs"]), "--model", str(tiny_bert_dir), "--output", str(tmp_path / "out"),
                               "--set", "device=cuda:1"],
        "encode": ["encode", "--model", str(tiny_bert_dir), "--input", str(inputs["news"]), "--output", str(tmp_path / "e.npy"), "--device", "cuda:1"],
        "pretrain": ["pretrain", "--set", f"init_model={tiny_bert_dir}", "--set", f"data.paths=[{inputs['pairs']}]", "--set", f"output_dir={tmp_path / 'pt'}",
                     "--set", "max_steps=1", "--set", "device=cuda:1"],
        "score-teacher": ["score-teacher", "--teacher", str(tiny_cross_encoder_dir), "--in", str(inputs["mined"]), "--out", str(tmp_path / "s.jsonl"),
                          "--device", "cuda:1"],
    }[stage]
    # When it runs
    result = CliRunner().invoke(app, command)
    # Then (after the stage's "running" line) one error line says the device is not available, not torch's assertion
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "device 'cuda:1' is not available" in errors[0], result.output
