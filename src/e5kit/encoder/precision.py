"""What this CPU can run fast, and which precision a backend runs at when asked for "auto".

The one reader of the CPU's instruction flags, for every backend and for ``benchmarks/``: int8 and
bf16 speed ratios differ several-fold between CPUs (VNNI, AVX512_BF16, AMX), so figures name their
CPU (``cpu_description``) and the "auto" precision is decided on the machine that runs the model
(``choose_precision``): bf16 only where the CPU has bf16 instructions, a short timing there shows it
faster, its embeddings stay within ``MIN_BF16_COSINE`` of fp32, and a text's bf16 vector alone stays
within ``MIN_BATCH_COSINE`` of its vector in a padded batch.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from e5kit.encoder.batching import padded_length

CPUINFO = Path("/proc/cpuinfo")
#: CPU flags that decide int8 and bf16 speed (VNNI: one-instruction int8 dot products; AMX: matrix tiles).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
#: Flags of native bf16 arithmetic (Linux names). Without them bf16 is emulated, slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Flags of one-instruction int8 dot products (VNNI, AMX); see ``int8_reduce_range``.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: The probe batch "auto" times when a backend loads: (texts, tokens of the longest), a typical CPU passage batch.
PROBE_SHAPE = (8, 128)
#: bf16 is chosen only when at least this much faster: a smaller gain is within the noise of a short
#: timing on shared cores, and bf16 costs some fidelity.
MIN_BF16_SPEEDUP = 1.1
#: The lowest mean cosine between bf16 and fp32 embeddings that issue 17 accepts.
MIN_BF16_COSINE = 0.999
#: The lowest mean cosine of int8 embeddings to fp32 that issue 17 accepts; also the bound for bf16
#: inference of an int8 graph, whose float32 run is itself int8's approximation (on all-MiniLM-L6-v2's
#: OpenVINO int8 IR, bf16 vs float32 gave 0.9985 on the probe, and both 0.9991 to torch fp32 on real text).
MIN_INT8_COSINE = 0.997
#: The lowest cosine between a text's vector alone and in a batch that issue 17 accepts (item 1). bf16
#: rounding can break it where fp32 keeps it: OpenVINO's int8 IR of all-MiniLM-L6-v2 at bf16 gave 0.99982
#: on one of 64 prose texts of mixed lengths (Xeon with AVX512_BF16, no AMX), at float32 1.000000.
MIN_BATCH_COSINE = 0.9999


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``/proc/cpuinfo`` fields; empty off Linux."""
    if not CPUINFO.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the end of the first processor's block; the others repeat it
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction flags as Linux names them (``avx512_bf16``, ``amx_bf16``, ...); empty where unknown."""
    return frozenset(_cpuinfo_fields().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (``/proc/cpuinfo``; elsewhere ``platform.processor()``).

    The numbers tell apart CPUs that a virtual machine names alike: under KVM an AMD EPYC Zen 3, Zen 4
    and Zen 5 are each "AMD EPYC" (families 25, 25 and 26), and their int8 and bf16 speeds differ.
    """
    fields = _cpuinfo_fields()
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has native bf16 arithmetic (any of ``BF16_FLAGS``); ``flags`` default: ``cpu_flags()``."""
    return bool(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def has_int8_dot(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has one-instruction int8 dot products (any of ``INT8_DOT_FLAGS``); ``flags`` default: ``cpu_flags()``."""
    return bool(set(INT8_DOT_FLAGS) & (cpu_flags() if flags is None else flags))


def int8_reduce_range(flags: frozenset[str] | None = None) -> bool:
    """Whether int8 weights should keep to 7 bits (-64..63) on this CPU: where it has none of ``INT8_DOT_FLAGS``.

    There, ONNX Runtime's and OpenVINO's uint8 x int8 kernels sum pairs of products in int16 (AVX2's
    VPMADDUBSW), which saturates once both products are near full range (2 x 255 x 127 > 32767); 7-bit
    weights keep every pair sum in range (2 x 255 x 64 < 32768). This is ONNX Runtime's ``reduce_range``
    and NNCF's ``OverflowFix.ENABLE``. Measured on all-MiniLM-L6-v2 on an AMD EPYC with AVX2 only: the
    OpenVINO int8 IR with 8-bit weights gave mean cosine 0.981 to fp32, the ONNX one 0.988 (on a Xeon
    with VNNI: 0.9991). Unknown flags (not Linux) count as none, so the export stays faithful anywhere.
    """
    return not has_int8_dot(flags)


