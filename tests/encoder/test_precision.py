"""The CPU flag reader and the "auto" precision decision, with injected flags and timings (speed on the
shared test machines means nothing, so no test here times anything)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from e5kit.encoder import precision
from e5kit.encoder.batching import padded_length
from e5kit.encoder.precision import (
    MIN_BATCH_COSINE,
    MIN_BF16_COSINE,
    MIN_INT8_COSINE,
    PrecisionProbe,
    choose_precision,
    cpu_description,
    cpu_flags,
    has_bf16,
    int8_range_warning,
    int8_reduce_range,
    measure_precisions,
    probe_inputs,
)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Test CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Test CPU 9000
flags\t\t: fpu sse avx2
"""

BF16 = frozenset({"avx2", "avx512_bf16"})


def probe(seconds: dict[str, float], noise: float, alone_noise: float = 0.0) -> PrecisionProbe:
    """A measurement: fp32 probe embeddings, bf16 ones that differ from them by ``noise`` per element, and
    bf16 rows alone that differ from the batched bf16 rows by ``alone_noise``."""
    reference = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    bfloat16 = reference + noise * np.random.default_rng(1).standard_normal(reference.shape).astype(np.float32)
    alone = bfloat16 + alone_noise * np.random.default_rng(2).standard_normal(reference.shape).astype(np.float32)
    return PrecisionProbe(seconds, {"float32": reference, "bfloat16": bfloat16}, alone)


def test_flags_and_model_come_from_the_first_processor(tmp_path, monkeypatch):
    # Given a /proc/cpuinfo of two processors
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "cpuinfo")
    # Then the flags are the first processor's, and the description names the CPU (its name, family and model:
    # a virtual machine names AMD's Zen 3, 4 and 5 all "AMD EPYC") and its int8/bf16 flags
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags() and has_bf16()
    assert cpu_description() == "cpu Test CPU 9000 (family 6, model 143) | int8/bf16 flags: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile"


def test_no_cpuinfo_means_unknown_flags_and_no_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "absent")
    assert cpu_flags() == frozenset() and not has_bf16()
    assert cpu_description().endswith("| flags unknown")


def test_auto_is_fp32_without_bf16_flags_and_times_nothing(monkeypatch):
    # Given a CPU without AVX512_BF16 or AMX (the flag reader monkeypatched)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))

    def measure():
        raise AssertionError("no timing where bf16 would be emulated")

    # When "auto" is resolved, Then it is fp32, says why, and nothing was timed
    choice = choose_precision(measure)
    assert choice.precision == "float32" and "avx512_bf16" in choice.reason
    assert choice.seconds == {} and choice.cosine is None


@pytest.mark.parametrize(
    ("seconds", "noise", "expected", "why"),
    [
        ({"float32": 1.0, "bfloat16": 0.5}, 1e-3, "bfloat16", "2.00x"),
        ({"float32": 1.0, "bfloat16": 0.95}, 1e-3, "float32", "less than 1.1x faster"),  # within the noise of a short timing
        ({"float32": 1.0, "bfloat16": 1.2}, 1e-3, "float32", "less than 1.1x faster"),
        ({"float32": 1.0, "bfloat16": 0.5}, 1.0, "float32", "below 0.999"),  # faster, but not faithful
    ],
)
def test_auto_with_bf16_flags_follows_the_measurement(seconds, noise, expected, why):
    # Given a CPU with bf16 and injected timings and embeddings
    choice = choose_precision(lambda: probe(seconds, noise), flags=BF16)
    # Then bf16 is picked only where it was faster by the margin and its cosine to fp32 held
    assert choice.precision == expected and why in choice.reason
    # And the numbers it was based on are kept, for the export's manifest
    assert choice.as_dict()["seconds"] == seconds and 0 < choice.cosine <= 1 and choice.batch_cosine == pytest.approx(1.0)


def test_auto_keeps_float32_where_bf16_makes_a_vector_depend_on_its_batch():
    # Given bf16 twice as fast and faithful to fp32, but a probe row alone at cosine ~0.9998 to itself in the
    # batch (the OpenVINO int8 IR at bf16 on a Xeon without AMX: 0.99982)
    measured = probe({"float32": 1.0, "bfloat16": 0.5}, 1e-3, alone_noise=0.02)
    choice = choose_precision(lambda: measured, flags=BF16)
    # Then "auto" keeps float32 (issue 17 item 1: >= 0.9999 alone vs batched) and says why
    assert choice.batch_cosine < MIN_BATCH_COSINE and choice.cosine >= MIN_BF16_COSINE
    assert choice.precision == "float32" and "depends on its batch" in choice.reason


