"""Hub-ready model cards (issue 18, item 5): every saved model's README.md parses with huggingface_hub's
ModelCard, carries library_name, pipeline_tag, tags, base_model, the start model's licence and
languages and the training data sets, gains a model-index of what ``e5kit eval`` measured, and no saved
artefact names an absolute path of the machine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder
from e5kit.model_card import portable_name, start_model, with_results
from e5kit.training.trainer import pretrain

START_CARD = "---\nlicense: mit\nlanguage:\n- en\n- de\nbase_model: intfloat/e5-small-v2\ntags:\n- theirs\n---\n\n# A start model\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir) -> Path:
    """A 2-step pre-training run from a copy of the tiny BERT whose card declares a licence, languages
    and its own base model; returns the run folder."""
    root = tmp_path_factory.mktemp("card-run")
    start = root / "start"
    shutil.copytree(tiny_bert_dir, start)
    (start / "README.md").write_text(START_CARD)
    pairs = root / "pairs" / "pairs.jsonl"
    pairs.parent.mkdir()
    words = "cell gene cancer python file data model text search index cat dog sun moon".split()
    pairs.write_text("".join(json.dumps({"query": f"{words[i % 14]} {i}", "passage": f"{words[(i + 3) % 14]} text {i}", "source": "wiki"}) + "\n" for i in range(8)))
    config = {"init_model": str(start), "data": {"paths": [str(pairs.parent)]}, "output_dir": str(root / "run"), "max_steps": 2,
              "batch_size": 4, "chunk_size": 4, "warmup_steps": 0, "checkpoint_every": 0, "device": "cpu"}
    pretrain(config, show_progress=False)
    return root


def text_files(folder: Path) -> dict[Path, str]:
    """Every file under ``folder`` that reads as UTF-8 text."""
    texts = {}
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    return texts


def test_a_pretrained_model_card_is_hub_ready(trained):
    # Given the final model of a pre-training run; When its card is read with huggingface_hub
    card = ModelCard.load(trained / "run" / "final" / "README.md")
    data = card.data
    # Then the front matter names the library, the pipeline, e5kit's tags, the data sources, and carries the
    # start model's licence and languages; the local start model passes on its own base model
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "sentence-similarity", "e5kit", "e5kit-pretrain"} <= set(data.tags) and "theirs" not in data.tags
    assert data.license == "mit" and data.language == ["en", "de"] and data.datasets == ["wiki"]
    assert data.base_model == "intfloat/e5-small-v2" and data.model_name == "run"
    # And the text names the start model relative to the model folder, with how to use it and how it was trained
    assert "- start model: `../../start`" in card.text and "model.encode_query" in card.text and "| wiki | 8 |" in card.text
    assert "Pair shards: `../../pairs`" in card.text and '"max_steps": 2' in card.text


def test_no_saved_artefact_names_an_absolute_path(trained):
    # Given every text file the run saved (model card, configs, tokenizer files, metrics)
    files = text_files(trained / "run" / "final") | {trained / "run" / "metrics.jsonl": (trained / "run" / "metrics.jsonl").read_text()}
    # Then none holds the absolute path of the temporary folder
    assert files and not [path for path, text in files.items() if str(trained) in text or str(trained.resolve()) in text]


def test_the_model_index_holds_what_e5kit_eval_measured(trained, tmp_path):
    # Given an STS result measured on a copy of the trained model
    model = tmp_path / "copy"
    shutil.copytree(trained / "run" / "final", model)
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "test.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(f"cell {i}\tgene {i % 3}\t{i % 5}\n" for i in range(10)))
    runner = CliRunner()
    measured = runner.invoke(app, ["eval", "sts", "-m", str(trained / "run" / "final"), "-d", str(tmp_path / "sts"), "--results-dir", str(tmp_path / "results"), "--no-cache"])
    assert measured.exit_code == 0, measured.output
    # When the copy's card is given the results folder (twice: the second replaces, not repeats)
    for _ in range(2):
        written = runner.invoke(app, ["eval", "card", str(model), str(tmp_path / "results")])
        assert written.exit_code == 0, written.output
    # Then its model-index holds the STS scores x100 (main metric first), matched by the weights' hash
    result = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    card = ModelCard.load(model / "README.md")
    entries = card.data.eval_results
    assert [(e.task_type, e.dataset_name, e.dataset_split, e.metric_type) for e in entries] == [
        ("STS", "sts", "test", "cosine_spearman"), ("STS", "sts", "test", "cosine_pearson")]
    assert entries[0].metric_value == round(100 * result["metrics"]["cosine_spearman"], 2)
    assert card.text.count("## Evaluation") == 1 and "| sts | sts | test | cosine_spearman |" in card.text
    assert card.data.license == "mit" and "## Training" in card.text  # the rest of the card is kept
    # And the result file names the model and data relative to itself, never absolutely
    assert result["model_path"] == os.path.relpath(trained / "run" / "final", tmp_path / "results")
    assert result["data_path"] == "../sts" and str(tmp_path) not in json.dumps(result)


def test_card_refuses_results_of_other_weights(trained, tiny_bert_dir, tmp_path):
    # Given results of the trained model; When another model's card is asked for them
    (tmp_path / "results").mkdir()
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "test.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(f"cell {i}\tgene {i % 3}\t{i % 5}\n" for i in range(6)))
    runner = CliRunner()
    assert runner.invoke(app, ["eval", "sts", "-m", str(trained / "run" / "final"), "-d", str(tmp_path / "sts"), "--results-dir", str(tmp_path / "results"), "--no-cache"]).exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(tiny_bert_dir, other)
    refused = runner.invoke(app, ["eval", "card", str(other), str(tmp_path / "results")])
    # Then a one-line error says none was measured on it, and no card is written
    assert refused.exit_code == 2 and "none of its 1 results was measured on the weights of" in refused.output
    assert not (other / "README.md").exists()


def test_encoder_save_writes_a_hub_ready_card_without_paths(tiny_unnormalized_dir, tmp_path):
    # Given a model without prompts; When it is saved without a card of its own
    folder = Encoder.load(tiny_unnormalized_dir, device="cpu").save(tmp_path / "saved")
    card = ModelCard.load(folder / "README.md")
    # Then the card is e5kit's: Hub fields, usage without role prefixes, no path of the machine
    assert card.data.library_name == "sentence-transformers" and card.data.model_name == "saved" and card.data.base_model is None
    assert "model.encode([" in card.text and "role prefixes: none" in card.text
    assert not [path for path, text in text_files(folder).items() if str(tmp_path) in text]


def test_start_model_of_a_bundled_name_and_of_a_hub_cache_snapshot(tmp_path):
    # Given the bundled model's name, Then its Hub id is the base model and its licence and language carry over
    bundled = start_model("all-MiniLM-L6-v2", tmp_path)
    assert bundled.hub_id == "sentence-transformers/all-MiniLM-L6-v2" and bundled.name == "all-MiniLM-L6-v2"
    assert bundled.metadata == {"license": "apache-2.0", "language": "en"}
    # Given a folder inside a Hugging Face cache snapshot, Then it is named by its repository id
    snapshot = tmp_path / "hub" / "models--intfloat--e5-small-v2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert portable_name(snapshot, tmp_path / "out") == "intfloat/e5-small-v2"
    # Given any other local folder, or an absolute pattern, Then it is named relative to the artefact's folder
    (tmp_path / "models" / "x").mkdir(parents=True)
    assert portable_name(tmp_path / "models" / "x", tmp_path / "runs" / "a") == "../../models/x"
    assert portable_name(f"{tmp_path}/data/*.parquet", tmp_path / "runs" / "a") == "../../data/*.parquet"
    # Given a Hub id or a relative pattern, Then it is kept as given
    assert portable_name("intfloat/e5-small-v2", tmp_path) == "intfloat/e5-small-v2" and portable_name("data/*.jsonl", tmp_path) == "data/*.jsonl"


def test_with_results_needs_results_and_a_name():
    # Given a card without front matter
    card = "# Someone's model\n"

    class Result:
        task, dataset, split, metrics, main_metric = "retrieval", "scifact", "test", {"ndcg_at_10": 0.5, "recall_at_100": 0.9}, "ndcg_at_10"

    # Then results are required, and a model name when the card has none
    with pytest.raises(ValueError, match="no evaluation results"):
        with_results(card, [])
    with pytest.raises(ValueError, match="names no model"):
        with_results(card, [Result()])
    # When a name is given, Then the model-index is added and the text kept
    updated = ModelCard(with_results(card, [Result()], model_name="theirs"))
    assert [(e.task_type, e.metric_type, e.metric_value) for e in updated.data.eval_results] == [("Retrieval", "ndcg_at_10", 50.0), ("Retrieval", "recall_at_100", 90.0)]
    assert "# Someone's model" in updated.text and "## Evaluation" in updated.text


def test_a_finetuned_model_card_comes_from_the_same_builder(trained, tmp_path):
    # Given a FlagEmbedding file and the pre-trained model as the start
    from e5kit.training.finetune import finetune

    data = tmp_path / "flag.jsonl"
    data.write_text("".join(json.dumps({"query": f"cell {i}", "pos": [f"gene text {i}"], "neg": [f"sun moon {i}"]}) + "\n" for i in range(4)))
    config = {"init_model": str(trained / "run" / "final"), "output_dir": str(tmp_path / "ft"), "max_steps": 1, "batch_size": 2,
              "chunk_size": 4, "hard_negatives": 1, "warmup_steps": 0, "checkpoint_every": 0, "device": "cpu",
              "data": {"datasets": [{"name": "mine", "format": "flag", "path": str(data)}]}}
    # When it is fine-tuned for one step
    final = finetune(config, show_progress=False)
    card = ModelCard.load(final / "README.md")
    # Then the card has the same Hub fields, the fine-tuning tag and data set, the licence and base model
    # carried through the local pre-trained model, and names its inputs relative to itself
    assert card.data.library_name == "sentence-transformers" and "e5kit-finetune" in card.data.tags and card.data.datasets == ["mine"]
    assert card.data.license == "mit" and card.data.base_model == "intfloat/e5-small-v2" and card.data.model_name == "ft"
    assert f"- mine: flag `{os.path.relpath(data, final)}`" in card.text and "| mine | 4 |" in card.text and "x InfoNCE" in card.text
    assert not [path for path, text in text_files(final).items() if str(tmp_path) in text or str(trained) in text]


def test_an_onnx_export_keeps_its_source_card(trained, tmp_path):
    # Given the trained model with its card; When it is exported to ONNX (fp32 only)
    source = trained / "run" / "final"
    result = CliRunner().invoke(app, ["export", "onnx", "--model", str(source), "--out", str(tmp_path / "onnx"), "--quantize", "none", "--check-texts", "8"])
    # Then the export carries the same card: same weights, same licence, base model and training account
    assert result.exit_code == 0, result.output
    assert (tmp_path / "onnx" / "README.md").read_text() == (source / "README.md").read_text()