def int8_range_warning(int8: Mapping | None, where: Path, flags: frozenset[str] | None = None) -> str | None:
    """Why an int8 export's weights may saturate on this CPU, as one line naming ``where``; None when they cannot.

    Args:
        int8: The export manifest's description of the loaded int8 file (its ``reduce_range``; exports
            that do not record it used 8-bit weights); None for a float file.
        where: The file loaded, for the message.
        flags: The CPU flags (default: ``cpu_flags()``).
    """
    if int8 is None or int8.get("reduce_range", False) or not int8_reduce_range(flags):
        return None
    return (
        f"{where}: int8 weights use the full 8-bit range, which saturates on this CPU (none of "
        f"{', '.join(INT8_DOT_FLAGS)}; {cpu_description()}) and costs fidelity (mean cosine 0.98-0.99 to fp32 "
        "measured on AVX2-only CPUs); export again on this machine, or with --reduce-range"
    )


def cpu_description() -> str:
    """One line naming the CPU and which of ``SPEED_FLAGS`` it has, for every printed speed figure."""
    flags = cpu_flags()
    if not flags:
        return f"cpu {cpu_model()} | flags unknown"
    present = " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none of " + " ".join(SPEED_FLAGS)
    return f"cpu {cpu_model()} | int8/bf16 flags: {present}"


@dataclass
class PrecisionChoice:
    """What "auto" resolved to on this machine, and why (written into export manifests).

    Attributes:
        precision: "float32" or "bfloat16".
        reason: One sentence: the missing flags, or the measured speed-up and fidelity.
        seconds: Best time of one probe forward pass per precision; empty when nothing was timed.
        cosine: Mean cosine of the bf16 probe embeddings to fp32; None when nothing was timed.
        batch_cosine: Least cosine of a bf16 probe text's vector alone to its vector in the probe batch;
            None when nothing was timed.
        cpu: ``cpu_description()`` of the machine that decided.
    """

    precision: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)
    cosine: float | None = None
    batch_cosine: float | None = None
    cpu: str = field(default_factory=cpu_description)

    def as_dict(self) -> dict:
        return asdict(self)


