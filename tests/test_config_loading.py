"""Every config-driven command reads its settings through the one ``e5kit.config.load_config`` (issue 16,
item 1), so a bad field is reported alike everywhere: one line naming where the setting came from, the
stage and the field, exit 2, before any work. Options made from Config fields show the field's own
description and default, so neither is repeated by hand and neither can drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import e5kit.config
from e5kit.ablation import AblationConfig
from e5kit.cli.app import app
from e5kit.config import field_descriptions
from e5kit.data.consistency import ConsistencyConfig
from e5kit.data.curation import CurateConfig
from e5kit.data.holdout import HoldoutConfig
from e5kit.data.mining import MiningConfig
from e5kit.data.teacher import TeacherConfig
from e5kit.evaluation import config as eval_config
from e5kit.pipeline import QuickstartConfig
from e5kit.serving.config import ServeConfig
from e5kit.serving.index_stage import IndexConfig
from e5kit.training.config import FinetuneConfig, PretrainConfig

EVAL_TASKS = {
    "retrieval": eval_config.RetrievalConfig,
    "sts": eval_config.STSConfig,
    "classification": eval_config.ClassificationConfig,
    "clustering": eval_config.ClusteringConfig,
    "pair-classification": eval_config.PairClassificationConfig,
    "reranking": eval_config.RerankingConfig,
}

#: command -> (its arguments giving every required field, its config class, where its settings come from)
COMMANDS = {
    "curate": (["curate", "--set", "output_dir=o", "--set", "sources=[{type: news, paths: [n.jsonl]}]"], CurateConfig, "command line"),
    "holdout": (["holdout", "--pairs", "p.parquet", "--output", "o"], HoldoutConfig, "command line"),
    "filter consistency": (["filter", "consistency", "--pairs", "p.parquet", "--model", "m", "--output", "o"], ConsistencyConfig, "command line"),
    "pretrain": (["pretrain", "--set", "init_model=m", "--set", "data.paths=[p.parquet]", "--set", "output_dir=o", "--set", "max_steps=1"],
                 PretrainConfig, "command line"),
    "finetune": (["finetune", "--set", "init_model=m", "--set", "output_dir=o", "--set", "data.datasets=[{name: a, format: flag, path: a.jsonl}]"],
                 FinetuneConfig, "command line"),
    **{f"eval {task}": (["eval", task, "--data", "d"], schema, "command line") for task, schema in EVAL_TASKS.items()},
    "mine-negatives": (["mine-negatives", "-q", "q.jsonl", "-c", "c.jsonl", "-p", "qrels.tsv", "-o", "mined.jsonl"], MiningConfig, "command line"),
    "score-teacher": (["score-teacher", "-t", "t", "-i", "mined.jsonl", "-o", "scored.jsonl"], TeacherConfig, "command line"),
    "index build": (["index", "build", "--corpus", "c.jsonl", "--out", "o"], IndexConfig, "command line"),
    "serve": (["serve"], ServeConfig, "command line"),
    "quickstart": (["quickstart"], QuickstartConfig, "command line"),
    "ablate": (["ablate", "--config", "ablations/e5_paper"], AblationConfig, "bundled config ablations/e5_paper"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_field_in_set_is_the_same_one_line_error_for_every_command(name, monkeypatch, tmp_path):
    # Given a command line that is valid but for an unknown field given with --set
    argv, schema, origin = COMMANDS[name]
    read = []

    def spy(schema, *args, **kwargs):
        read.append(schema)
        return load_config(schema, *args, **kwargs)

    load_config = e5kit.config.load_config
    monkeypatch.setattr(e5kit.config, "load_config", spy)
    monkeypatch.chdir(tmp_path)
    # When it runs
    result = CliRunner().invoke(app, [*argv, "--set", "bogus=1"])
    # Then its config class was read by e5kit.config.load_config, and the error is the shared one-liner naming the field
    assert read == [schema]
    stage = schema.__name__.removesuffix("Config").lower()
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {origin}: invalid {stage} config: bogus: Extra inputs are not permitted\n"


# ----------------------------------------------------------------- options generated from Config fields

#: every stage command whose options set fields of its Config (made by e5kit.cli.options.config_option) -> that Config
GENERATED = {
    ("curate",): CurateConfig, ("filter", "consistency"): ConsistencyConfig, ("holdout",): HoldoutConfig, ("pretrain",): PretrainConfig,
    ("finetune",): FinetuneConfig, ("mine-negatives",): MiningConfig, ("score-teacher",): TeacherConfig, ("index", "build"): IndexConfig,
    **{("eval", task): schema for task, schema in EVAL_TASKS.items()}, ("serve",): ServeConfig, ("quickstart",): QuickstartConfig,
}


def _command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", GENERATED, ids=" ".join)
def test_each_option_shows_its_config_fields_description_and_default(path):
    # Given a command whose options set fields of its Config
    schema, params = GENERATED[path], _command(path).params
    options = [param for param in params if param.name in schema.model_fields]
    assert options
    for option in options:
        field = schema.model_fields[option.name]
        # Then its help is the field's description, and the default it shows is the field's default
        # (read back as YAML, the way --set and a config file would give it), or none when the field has none
        # or makes it when the config is made (the description says what it is, e.g. the CPU count)
        assert option.help.startswith(field_descriptions(schema)[option.name]), option.name
        shown = re.findall(r"\[default: (.*)\]$", option.help)  # last in the help; a list's default has brackets
        if field.is_required() or field.default is None or field.default_factory is not None:
            assert shown == [], option.name
        else:
            default = str(field.default) if isinstance(field.default, Path) else field.default
            assert [yaml.safe_load(value) for value in shown] == [default], option.name
    # And no other option of the command writes a default into its help by hand
    assert not [param.name for param in params if param not in options and "[default:" in (getattr(param, "help", "") or "")]


def test_an_option_outside_the_fields_bounds_is_a_usage_error_naming_it():
    # Given k, whose field is ge=1; When --k 0 is given, Then click refuses it, naming the option, before any work
    result = CliRunner().invoke(app, ["filter", "consistency", "--k", "0"])
    assert result.exit_code == 2 and "--k" in result.output and "1" in result.output and "error: " not in result.output
