"""Every config-driven command reads its settings through the one ``e5kit.config.load_config`` (issue 16,
item 1), so a bad field is reported alike everywhere: one line naming where the setting came from, the
stage and the field, exit 2, before any work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import e5kit.config
from e5kit.ablation import AblationConfig
from e5kit.cli.app import app
from e5kit.data.consistency import ConsistencyConfig
from e5kit.data.curation import CurateConfig
from e5kit.data.holdout import HoldoutConfig
from e5kit.evaluation import config as eval_config
from e5kit.pipeline import QuickstartConfig
from e5kit.serving.config import ServeConfig
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
