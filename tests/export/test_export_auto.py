"""`e5kit export auto`: every backend measured on this machine, the fastest faithful one recorded, and
`backend="auto"` loading it. Skipped without the openvino package (its candidates are part of the set)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from e5kit.cli import app
from e5kit.encoder import Encoder, precision
from e5kit.encoder.model_format import BACKEND_RECORD

pytest.importorskip("openvino")

runner = CliRunner()


@pytest.fixture(scope="module")
def auto_export(tiny_bert_dir, tmp_path_factory):
    """The tiny model exported with export_auto on a CPU without bf16 (six candidates, one round)."""
    from e5kit.export.auto import export_auto

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
        return export_auto(Encoder.load(tiny_bert_dir, device="cpu"), tmp_path_factory.mktemp("auto") / "m", check_texts_count=16, rounds=1)


def test_every_candidate_is_measured_and_the_fastest_eligible_is_recorded(auto_export):
    # Then every backend and weight precision was measured (no bf16 on this CPU)
    labels = [candidate.label for candidate in auto_export.candidates]
    assert labels == ["torch float32", "onnx int8", "onnx fp32", "openvino int8 (float32)", "openvino int8-full (float32)", "openvino fp32 (float32)"]
    assert all(candidate.texts_per_second > 0 and candidate.fidelity is not None for candidate in auto_export.candidates)
    # And the chosen one is the fastest of those within the fidelity bounds
    assert auto_export.chosen.eligible
    # And the record names it, the CPU and every candidate's figures
    record = json.loads((auto_export.model_dir / BACKEND_RECORD).read_text())
    assert (record["backend"], record["file_name"], record["dtype"]) == (auto_export.chosen.backend, auto_export.chosen.file_name, auto_export.chosen.dtype)
    assert record["cpu"].startswith("cpu ") and len(record["candidates"]) == 6
    assert {"mean", "min", "batch_min"} <= set(record["candidates"][0]["fidelity"])


def test_backend_auto_loads_the_recorded_choice(auto_export, texts):
    chosen = auto_export.chosen
    # When the folder is loaded with backend auto
    auto = Encoder.load(auto_export.model_dir, backend="auto")
    # Then it runs the recorded backend, file and precision, and embeds exactly as that candidate loaded by hand
    by_hand = Encoder.load(auto_export.model_dir, backend=chosen.backend, file_name=chosen.file_name, dtype=chosen.dtype)
    assert (auto.backend.name, auto.dtype, auto.fingerprint()) == (chosen.backend, by_hand.dtype, by_hand.fingerprint())
    np.testing.assert_allclose(auto.encode(texts, role="passage"), by_hand.encode(texts, role="passage"), atol=1e-6)
    # And asking auto for a file or precision is refused (the record decides them)
    with pytest.raises(ValueError, match="backend='auto' takes"):
        Encoder.load(auto_export.model_dir, backend="auto", dtype="float32")


def test_a_record_from_another_cpu_is_named_when_loaded(auto_export, monkeypatch, caplog):
    # Given a machine whose CPU differs from the one in the record
    import e5kit.encoder.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_description", lambda: "cpu Other | int8/bf16 flags: avx2")
    # When loaded with backend auto, Then the record is used and the log says it may not be the fastest here
    with caplog.at_level(logging.WARNING, logger="e5kit.encoder"):
        Encoder.load(auto_export.model_dir, backend="auto")
    assert "the backend was chosen on cpu " in caplog.text and "cpu Other" in caplog.text


def test_an_unfaithful_candidate_is_never_chosen(tiny_bert_dir, tmp_path, monkeypatch):
    from e5kit.export import check
    from e5kit.export.auto import export_auto

    # Given int8 bounds no int8 graph can meet (as if the quantisation had gone wrong)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setitem(check.MIN_MEAN_COSINE, "int8", 1.01)
    result = export_auto(Encoder.load(tiny_bert_dir, device="cpu"), tmp_path / "m", check_texts_count=16, rounds=1)
    # Then every int8 candidate is ineligible, however fast, and a float32 one is recorded
    assert all(not candidate.eligible for candidate in result.candidates if "int8" in candidate.label)
    assert "int8" not in result.chosen.label and result.chosen.eligible


def test_backend_auto_without_a_record_runs_torch(tiny_bert_dir, texts):
    # Given a plain model folder, When loaded with backend auto, Then it is torch fp32
    auto = Encoder.load(tiny_bert_dir, backend="auto")
    assert auto.backend.name == "torch" and auto.dtype == "float32"


def test_cli_export_auto_prints_every_candidate_and_encode_takes_backend_auto(tiny_bert_dir, texts, tmp_path):
    # When exported through the CLI
    out = tmp_path / "m"
    result = runner.invoke(app, ["export", "auto", "--model", str(tiny_bert_dir), "--out", str(out), "--check-texts", "16", "--rounds", "1"])
    # Then it prints one row per candidate with its figures, the chosen one marked, and how to load it
    assert result.exit_code == 0, result.output
    assert "torch float32" in result.output and "onnx int8" in result.output and "openvino int8 (float32)" in result.output
    assert result.output.count("chosen") == 1 and "backend='auto'" in result.output
    # And `e5kit encode --backend auto` embeds with the recorded backend (within its fidelity bound of torch)
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    encoded = runner.invoke(app, ["encode", "-m", str(out), "--backend", "auto", "-r", "passage", "-i", str(source), "-o", str(tmp_path / "v.npy")])
    assert encoded.exit_code == 0, encoded.output
    expected = Encoder.load(tiny_bert_dir).encode(texts, role="passage")
    assert (np.load(tmp_path / "v.npy") * expected).sum(axis=1).mean() >= 0.99


def test_the_fastest_eligible_candidate_wins_and_an_unfaithful_one_never_does(auto_export, tiny_bert_dir, monkeypatch):
    from e5kit.export import auto

    # Given timings that make "onnx fp32" the fastest faithful candidate, and a faster one that is not faithful
    seconds = {"onnx fp32": 0.5, "onnx int8": 0.1}
    monkeypatch.setattr(auto, "time_forwards", lambda forwards, rounds: ({label: seconds.get(label, 1.0) for label in forwards}, None))
    original = auto.measure_fidelity

    def unfaithful_int8(reference, candidate):
        fidelity = original(reference, candidate)
        if candidate.backend.name == "onnx" and candidate.dtype == "int8":
            fidelity.mean = 0.5
        return fidelity

    monkeypatch.setattr(auto, "measure_fidelity", unfaithful_int8)
    # When the candidates of the export are measured
    found = auto.candidates(False)
    chosen, _ = auto._measure(Encoder.load(tiny_bert_dir, device="cpu"), auto_export.model_dir, found, 16, None, 1)
    # Then the fastest faithful one is chosen, not the faster unfaithful one
    assert chosen.label == "onnx fp32"
    assert not next(candidate for candidate in found if candidate.label == "onnx int8").eligible
