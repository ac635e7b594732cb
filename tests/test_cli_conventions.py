"""CLI conventions (issue 18, item 6): models load without the unused pooler (no transformers load
report), ``search --json``, the example configs installed with the package and usable by name,
``quickstart`` config errors on one line, and the global ``--log-level`` / ``-v`` / ``-q`` options."""

from __future__ import annotations

import json
import logging
import shutil
import tomllib
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from e5kit.cli.app import app
from e5kit.config import bundled_configs, load_config, resolve_config
from e5kit.encoder import Encoder
from e5kit.evaluation.cache import weights_hash
from e5kit.evaluation.config import STSConfig

ROOT = Path(__file__).resolve().parents[1]


def copy_without(source: Path, folder: Path, prefix: str) -> Path:
    """``source`` (a Hugging Face checkpoint) copied to ``folder`` with the weights named ``prefix*`` removed."""
    shutil.copytree(source, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor for name, tensor in weights.items() if not name.startswith(prefix)}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


# ---------------------------------------------------------------- the pooler


def test_a_checkpoint_without_pooler_weights_loads_quietly_and_the_same_every_time(tiny_bert_dir, tmp_path, capfd):
    # Given a checkpoint saved without pooler weights (like most sentence-transformers models)
    folder = copy_without(tiny_bert_dir, tmp_path / "no-pooler", "pooler.")
    # When it is loaded twice
    first, second = Encoder.load(folder, device="cpu"), Encoder.load(folder, device="cpu")
    # Then transformers prints no load report, the model has no (randomly initialised) pooler,
    # and both loads hash alike (the embedding cache's key)
    assert "LOAD REPORT" not in "".join(capfd.readouterr())
    assert first.model.pooler is None
    assert weights_hash(first) == weights_hash(second)


def test_a_checkpoint_with_pooler_weights_loads_without_a_report_either(tiny_bert_dir, capfd):
    # Given a checkpoint that has pooler weights; When it is loaded
    encoder = Encoder.load(tiny_bert_dir, device="cpu")
    # Then the unused pooler is left out silently
    assert encoder.model.pooler is None
    assert "LOAD REPORT" not in "".join(capfd.readouterr())


