"""``e5kit encode`` and ``e5kit similarity``: embed texts from a file, or compare two texts."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import BACKEND_HELP, Backend, app, fail, load_encoder, output_file
from e5kit.hub import DEFAULT_MODEL


class Role(str, Enum):
    query = "query"
    passage = "passage"
    none = "none"


class InputFormat(str, Enum):
    auto = "auto"
    txt = "txt"
    jsonl = "jsonl"

    @property
    def jsonl_or_by_suffix(self) -> bool | None:
        """``read_texts``' ``jsonl``: None lets the file's suffix decide."""
        return None if self is InputFormat.auto else self is InputFormat.jsonl


MODEL_HELP = "Model directory (sentence-transformers or Hugging Face), bundled name, or Hub id."
DEVICE_HELP = "Torch device, e.g. cpu or cuda:0 (default: cuda when present); onnx and openvino run on the CPU."
DTYPE_HELP = (
    "float32, bfloat16, float16 (CUDA only), or auto (CPU: bfloat16 where the CPU has bf16 instructions and a "
    "short timing shows it faster and faithful). Default: torch float32, openvino the precision its export chose; "
    "refused for onnx (the graph fixes it) and auto (the record does). Output is float32 either way."
)


@app.command()
def encode(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    role: Role = typer.Option(
        None, "--role", "-r", help="query or passage: the model's prefix for it is added; none = raw text. Required for a model with prompts (E5)."
    ),
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="Texts: .txt (one per line) or .jsonl (see --field), .gz allowed; - reads standard input (see --input-format)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the (n, dim) float32 .npy array; - writes it to standard output."),
    input_format: InputFormat = typer.Option(
        InputFormat.auto, "--input-format", help="txt or jsonl; auto decides by the file's suffix, and reads standard input as txt."
    ),
    field: str = typer.Option("text", help="JSONL field holding the text."),
    batch_size: int = typer.Option(None, min=1, help="Texts per forward pass (default: 32 on torch, 8 on onnx)."),
    max_length: int = typer.Option(None, min=8, help="Token limit (default: the model's own)."),
    device: str = typer.Option(None, help=DEVICE_HELP),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    backend: Backend = typer.Option(Backend.torch, help=BACKEND_HELP),
) -> None:
    """Embed every text of a file (or of standard input) and save the matrix as .npy (row i = line i).

    In a pipe: cut -f2 docs.tsv | e5kit encode -m MODEL -i - -o - > docs.npy
    """
    import numpy as np

    from e5kit.io.files import AtomicFile, InputFormatError
    from e5kit.io.tables import read_texts

    try:
        texts = read_texts(input_path, field=field, jsonl=input_format.jsonl_or_by_suffix)
    except (FileNotFoundError, InputFormatError) as error:
        raise fail(str(error)) from error
    to_stdout = str(output) == "-"
    if not to_stdout:
        output_file(output)  # before the model loads: an unwritable output is a one-line error, not lost work
    encoder = load_encoder(model, max_length=max_length, backend=backend.value, device=device, dtype=dtype)
    if (choice := getattr(encoder.backend, "precision_choice", None)) is not None:  # what --dtype auto chose, and on what timing and fidelity
        typer.echo(f"precision: {choice.precision} ({choice.reason})", err=True)
    role_name = role.value if role is not None else None
    try:
        encoder.prompt_for(role_name)  # a model with prompts needs a role: refuse before embedding anything
    except ValueError as error:
        raise fail(f"{error} (--role)") from error
    started = time.perf_counter()
    embeddings = encoder.encode(texts, role=role_name, batch_size=batch_size, show_progress=True)
    elapsed = time.perf_counter() - started
    if to_stdout:
        np.save(sys.stdout.buffer, embeddings)
        sys.stdout.buffer.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Through a handle: np.save given a name without ".npy" would write to another path than the one reported.
        with AtomicFile(output) as staged, staged.temporary.open("wb") as handle:
            np.save(handle, embeddings)
    stats = encoder.last_stats
    # The report goes to standard error when the array goes to standard output.
    typer.echo(
        f"wrote {'standard output' if to_stdout else output}: {embeddings.shape[0]} x {embeddings.shape[1]} float32 "
        f"({elapsed:.1f}s, {len(texts) / max(elapsed, 1e-9):.1f} texts/s); "
        f"prefix {encoder.prompt_for(role_name)!r}; truncated at {encoder.max_length} tokens: {stats.truncated}",
        err=to_stdout,
    )


@app.command()
def similarity(
    text_a: str = typer.Argument(..., help="First text."),
    text_b: str = typer.Argument(..., help="Second text."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    role_a: Role = typer.Option(Role.query, help="Role of the first text (E5 uses query on both sides for symmetric similarity)."),
    role_b: Role = typer.Option(Role.query, help="Role of the second text (passage for question -> answer)."),
    device: str = typer.Option(None, help=DEVICE_HELP),
) -> None:
    """Print the cosine similarity of two texts."""
    import numpy as np

    from e5kit.io.text import has_visible_text

    for name, text in (("TEXT_A", text_a), ("TEXT_B", text_b)):  # checked before the model loads, and named
        if not has_visible_text(text):
            raise fail(f"{name}: no visible text (empty, whitespace or only invisible characters)")
    encoder = load_encoder(model, device=device)
    try:
        first = encoder.encode([text_a], role=role_a.value, normalize=True)
        second = encoder.encode([text_b], role=role_b.value, normalize=True)
    except (TypeError, ValueError) as error:
        raise fail(str(error)) from error
    typer.echo(f"{float(np.dot(first[0], second[0])):.4f}")