def test_the_probe_is_padded_and_each_row_runs_alone_padded_as_encode_pads_it():
    # Given the probe batch, and a forward that records the shapes it gets and returns each row's token count
    input_ids, attention_mask = probe_inputs(vocab_size=100, max_positions=64)
    lengths = attention_mask.sum(axis=1)
    shapes = []

    def forward(ids, mask):
        shapes.append(ids.shape)
        return np.stack([mask.sum(axis=1), np.ones(len(ids))], axis=1).astype(np.float32)

    # Then its rows have different lengths, ids 0 past each row's end, the longest filling the batch
    assert len(set(lengths)) == len(lengths) and lengths.max() == input_ids.shape[1] == 64
    assert (input_ids[attention_mask == 0] == 0).all() and (input_ids[attention_mask == 1] > 0).all()
    # When measured for a backend that pads to the longest text, Then each row ran alone at exactly its own
    # length, beside the timed batch passes
    measured = measure_precisions({"float32": forward, "bfloat16": forward}, input_ids, attention_mask)
    assert shapes[-len(lengths):] == [(1, int(n)) for n in lengths]
    np.testing.assert_array_equal(measured.alone[:, 0], lengths)
    assert set(measured.seconds) == {"float32", "bfloat16"}
    # And for one that pads to multiples of 16 tokens (OpenVINO), each row ran alone padded so, as encode runs a
    # text alone: judged at a shape encode never passes, OpenVINO's int8 IR at bf16 looked batch-dependent
    shapes.clear()
    measured = measure_precisions({"float32": forward, "bfloat16": forward}, input_ids, attention_mask, sequence_multiple=16)
    assert shapes[-len(lengths):] == [(1, padded_length(int(n), 16, 64)) for n in lengths]
    assert all(length % 16 == 0 for _, length in shapes) and any(n % 16 for n in lengths)
    np.testing.assert_array_equal(measured.alone[:, 0], lengths)  # the padding is masked: the same tokens count


def test_an_int8_graph_is_held_to_the_int8_bound():
    # Given bf16 embeddings at cosine ~0.998 to float32 (too far for float weights, within int8's bound)
    measured = probe({"float32": 1.0, "bfloat16": 0.5}, 0.06)
    cosine = choose_precision(lambda: measured, flags=BF16).cosine
    assert MIN_INT8_COSINE < cosine < MIN_BF16_COSINE
    # Then float weights keep float32, and an int8 graph (min_cosine=MIN_INT8_COSINE) takes bf16
    assert choose_precision(lambda: measured, flags=BF16).precision == "float32"
    assert choose_precision(lambda: measured, flags=BF16, min_cosine=MIN_INT8_COSINE).precision == "bfloat16"


@pytest.mark.parametrize(
    ("flags", "reduce_range"),
    [({"avx2"}, True), ({"avx2", "avx512_vnni"}, False), ({"avx2", "avx_vnni"}, False), ({"avx2", "amx_int8"}, False), (set(), True)],
)
def test_int8_weights_keep_to_7_bits_where_the_cpu_has_no_int8_dot_product(flags, reduce_range):
    # Given a CPU's flags (AVX2 only: int8 pairs summed in int16 saturate; unknown flags: assume the worst)
    # Then int8 weights keep to 7 bits exactly where it has no VNNI or AMX
    assert int8_reduce_range(frozenset(flags)) is reduce_range


def test_8_bit_int8_weights_loaded_on_a_cpu_without_vnni_are_named_with_the_fix():
    where = Path("m/onnx/model_qint8_quantized.onnx")
    avx2, vnni = frozenset({"avx2"}), frozenset({"avx2", "avx512_vnni"})
    # Given an int8 file with 8-bit weights on an AVX2-only CPU, Then one line names the file, the fault and the fix
    message = int8_range_warning({"reduce_range": False}, where, avx2)
    assert str(where) in message and "saturates" in message and "--reduce-range" in message and "\n" not in message
    # And an export that does not record its range had 8-bit weights
    assert int8_range_warning({}, where, avx2) == message
    # And 7-bit weights, a CPU with VNNI, or a float file are fine
    assert int8_range_warning({"reduce_range": True}, where, avx2) is None
    assert int8_range_warning({"reduce_range": False}, where, vnni) is None
    assert int8_range_warning(None, where, avx2) is None