def test_other_missing_weights_are_still_reported(tiny_bert_dir, tmp_path, caplog):
    # Given a checkpoint that lacks a real encoder weight
    folder = copy_without(tiny_bert_dir, tmp_path / "damaged", "encoder.layer.1.output.dense.weight")
    # When it is loaded
    with caplog.at_level(logging.WARNING, logger="e5kit.encoder"):
        Encoder.load(folder, device="cpu")
    # Then one warning names the folder and the missing weight
    assert any("encoder.layer.1.output.dense.weight" in r.getMessage() and str(folder) in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- search --json


def test_search_json_prints_one_parsable_object_per_query(tiny_bert_dir, tmp_path):
    # Given an index of three documents
    corpus = tmp_path / "docs.jsonl"
    records = [{"_id": "d1", "title": "Cats", "text": "the cat sat on the mat"}, {"_id": "d2", "text": "python can read files"}, {"_id": "d3", "text": "the sun and the moon"}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    runner = CliRunner()
    built = runner.invoke(app, ["index", "build", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    # When two queries are searched with --json
    result = runner.invoke(app, ["search", str(tmp_path / "idx"), "cat on the mat", "read a file", "-k", "2", "--json", "--snippet-chars", "20"])
    # Then standard output is JSON Lines: one object per query, hits ranked 1.. with the chunk's offsets
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["cat on the mat", "read a file"]
    for line in lines:
        assert [hit["rank"] for hit in line["hits"]] == [1, 2]
        assert line["hits"][0]["score"] >= line["hits"][1]["score"]
        assert set(line["hits"][0]) == {"rank", "score", "doc_id", "title", "chunk_index", "start", "end", "snippet"}
    cats = next(hit for line in lines for hit in line["hits"] if hit["doc_id"] == "d1")
    assert cats["title"] == "Cats" and cats["start"] == 0 and cats["end"] == len("Cats the cat sat on the mat")
    assert len(cats["snippet"]) <= 24


# ---------------------------------------------------------------- bundled configs


def test_every_example_config_ships_as_package_data_and_configs_links_to_them():
    # Given the package-data globs of pyproject.toml
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["e5kit"]
    package = ROOT / "src" / "e5kit"
    shipped = {path for pattern in globs for path in package.glob(pattern)}
    # Then every bundled config and the py.typed marker match them, and configs/ is the same folder
    assert set(bundled_configs().values()) <= shipped and len(bundled_configs()) >= 10
    assert package / "py.typed" in shipped
    assert (ROOT / "configs").resolve() == package / "configs"


def test_config_list_and_show(tmp_path):
    runner = CliRunner()
    # When the bundled configs are listed
    listed = runner.invoke(app, ["config", "list"], env={"COLUMNS": "80"})
    # Then each name is shown with what it runs, wrapped within 80 columns
    assert listed.exit_code == 0 and "pretrain " in listed.output and "ablations/e5_paper " in listed.output
    assert "e5kit eval sts --config" in " ".join(listed.output.split())
    assert max(map(len, listed.output.splitlines())) <= 80
    # When one is shown, with or without .yaml, Then it is printed exactly as installed
    for name in ("serve", "serve.yaml"):
        shown = runner.invoke(app, ["config", "show", name])
        assert shown.exit_code == 0 and shown.stdout == bundled_configs()["serve"].read_text()
    # When an unknown name is asked for, Then a one-line error lists the names
    missing = runner.invoke(app, ["config", "show", "nope"])
    assert missing.exit_code == 2 and "no bundled config named 'nope'" in missing.output and "pretrain" in missing.output


def test_config_option_takes_a_bundled_name_unless_such_a_file_exists(tmp_path, monkeypatch):
    # Given a folder without configs
    monkeypatch.chdir(tmp_path)
    bundled = bundled_configs()["eval_sts"]
    # When a config is named as bundled: NAME, NAME.yaml or the repository's configs/NAME.yaml
    for name in ("eval_sts", "eval_sts.yaml", "configs/eval_sts.yaml"):
        # Then the bundled file is read
        assert resolve_config(name) == bundled
        assert load_config(STSConfig, name).data == Path("../shared/data/sts/stsb")
    # Given a local file of the same name, Then the local file wins
    Path("eval_sts.yaml").write_text("data: mine\n")
    assert load_config(STSConfig, "eval_sts.yaml").data == Path("mine")
    # A path elsewhere is never replaced by a bundled one
    assert resolve_config("other/eval_sts.yaml") == Path("other/eval_sts.yaml")


def test_a_bad_bundled_override_names_the_bundled_config(monkeypatch, tmp_path):
    # Given a bundled config named from an empty folder; When a field is made invalid
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "sts", "--config", "eval_sts", "--set", "batch_size=0"])
    # Then the one-line error names the bundled config and the field
    assert result.exit_code == 2 and result.output.startswith("error: bundled config eval_sts: invalid sts config: batch_size")


# ---------------------------------------------------------------- quickstart config errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [unclosed\n", "quickstart.yaml:2: invalid YAML"),
        ("heldout_queries: 3\nunknown_key: 1\n", "invalid quickstart config: heldout_queries: Input should be greater than or equal to 10; unknown_key: Extra inputs"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_quickstart_config_errors_are_one_line(tmp_path, text, expected):
    # Given a quickstart config that is not valid YAML, has an invalid field, or is not a mapping
    path = tmp_path / "quickstart.yaml"
    path.write_text(text)
    # When the quickstart reads it
    result = CliRunner().invoke(app, ["quickstart", "--config", str(path), "--workdir", str(tmp_path / "work")])
    # Then it stops with one line naming the problem, before any stage runs
    assert result.exit_code == 2 and result.output.count("\n") == 1 and expected in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "work").exists()


# ---------------------------------------------------------------- log level


@pytest.mark.parametrize(("options", "level"), [(["--log-level", "debug"], logging.DEBUG), (["-v"], logging.INFO), (["-vv"], logging.DEBUG), (["-q"], logging.ERROR)])
def test_global_log_options_set_the_level(options, level, restore_root_level):
    # When a command runs with a global logging option
    result = CliRunner().invoke(app, [*options, "config", "list"])
    # Then the root logger passes records from that level up
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level


def test_two_log_options_at_once_are_refused(restore_root_level):
    result = CliRunner().invoke(app, ["-q", "--log-level", "info", "config", "list"])
    assert result.exit_code == 2 and "--log-level and -q each set the log level" in result.output
