"""``e5kit ablate``: variants share every step they have in common, a rerun redoes nothing, and the
tables hold each row's own evaluation."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from e5kit.ablation import AblationConfig, results_markdown
from e5kit.cli import app


@pytest.fixture
def ablation_config(tmp_path, tiny_bert_dir, pair_sources, pair_sources_curate):
    config = {
        "workdir": str(tmp_path / "abl"),
        "model": str(tiny_bert_dir),
        "sources": pair_sources,
        "curate": pair_sources_curate,
        "holdout": {"fraction": 0.15, "min_queries": 50},
        "consistency": {"k": 40, "max_length": 48},
        "pretrain": {"max_steps": 2, "batch_size": 8, "chunk_size": 4, "checkpoint_every": 0, "passage_max_length": 48, "warmup_steps": 0},
        "variants": [
            {"name": "no filter", "consistency": {"enabled": False}},
            {"name": "filtered", "description": "E5's consistency filter"},
            {"name": "filtered, tau 0.01", "pretrain": {"tau": 0.01}},
            {"name": "judged by trained", "consistency": {"model": "variant:no filter"}},
        ],
        "comparisons": [{"name": "consistency filter", "baseline": "no filter", "variant": "filtered", "paper": "34.9 -> 40.7"}],
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ablation_shares_steps_evaluates_each_row_and_resumes(ablation_config, tmp_path, single_torch_thread):
    # Given four variants: two share one filter setting, one filter is judged by another variant's model
    runner = CliRunner()

    # When the ablation runs
    first = runner.invoke(app, ["ablate", "--config", str(ablation_config)])

    # Then curation and the split ran once, one filter per distinct setting, one training per variant
    assert first.exit_code == 0, first.output
    workdir = tmp_path / "abl"
    assert len(list((workdir / "consistency").iterdir())) == 3  # none, start-model judge, trained judge
    assert len(list((workdir / "pretrain").iterdir())) == 4
    results = json.loads((workdir / "results.json").read_text())
    assert results["heldout"] == ["alpha", "beta"]
    assert set(results["scores"]) == {"BM25", "start model", "no filter", "filtered", "filtered, tau 0.01", "judged by trained"}
    # And the judge of the last filter is the model trained without a filter
    judged = json.loads((workdir / "consistency" / results["variants"]["judged by trained"]["consistency"] / "report.json").read_text())
    assert judged["model"] == results["variants"]["no filter"]["model"]
    # And each row's score is that model's own evaluation on the held-out split
    from e5kit.encoder import Encoder
    from e5kit.evaluation.retrieval import evaluate_beir

    alpha = workdir / "holdout" / "heldout" / "alpha"
    trained = Encoder.load(results["variants"]["filtered"]["model"], device="cpu")
    assert results["scores"]["filtered"]["alpha"] == pytest.approx(100 * evaluate_beir(trained, alpha)["ndcg_at_10"], abs=1e-6)
    assert results["scores"]["BM25"]["alpha"] == pytest.approx(100 * evaluate_beir("bm25", alpha)["ndcg_at_10"], abs=1e-6)
    average = (results["scores"]["filtered"]["alpha"] + results["scores"]["filtered"]["beta"]) / 2
    assert results["scores"]["filtered"]["held-out average"] == pytest.approx(average)
    # And keep rates are reported per source for every filter, the unfiltered variant keeping all
    no_filter = results["keep_rates"]["no filter"]
    assert all(rates["kept"] == rates["read"] > 0 for rates in no_filter.values())
    assert all(0 < rates["kept"] <= rates["read"] for rates in results["keep_rates"]["filtered"].values())
    # And the comparison states our direction beside the paper's figure, in markdown and in the picture
    comparison = results["comparisons"][0]
    assert comparison["reproduced"] == (comparison["ours_after"] > comparison["ours_before"])
    markdown = (workdir / "results.md").read_text()
    assert "34.9 -> 40.7" in markdown and markdown == results_markdown(results)
    assert (workdir / "results.png").read_bytes().startswith(b"\x89PNG")
    # And the grid's cost is stated: every step's own time and their sum
    assert {"curate", "holdout", "evaluate BM25", "consistency filtered", "pretrain filtered", "evaluate filtered"} <= set(results["step_seconds"])
    # (each distinct step once: a step two variants share is listed under both labels but costs once)
    assert 0 < results["total_seconds"] <= sum(results["step_seconds"].values())
    assert "Measured time:" in markdown

    # And each of the 6 rows was evaluated by an `e5kit eval retrieval` stage per held-out split, each leaving its marker
    assert len(list((workdir / "evaluate").glob("*/results/stages/retrieval__*__test.json"))) == 6 * 2

    # When it runs again, Then every step is skipped
    second = runner.invoke(app, ["ablate", "--config", str(ablation_config)])
    assert second.exit_code == 0, second.output
    # (curate, holdout; the BM25 and start rows on 2 splits; per variant its filter, its training and its row on 2 splits)
    assert "] running" not in second.output and second.output.count("skipped") == 2 + 2 * 2 + 4 * (2 + 2)
    # And the stated time is still the first run's (a reused step counts the time it took then)
    assert json.loads((workdir / "results.json").read_text())["total_seconds"] == pytest.approx(results["total_seconds"])


def test_ablation_config_names_bad_references_on_one_line(tmp_path):
    # Given a variant judged by a variant that does not exist, When the config is validated, Then the field is named
    base = {"sources": [{"type": "generic", "paths": ["x.jsonl"]}], "variants": [{"name": "a", "consistency": {"model": "variant:b"}}]}
    with pytest.raises(ValueError, match=r"variants.0.consistency.model: no variant named 'b'"):
        AblationConfig.model_validate(base)
    # And a comparison naming an unknown row is refused the same way
    with pytest.raises(ValueError, match=r"comparisons.0.variant"):
        AblationConfig.model_validate({**base, "variants": [{"name": "a"}], "comparisons": [{"name": "x", "baseline": "start model", "variant": "c"}]})
    # And through the CLI the error is one line, exit 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    result = CliRunner().invoke(app, ["ablate", "--config", str(path)])
    assert result.exit_code == 2 and "no variant named 'b'" in result.output and "Traceback" not in result.output


def test_the_shipped_e5_ablation_config_validates():
    # Given the bundled ablation config, When it is loaded by name, Then every variant and comparison resolves
    from e5kit.ablation import AblationConfig
    from e5kit.config import load_config

    config = load_config(AblationConfig, "ablations/e5_paper")
    assert len(config.variants) >= 8 and config.comparisons


@pytest.mark.parametrize(
    "change, names",
    [
        ({"variants": [{"name": "a"}, {"name": "b", "pretrain": {"tauu": 0.01}}]}, "variants.1 (b).pretrain: tauu: Extra inputs are not permitted"),
        ({"consistency": {"k": 1000}}, "consistency: (config): Value error, k (1000) must be <= max_rank (100)"),
        ({"holdout": {"fractoin": 0.2}}, "holdout: fractoin: Extra inputs are not permitted"),
    ],
)
def test_a_bad_stage_setting_is_refused_before_any_work(tmp_path, pair_sources, change, names):
    # Given an ablation whose stage section (or a variant's) has a bad field
    config = {"workdir": str(tmp_path / "abl"), "sources": pair_sources, "variants": [{"name": "a"}], **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    # When it runs, Then it stops at once with one line naming the file, section and field, exit 2, nothing written
    result = CliRunner().invoke(app, ["ablate", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert names in result.output and str(path) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "abl").exists()


def test_a_missing_input_is_named_before_any_work(tmp_path, pair_sources):
    # Given a source whose file does not exist, When the ablation runs, Then it is named at once (exit 2)
    sources = [*pair_sources, {"type": "generic", "name": "gone", "paths": [str(tmp_path / "gone.jsonl")]}]
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path / "abl"), "sources": sources, "variants": [{"name": "a"}]}))
    result = CliRunner().invoke(app, ["ablate", "--config", str(path)])
    assert result.exit_code == 2 and "gone.jsonl" in result.output and not (tmp_path / "abl" / "curate").exists()


def test_a_filter_differing_only_in_k_reuses_the_stored_ranks(ablation_config, tmp_path, single_torch_thread):
    # Given two variants whose filters differ only in k (same judge and settings)
    config = yaml.safe_load(ablation_config.read_text())
    config["pretrain"]["max_steps"] = 1
    config["variants"] = [{"name": "k 40"}, {"name": "k 3", "consistency": {"k": 3}}]
    config["comparisons"] = []
    ablation_config.write_text(yaml.safe_dump(config))

    # When the ablation runs
    result = CliRunner().invoke(app, ["ablate", "--config", str(ablation_config)])

    # Then the second filter is applied to the first one's ranks without embedding the pool again
    assert result.exit_code == 0, result.output
    assert "(k=3)" in result.output and "not re-embedded" in result.output
    results = json.loads((tmp_path / "abl" / "results.json").read_text())
    reused = tmp_path / "abl" / "consistency" / results["variants"]["k 3"]["consistency"]
    # And it keeps exactly the pairs a fresh filter at k = 3 keeps
    from e5kit.data.consistency import ConsistencyConfig, consistency_filter
    from e5kit.data.shards import iter_rows
    from e5kit.io.pairs import resolve_pair_shards

    fresh = consistency_filter(ConsistencyConfig(
        pairs=[str(tmp_path / "abl" / "holdout" / "pairs")], model=config["model"], output_dir=tmp_path / "fresh",
        k=3, max_length=48, seed=config.get("seed", 13),
    ))
    assert json.loads((reused / "report.json").read_text())["kept"] == fresh["kept"] < fresh["read"]

    def kept(folder):
        return sorted((query, passage) for shard in resolve_pair_shards([folder])
                      for (_, query, passage, _), keep in zip(iter_rows(shard.path), shard.keep) if keep)

    assert kept(reused) == kept(tmp_path / "fresh")
