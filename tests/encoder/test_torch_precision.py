"""bf16 on the torch backend: its fidelity to fp32 on the tiny model, batch independence, and dtype="auto"
deciding with monkeypatched CPU flags and injected timings (speed on shared test machines means nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_texts import MIXED_LENGTHS

from e5kit.encoder import Encoder, backend, precision
from e5kit.encoder.precision import mean_cosine

TEXTS = MIXED_LENGTHS


@pytest.fixture(scope="module")
def float32(tiny_bert_dir) -> Encoder:
    return Encoder.load(tiny_bert_dir, device="cpu")


def test_bfloat16_is_faithful_and_batch_independent(tiny_bert_dir, float32, single_torch_thread):
    # Given the tiny model with bfloat16 weights on the CPU
    bfloat16 = Encoder.load(tiny_bert_dir, device="cpu", dtype="bfloat16")
    # Then its embeddings stay within issue 17's bound of fp32 (mean cosine >= 0.999)
    mean, _ = mean_cosine(float32.encode(TEXTS, role="passage"), bfloat16.encode(TEXTS, role="passage"))
    assert mean >= 0.999
    # And a text gets the same vector alone as in a batch of texts of other lengths
    alone = np.concatenate([bfloat16.encode([text], role="passage") for text in TEXTS])
    assert mean_cosine(alone, bfloat16.encode(TEXTS, role="passage", batch_size=len(TEXTS)))[1] >= 0.9999


def test_auto_without_bf16_flags_keeps_float32_and_times_nothing(tiny_bert_dir, monkeypatch):
    # Given a CPU without AVX512_BF16 or AMX (the flag reader monkeypatched), and a timer that must not run
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(precision, "time_forwards", lambda *args, **kwargs: pytest.fail("timed where bf16 would be emulated"))
    # When loaded with dtype auto, Then it runs float32 and says why
    encoder = Encoder.load(tiny_bert_dir, device="cpu", dtype="auto")
    assert encoder.dtype == "float32" and str(next(encoder.model.parameters()).dtype) == "torch.float32"
    assert "avx512_bf16" in encoder.backend.precision_choice.reason


@pytest.mark.parametrize(("bf16_seconds", "expected"), [(0.5, "bfloat16"), (0.95, "float32")])
def test_auto_with_bf16_flags_follows_the_timing(tiny_bert_dir, float32, monkeypatch, bf16_seconds, expected, single_torch_thread):
    # Given a CPU with bf16 and injected timings (the probe passes still run, for the fidelity check)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))

    def timings(forwards, rounds=3):
        return {"float32": 1.0, "bfloat16": bf16_seconds}, {name: forward() for name, forward in forwards.items()}

    monkeypatch.setattr(precision, "time_forwards", timings)
    # When loaded with dtype auto
    encoder = Encoder.load(tiny_bert_dir, device="cpu", dtype="auto")
    # Then bfloat16 is picked only where it was >= 1.1x faster, with the probe's fidelity recorded
    assert encoder.dtype == expected and str(next(encoder.model.parameters()).dtype) == f"torch.{expected}"
    choice = encoder.backend.precision_choice
    assert choice.seconds == {"float32": 1.0, "bfloat16": bf16_seconds} and choice.cosine >= 0.999
    # And the float32 choice kept the float32 weights exactly (the bf16 probe ran on a copy)
    if expected == "float32":
        np.testing.assert_array_equal(encoder.encode(TEXTS, role="query"), float32.encode(TEXTS, role="query"))


def test_encode_dtype_auto_says_what_it_chose(tiny_bert_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from e5kit.cli import app

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    texts = tmp_path / "texts.txt"
    texts.write_text("how do cells divide\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["encode", "-m", str(tiny_bert_dir), "--dtype", "auto", "-r", "passage", "-i", str(texts), "-o", str(tmp_path / "v.npy")])
    assert result.exit_code == 0, result.output
    assert "precision: float32 (the CPU has none of avx512_bf16, amx_bf16" in result.stderr


def test_auto_is_refused_off_the_cpu(tiny_bert_dir):
    with pytest.raises(ValueError, match="auto chooses between float32 and bfloat16 on the CPU"):
        backend.TorchBackend(backend.load_transformer(tiny_bert_dir), device="meta", dtype="auto")
