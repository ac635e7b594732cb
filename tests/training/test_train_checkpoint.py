"""Checkpoints: atomic write with a manifest, keep-last-K, corrupt ones skipped with a warning."""

from __future__ import annotations

import logging

import torch

from e5kit.training.checkpoint import latest_valid_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint


def test_keep_last_k_and_round_trip(tmp_path):
    # Given three saves with keep=2
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step, "weights": torch.full((3,), float(step))}, keep=2)
    # Then only the last two remain, and the newest loads back intact
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000002"]
    state = load_checkpoint(latest_valid_checkpoint(tmp_path))
    assert state["step"] == 3 and torch.equal(state["weights"], torch.full((3,), 3.0))


def test_corrupt_or_partial_checkpoint_falls_back_with_warning(tmp_path, caplog):
    # Given a good checkpoint, a newer one whose state file was truncated, a newer one without manifest,
    # and a staging folder left by a write that was killed
    save_checkpoint(tmp_path, 2, {"step": 2}, keep=5)
    corrupt = save_checkpoint(tmp_path, 4, {"step": 4, "x": torch.zeros(100)}, keep=5)
    data = (corrupt / "state.pt").read_bytes()
    (corrupt / "state.pt").write_bytes(data[: len(data) // 2])
    no_manifest = save_checkpoint(tmp_path, 6, {"step": 6}, keep=5)
    (no_manifest / "manifest.json").unlink()
    (tmp_path / ".step-00000008.tmp").mkdir()
    # When the newest valid checkpoint is looked up
    with caplog.at_level(logging.WARNING):
        found = latest_valid_checkpoint(tmp_path)
    # Then step 2 is used, and both broken ones are reported
    assert found.name == "step-00000002"
    assert "checksum mismatch" in caplog.text and "no manifest.json" in caplog.text
