"""TensorBoard logging (``report_to: [tensorboard]``): the scalars read back from the event files equal
metrics.jsonl, for pre-training and fine-tuning; a resumed run replaces the interrupted tail; a missing
package is a one-line error before any work."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.training.metrics import MetricsLog, scalars

runner = CliRunner()
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed (pip install e5kit[tensorboard])"
)


def read_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every event file in ``folder``, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def jsonl_scalars(path) -> dict[str, dict[int, float]]:
    """The same view of metrics.jsonl."""
    view: dict[str, dict[int, float]] = {}
    for record in map(json.loads, path.read_text().splitlines()):
        for tag, value in scalars({k: v for k, v in record.items() if k != "step"}).items():
            view.setdefault(tag, {})[record["step"]] = value
    return view


def assert_same(tensorboard, jsonl):
    assert tensorboard.keys() == jsonl.keys()
    for tag, points in jsonl.items():
        # event files hold float32
        assert tensorboard[tag] == pytest.approx(points, rel=1e-6), tag


def test_scalars_flattens_numbers_and_skips_the_rest():
    record = {"loss": 0.5, "lr": 1e-3, "sources": {"wiki": 6, "arxiv": 2}, "note": "x", "flag": True, "list": [1]}
    assert scalars(record) == {"train/loss": 0.5, "train/lr": 1e-3, "train/sources/wiki": 6.0, "train/sources/arxiv": 2.0}


@needs_tensorboard
def test_pretrain_with_report_to_tensorboard_writes_the_jsonl_values(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    # Given a shard and a 3-step pre-training run asked to report to TensorBoard
    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(20, source="arxiv"))
    settings = {"init_model": tiny_bert_dir, "data.paths": f"[{tmp_path / 'data'}]", "output_dir": tmp_path / "run", "max_steps": 3,
                "batch_size": 8, "chunk_size": 4, "warmup_steps": 1, "checkpoint_every": 0}
    argv = ["pretrain", *[part for key, value in settings.items() for part in ("--set", f"{key}={value}")], "--report-to", "tensorboard"]
    # When it runs
    result = runner.invoke(app, argv)
    # Then {output_dir}/tensorboard holds loss, lr, pairs/s, grad norm and source counts equal to metrics.jsonl's
    assert result.exit_code == 0, result.output
    logged = read_scalars(tmp_path / "run" / "tensorboard")
    assert {"train/loss", "train/lr", "train/pairs_per_s", "train/grad_norm", "train/sources/arxiv"} <= logged.keys()
    assert sorted(logged["train/loss"]) == [1, 2, 3]
    assert_same(logged, jsonl_scalars(tmp_path / "run" / "metrics.jsonl"))


@needs_tensorboard
def test_finetune_reports_to_a_chosen_logging_dir(tmp_path, tiny_bert_dir, write_jsonl):
    # Given a FLAG file and a 2-step fine-tuning run with its own logging_dir
    records = [{"query": f"what is cell {i}", "pos": [f"cell protein {i}"], "neg": [f"cat dog {i}", f"sun moon {i}"]} for i in range(8)]
    data = write_jsonl(tmp_path / "flag.jsonl", records)
    settings = {"init_model": tiny_bert_dir, "output_dir": tmp_path / "run", "data.datasets": f"[{{name: tiny, format: flag, path: {data}}}]",
                "max_steps": 2, "batch_size": 4, "chunk_size": 4, "hard_negatives": 2, "warmup_steps": 1, "checkpoint_every": 0,
                "query_max_length": 32, "passage_max_length": 32, "logging_dir": tmp_path / "tb", "report_to": "[tensorboard]"}
    # When it runs
    result = runner.invoke(app, ["finetune", *[part for key, value in settings.items() for part in ("--set", f"{key}={value}")]])
    # Then the event files in logging_dir equal its metrics.jsonl
    assert result.exit_code == 0, result.output
    logged = read_scalars(tmp_path / "tb")
    assert sorted(logged["train/loss"]) == [1, 2]
    assert_same(logged, jsonl_scalars(tmp_path / "run" / "metrics.jsonl"))


@needs_tensorboard
def test_resume_replaces_the_interrupted_tail_as_metrics_jsonl_does(tmp_path):
    # Given a log that reached step 3 although its last checkpoint was step 1
    path, folder = tmp_path / "metrics.jsonl", tmp_path / "tb"
    first = MetricsLog(path, tensorboard_dir=folder)
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step)})
    first.close()
    # When the resumed run logs steps 2 and 3 again, with other values
    resumed = MetricsLog(path, keep_until_step=1, tensorboard_dir=folder)
    for step in (2, 3):
        resumed.log({"step": step, "loss": 10.0 * step})
    resumed.close()
    # Then TensorBoard shows step 1 of the first run and steps 2-3 of the resumed one, as metrics.jsonl
    assert read_scalars(folder)["train/loss"] == {1: 1.0, 2: 20.0, 3: 30.0}
    assert_same(read_scalars(folder), jsonl_scalars(path))


def test_missing_tensorboard_is_a_one_line_error_before_any_work(tmp_path, monkeypatch):
    # Given a machine without the tensorboard package
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    # When a run asks for it
    result = runner.invoke(app, ["pretrain", "--set", "init_model=m", "--set", "data.paths=[x.parquet]", "--set", f"output_dir={tmp_path / 'run'}",
                                 "--set", "max_steps=1", "--report-to", "tensorboard"])
    # Then it exits 2 naming the field and the install command, and nothing was written
    assert result.exit_code == 2, result.output
    assert "report_to: Value error, tensorboard logging needs the tensorboard package: pip install 'e5kit[tensorboard]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@needs_tensorboard
def test_eval_data_is_scored_during_training_and_logged_beside_the_loss(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    # Given a tiny BEIR folder and a 3-step run that scores it every 2 steps
    beir = tmp_path / "heldout"
    (beir / "qrels").mkdir(parents=True)
    documents = {"d1": "cell protein gene", "d2": "cat dog sat on the mat", "d3": "python file read write"}
    queries = {"q1": "what protein", "q2": "where the cat sat"}
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in documents.items()))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(20, source="arxiv"))
    settings = {"init_model": tiny_bert_dir, "data.paths": f"[{tmp_path / 'data'}]", "output_dir": tmp_path / "run", "max_steps": 3,
                "batch_size": 8, "chunk_size": 4, "warmup_steps": 1, "checkpoint_every": 0, "eval_data": f"[{beir}]", "eval_every": 2}
    argv = ["pretrain", *[part for key, value in settings.items() for part in ("--set", f"{key}={value}")], "--report-to", "tensorboard"]

    # When it runs
    result = runner.invoke(app, argv)

    # Then metrics.jsonl holds the scores at steps 2 and 3 (the last), the last equal to an evaluation of the final model
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = {r["step"]: r["eval"] for r in records if "eval" in r}
    assert sorted(evaluations) == [2, 3]
    from e5kit.encoder import Encoder
    from e5kit.evaluation.retrieval import evaluate_beir

    final = evaluate_beir(Encoder.load(tmp_path / "run" / "final", device="cpu"), beir)
    assert evaluations[3] == pytest.approx({"heldout/ndcg_at_10": final["ndcg_at_10"], "heldout/recall_at_100": final["recall_at_100"]})
    # And TensorBoard shows them as eval/<data set>/<metric>, beside train/loss
    logged = read_scalars(tmp_path / "run" / "tensorboard")
    assert logged["eval/heldout/ndcg_at_10"] == pytest.approx({2: evaluations[2]["heldout/ndcg_at_10"], 3: final["ndcg_at_10"]})
    assert sorted(logged["train/loss"]) == [1, 2, 3]


def test_eval_data_without_an_evaluator_is_refused_before_training(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    # Given a config with eval_data, When the library trainer gets no evaluator, Then it names the field
    from e5kit.config import ConfigError
    from e5kit.training.trainer import pretrain

    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(8))
    config = {"init_model": str(tiny_bert_dir), "data": {"paths": [str(tmp_path / "data")]}, "output_dir": str(tmp_path / "run"),
              "max_steps": 1, "batch_size": 4, "eval_data": [str(tmp_path)]}
    with pytest.raises(ConfigError, match="eval_data"):
        pretrain(config)
