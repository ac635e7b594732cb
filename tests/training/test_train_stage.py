"""Pre-training as a stage under torchrun from a chain (the quickstart's ``nproc_per_node`` > 1): the launched
``e5kit pretrain`` fingerprints the chain's settings, so its marker is the chain's and a rerun is skipped."""

from __future__ import annotations

import json

from e5kit.pipeline import run_pretrain
from e5kit.stage import REPORT_FILE, STARTED_FILE
from e5kit.training.config import PretrainConfig
from e5kit.training.trainer import PretrainStage


def test_a_torchrun_pretraining_in_a_chain_writes_the_chains_marker_and_is_skipped_when_run_again(tmp_path, tiny_bert_dir, make_pairs, write_parquet):
    # Given pair shards and a 2-step pre-training stage run by a chain on 2 gloo processes
    write_parquet(tmp_path / "data" / "pairs.parquet", make_pairs(16))
    config = PretrainConfig.model_validate({
        "init_model": str(tiny_bert_dir), "data": {"paths": [str(tmp_path / "data")]}, "output_dir": str(tmp_path / "run"), "max_steps": 2,
        "batch_size": 4, "chunk_size": 2, "warmup_steps": 1, "checkpoint_every": 1, "device": "cpu",
    })
    lines: list[str] = []
    first = run_pretrain(PretrainStage(config), 2, upstream="before", log=lines.append)
    # Then the marker is the chain's (its fingerprint, the training's counts), and no started-with file is left
    marker = json.loads((tmp_path / "run" / REPORT_FILE).read_text())
    assert marker == first and marker["steps"] == 2 and not (tmp_path / "run" / STARTED_FILE).exists()
    # When the chain runs it again, Then it is skipped
    assert run_pretrain(PretrainStage(config), 2, upstream="before", log=lines.append)["fingerprint"] == marker["fingerprint"]
    assert lines.count("[pretrain] done before, skipped (--force redoes it)") == 1
