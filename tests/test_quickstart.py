"""A reduced quickstart (tiny model, few steps) runs end to end, then resumes by skipping finished stages."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.pipeline import STAGES
from e5kit.stage import REPORT_FILE


def test_reduced_quickstart_end_to_end_and_rerun_skips(tiny_bert_dir, tmp_path, single_torch_thread):
    # Given a config that shrinks every stage around the tiny random BERT
    config = {
        "workdir": str(tmp_path / "qs"),
        "model": str(tiny_bert_dir),
        "heldout_queries": 20,
        "corpus_size": 200,
        "consistency": {"k": 50, "max_length": 64},
        "pretrain": {"max_steps": 2, "batch_size": 8, "chunk_size": 4, "checkpoint_every": 0, "passage_max_length": 48},
    }
    config_path = tmp_path / "quickstart.yaml"
    config_path.write_text(yaml.safe_dump(config))
    runner = CliRunner()

    # When the quickstart runs
    first = runner.invoke(app, ["quickstart", "--config", str(config_path)])

    # Then every stage finished and left its report (the one marker), the table compares three models, and the index is usable
    assert first.exit_code == 0, first.output
    workdir = tmp_path / "qs"
    summaries = {stage: json.loads((workdir / stage / REPORT_FILE).read_text()) for stage in STAGES}
    assert summaries["corpus"]["heldout"] == 20
    assert [summaries[stage]["stage"] for stage in STAGES] == list(STAGES)
    curate = summaries["curate"]["totals"]
    assert curate["read"] == curate["kept"] + sum(curate["dropped"].values())
    assert any(reason.startswith("decontaminate") for reason in curate["dropped"])
    assert 0 < summaries["consistency"]["kept"] <= curate["kept"]
    assert summaries["pretrain"]["steps"] == 2
    models = [row["model"] for row in summaries["evaluate"]["rows"]]
    assert models == ["BM25", f"{tiny_bert_dir} (start)", "e5kit pre-trained"]
    # The table reports each model's own score: an independent evaluation of each on the held-out split agrees
    from e5kit.encoder import Encoder
    from e5kit.evaluation.retrieval import evaluate_beir

    eval_dir = summaries["corpus"]["eval_dir"]
    scored = {row["model"]: row["ndcg_at_10"] for row in summaries["evaluate"]["rows"]}
    assert scored["BM25"] == pytest.approx(evaluate_beir("bm25", eval_dir)["ndcg_at_10"], abs=1e-9)
    start = evaluate_beir(Encoder.load(tiny_bert_dir, device="cpu"), eval_dir)["ndcg_at_10"]
    trained = evaluate_beir(Encoder.load(summaries["pretrain"]["model"], device="cpu"), eval_dir)["ndcg_at_10"]
    assert scored[f"{tiny_bert_dir} (start)"] == pytest.approx(start, abs=1e-9)
    assert scored["e5kit pre-trained"] == pytest.approx(trained, abs=1e-9)
    # BM25 finds most held-out objects from their name + summary line (random tiny BERT does not)
    assert scored["BM25"] > 0.5 > scored[f"{tiny_bert_dir} (start)"], scored
    assert summaries["index"]["documents"] == summaries["corpus"]["pairs"]
    assert "e5kit search" in first.output and "e5kit serve" in first.output
    assert (workdir / "index" / "model" / "modules.json").is_file()
    # The indexed model's card holds its held-out score in the model-index the Hub reads
    from huggingface_hub import ModelCard

    card = ModelCard.load(workdir / "index" / "model" / "README.md")
    ndcg = next(e for e in card.data.eval_results if e.metric_type == "ndcg_at_10")
    assert ndcg.task_type == "Retrieval" and ndcg.metric_value == round(100 * scored["e5kit pre-trained"], 2)

    # When it runs again, Then nothing is redone: the evaluation and the index are skipped by their own stages' markers
    second = runner.invoke(app, ["quickstart", "--config", str(config_path)])
    assert second.exit_code == 0, second.output
    assert second.output.count("skipped") == len(STAGES)
    assert "[evaluate] done before, skipped" in second.output and "[index] done before, skipped" in second.output
    eval_marker = workdir / "evaluate" / "results" / "stages" / "retrieval__eval__test.json"
    evaluated = json.loads(eval_marker.read_text())
    assert evaluated["stage"] == "eval retrieval" and summaries["evaluate"]["markers"] == [str(eval_marker)]
    assert json.loads((workdir / "index" / REPORT_FILE).read_text()) == summaries["index"]
    assert (workdir / "evaluate" / "results.md").read_text() == summaries["evaluate"]["table"] + "\n"

    # When only an evaluation setting changes, Then only the evaluation is redone (the index does not read it)
    config["evaluate"] = {"batch_size": 16}
    config_path.write_text(yaml.safe_dump(config))
    changed = runner.invoke(app, ["quickstart", "--config", str(config_path)])
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("done before, skipped") == len(STAGES) - 1, changed.output
    assert "[evaluate] settings or inputs changed since it ran: redoing it" in changed.output
    assert "[index] done before, skipped" in changed.output
    assert json.loads(eval_marker.read_text())["fingerprint"] != evaluated["fingerprint"]
    assert json.loads((workdir / "index" / REPORT_FILE).read_text()) == summaries["index"]

    # When only the pre-training settings change, Then the stages before it are kept and it and those after are redone
    config["pretrain"]["max_steps"] = 1
    config_path.write_text(yaml.safe_dump(config))
    third = runner.invoke(app, ["quickstart", "--config", str(config_path)])
    assert third.exit_code == 0, third.output
    assert third.output.count("done before, skipped") == STAGES.index("pretrain"), third.output
    assert json.loads((workdir / "pretrain" / REPORT_FILE).read_text())["steps"] == 1


def test_quickstart_on_real_sources_holds_out_a_split_per_source_and_evaluates_on_each(
    tiny_bert_dir, tmp_path, pair_sources, pair_sources_curate, single_torch_thread
):
    # Given two real sources instead of the built-in corpus
    config = {
        "workdir": str(tmp_path / "qs"),
        "model": str(tiny_bert_dir),
        "sources": pair_sources,
        "curate": pair_sources_curate,
        "holdout": {"fraction": 0.15, "min_queries": 50},
        "consistency": {"k": 40, "max_length": 48},
        "pretrain": {"max_steps": 1, "batch_size": 8, "chunk_size": 4, "checkpoint_every": 0, "passage_max_length": 48},
    }
    config_path = tmp_path / "quickstart.yaml"
    config_path.write_text(yaml.safe_dump(config))

    # When the quickstart runs
    result = CliRunner().invoke(app, ["quickstart", "--config", str(config_path)])

    # Then each source got a held-out split, training never saw it, and every model was scored on each split
    assert result.exit_code == 0, result.output
    workdir = tmp_path / "qs"
    holdout = json.loads((workdir / "holdout" / REPORT_FILE).read_text())
    assert holdout["stage"] == "holdout" and [d.rsplit("/", 1)[-1] for d in holdout["eval_dirs"]] == ["alpha", "beta"]
    assert holdout["kept"] < holdout["read"]
    evaluate = json.loads((workdir / "evaluate" / REPORT_FILE).read_text())
    assert sorted({(row["dataset"], row["model"]) for row in evaluate["rows"]}) == sorted(
        (split, model) for split in ("alpha", "beta") for model in ("BM25", f"{tiny_bert_dir} (start)", "e5kit pre-trained")
    )
    # And each model's unweighted average over the held-out splits closes the table (the recipe's bar)
    for model in ("BM25", f"{tiny_bert_dir} (start)", "e5kit pre-trained"):
        scores = [100 * row["ndcg_at_10"] for row in evaluate["rows"] if row["model"] == model]
        assert f"| held-out average (2 splits) | {model} | {sum(scores) / 2:.1f} |" in evaluate["table"]
    # And the index holds the first split's corpus
    index = json.loads((workdir / "index" / REPORT_FILE).read_text())
    assert index["documents"] == len((workdir / "holdout" / "heldout" / "alpha" / "corpus.jsonl").read_text().splitlines())


def test_shipped_quickstart_configs_validate_every_stage_section():
    from pathlib import Path
    from typing import get_args

    from e5kit.config import load_config
    from e5kit.data.curation import CurateConfig, FiltersConfig, SourceConfig
    from e5kit.pipeline import DEFAULT_CURATE, DEFAULT_PRETRAIN, QuickstartConfig, merge_settings
    from e5kit.training.config import PretrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    configs = sorted([*root.glob("quickstart_*.yaml"), *root.glob("recipes/*.yaml")])
    assert len(configs) >= 3
    for path in configs:
        # Given a shipped example, When its sections are merged over the defaults, Then each stage accepts them
        config = load_config(QuickstartConfig, path)
        # (curation checks that input files exist, which example dump paths do not, so its parts are checked here)
        curate = merge_settings(DEFAULT_CURATE, config.curate)
        FiltersConfig.model_validate(curate.pop("filters"))
        assert set(curate) <= set(CurateConfig.model_fields)
        assert all(source["type"] in get_args(SourceConfig.model_fields["type"].annotation) for source in config.sources)
        pretrain = merge_settings(DEFAULT_PRETRAIN, config.pretrain)
        PretrainConfig.model_validate({**pretrain, "init_model": config.model, "output_dir": "x", "data": {"paths": ["x"]}})


def test_quickstart_refuses_a_bad_stage_field_or_a_missing_source_before_any_stage(tmp_path, pair_sources):
    # Given a config with a misspelt consistency field, When it runs, Then one line names the file and field, exit 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"workdir": str(tmp_path / "qs"), "consistency": {"kk": 20}}))
    result = CliRunner().invoke(app, ["quickstart", "--config", str(bad)])
    assert result.exit_code == 2 and "consistency: kk: Extra inputs are not permitted" in result.output and str(bad) in result.output
    # And so is a bad setting of the evaluation or the index (their commands' configs)
    bad.write_text(yaml.safe_dump({"workdir": str(tmp_path / "qs"), "evaluate": {"top_k": 0}}))
    result = CliRunner().invoke(app, ["quickstart", "--config", str(bad)])
    assert result.exit_code == 2 and "evaluate: top_k: Input should be greater than or equal to 1" in result.output, result.output
    bad.write_text(yaml.safe_dump({"workdir": str(tmp_path / "qs"), "index": {"kind": "tree"}}))
    result = CliRunner().invoke(app, ["quickstart", "--config", str(bad)])
    assert result.exit_code == 2 and "index: kind:" in result.output and not (tmp_path / "qs").exists(), result.output
    # And a source file that does not exist is named before the corpus or curation stage starts
    missing = tmp_path / "missing.yaml"
    sources = [{"type": "generic", "name": "gone", "paths": [str(tmp_path / "gone.jsonl")]}]
    missing.write_text(yaml.safe_dump({"workdir": str(tmp_path / "qs"), "sources": sources}))
    result = CliRunner().invoke(app, ["quickstart", "--config", str(missing)])
    assert result.exit_code == 2 and "gone.jsonl" in result.output and not (tmp_path / "qs").exists()
