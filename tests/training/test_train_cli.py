"""``e5kit pretrain``: a short run writes the final model, card, metrics and loss curve; bad configs fail first."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder

runner = CliRunner()


def write_config(tmp_path, tiny_bert_dir, data):
    path = tmp_path / "pretrain.yaml"
    path.write_text(
        f"init_model: {tiny_bert_dir}\ndata:\n  paths: [{data}]\noutput_dir: {tmp_path / 'run'}\n"
        "max_steps: 50\nbatch_size: 8\nchunk_size: 3\nwarmup_steps: 1\nlr: 0.001\ncheckpoint_every: 2\n"
    )
    return path


def test_short_run_writes_model_card_metrics_and_curve(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    # Given a config file and a Parquet shard
    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(20, source="arxiv"))
    config = write_config(tmp_path, tiny_bert_dir, tmp_path / "data")
    # When pre-training runs for 3 steps with a command-line override
    result = runner.invoke(app, ["pretrain", "--config", str(config), "--set", "max_steps=3", "--set", "symmetric=true"])
    # Then it succeeds and writes a loadable model with E5 prompts, its card, metrics and the loss curve
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    encoder = Encoder.load(run / "final")
    assert encoder.prompts == {"query": "query: ", "passage": "passage: "}
    card = (run / "final" / "README.md").read_text()
    # (the start model is named relative to the model folder: no saved file holds an absolute path)
    assert f"`{os.path.relpath(tiny_bert_dir, run / 'final')}`" in card and str(tmp_path) not in card
    assert "| arxiv | 20 |" in card and '"symmetric": true' in card and "steps: 3 of 3" in card
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["loss"] > 0 for r in records)
    assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-00000002"]


def test_invalid_config_fails_before_any_work(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(4))
    config = write_config(tmp_path, tiny_bert_dir, tmp_path / "data")
    # When a field is invalid, or the data path matches nothing
    bad_tau = runner.invoke(app, ["pretrain", "--config", str(config), "--set", "tau=0"])
    fp16_on_cpu = runner.invoke(app, ["pretrain", "--config", str(config), "--set", "precision=fp16", "--set", "device=cpu"])
    bad_data = runner.invoke(app, ["pretrain", "--config", str(config), "--set", "data.paths=[nowhere/*.parquet]"])
    # Then each exits with code 2 and a message naming the field or path, and nothing was written
    assert bad_tau.exit_code == 2 and "tau: Input should be greater than 0" in bad_tau.output
    assert fp16_on_cpu.exit_code == 2 and "precision: fp16 needs a CUDA device" in fp16_on_cpu.output
    assert bad_data.exit_code == 2 and "nowhere/*.parquet: matches no pair shard" in bad_data.output
    assert not (tmp_path / "run").exists()