def time_forwards(forwards: Mapping[str, Callable[[], np.ndarray]], rounds: int = 3) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best seconds of each zero-argument forward pass over ``rounds`` rounds, and each one's last output.

    The passes take turns within a round, so load from other processes slows them alike; each is run
    once untimed first (kernel selection, allocation).
    """
    outputs = {name: forward() for name, forward in forwards.items()}
    seconds = dict.fromkeys(forwards, float("inf"))
    for _ in range(rounds):
        for name, forward in forwards.items():
            started = time.perf_counter()
            outputs[name] = forward()
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    return seconds, outputs


def probe_inputs(vocab_size: int, max_positions: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``PROBE_SHAPE`` (batch, seq_len) int64 ids drawn from ``vocab_size`` (seeded) and their mask,
    seq_len shortened to ``max_positions``: inputs to time a backend on before any text is at hand.

    The rows' lengths are spread from seq_len down to a sixteenth of it (ids 0 past each row's end), so
    the batch is padded as real batches are, and ``PrecisionProbe.alone`` has something to differ from.
    """
    batch, length = PROBE_SHAPE
    length = min(length, max_positions or length)
    lengths = np.linspace(length, max(length // 16, 1), batch).astype(np.int64)  # (batch,)
    attention_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)  # (batch, seq_len)
    input_ids = np.random.default_rng(0).integers(1, vocab_size, size=(batch, length), dtype=np.int64) * attention_mask
    return input_ids, attention_mask


class PrecisionProbe(NamedTuple):
    """What ``choose_precision`` decides on: each precision's best seconds and (batch, dim) output on the
    probe batch, and the bf16 forward of each probe row alone (batch, dim), trimmed to its length."""

    seconds: dict[str, float]
    outputs: dict[str, np.ndarray]
    alone: np.ndarray


Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def measure_precisions(
    forwards: Mapping[str, Forward], input_ids: np.ndarray, attention_mask: np.ndarray, *, sequence_multiple: int = 1
) -> PrecisionProbe:
    """Time ``forwards`` ("float32", "bfloat16": (ids, mask) -> (batch, dim)) on the probe batch, and run
    each of its rows alone at bf16, padded as ``Encoder.encode`` pads a batch of that one text: to
    ``padded_length`` of its length with the backend's ``sequence_multiple``.

    A text alone is compared with the same text in the batch exactly as encode would embed both: a
    runtime whose kernels differ on lengths that are not whole blocks (OpenVINO) must not be judged
    batch-dependent on a shape encode never gives it (OpenVINO's int8 IR at bf16 on an AMD EPYC Zen 5:
    least cosine 0.999843 with rows trimmed to their lengths, 1.000000 padded to multiples of 16).
    """
    seconds, outputs = time_forwards({name: partial(forward, input_ids, attention_mask) for name, forward in forwards.items()})
    limit = input_ids.shape[1]
    lengths = [padded_length(int(n), sequence_multiple, limit) for n in attention_mask.sum(axis=1)]
    alone = np.concatenate([forwards["bfloat16"](input_ids[row : row + 1, :n], attention_mask[row : row + 1, :n]) for row, n in enumerate(lengths)])
    return PrecisionProbe(seconds, outputs, alone)


def choose_precision(
    measure: Callable[[], PrecisionProbe],
    *,
    flags: frozenset[str] | None = None,
    min_cosine: float = MIN_BF16_COSINE,
) -> PrecisionChoice:
    """Resolve "auto": bfloat16 where the CPU has ``BF16_FLAGS`` and ``measure`` shows it faster, faithful and
    batch-independent, else float32.

    Args:
        measure: Called only where the CPU has bf16: returns the ``PrecisionProbe`` of "float32" and
            "bfloat16", as ``measure_precisions`` does.
        flags: The CPU flags (default: ``cpu_flags()``).
        min_cosine: The lowest bf16-to-float32 mean cosine accepted: ``MIN_BF16_COSINE``, or
            ``MIN_INT8_COSINE`` for an int8 graph.

    Returns:
        The choice, with the timings and the bf16 cosine it was based on.
    """
    if not has_bf16(flags):
        return PrecisionChoice("float32", f"the CPU has none of {', '.join(BF16_FLAGS)}, so bf16 would be emulated")
    seconds, outputs, alone = measure()
    cosine, _ = mean_cosine(outputs["float32"], outputs["bfloat16"])
    _, batch_cosine = mean_cosine(outputs["bfloat16"], alone)
    speedup = seconds["float32"] / max(seconds["bfloat16"], 1e-12)
    measured = (f"bf16 ran {speedup:.2f}x the speed of fp32 on a probe batch, mean cosine to fp32 {cosine:.5f}, "
                f"least cosine of a text alone to it in the batch {batch_cosine:.6f}")
    choice = partial(PrecisionChoice, seconds=seconds, cosine=cosine, batch_cosine=batch_cosine)
    if speedup < MIN_BF16_SPEEDUP:
        return choice("float32", f"{measured}: less than {MIN_BF16_SPEEDUP}x faster")
    if cosine < min_cosine:
        return choice("float32", f"{measured}: below {min_cosine}")
    if batch_cosine < MIN_BATCH_COSINE:
        return choice("float32", f"{measured}: a vector that depends on its batch (below {MIN_BATCH_COSINE})")
    return choice("bfloat16", measured)


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(mean, min) row-wise cosine similarity of two (n, dim) embedding matrices."""
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    candidate = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosines = (reference * candidate).sum(axis=1)  # (n,)
    return float(cosines.mean()), float(cosines.min())
