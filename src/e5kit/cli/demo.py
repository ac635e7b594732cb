"""``e5kit demo``: semantic search over the Python standard library's own documentation, offline."""

from __future__ import annotations

import time

import typer

from e5kit.cli.app import app, load_encoder
from e5kit.hub import DEFAULT_MODEL

DEMO_QUERIES = (
    "read and write compressed gzip files",
    "parse command line arguments",
    "send an email over SMTP",
    "schedule a function to run after a delay in another thread",
    "compute a cryptographic hash of a message",
)


@app.command()
def demo(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model to demonstrate."),
    top_k: int = typer.Option(3, min=1, help="Results shown per query."),
) -> None:
    """Embed the docstrings of the standard library's modules and answer a few questions with them."""
    import numpy as np

    from e5kit.data.readers.pydoc import iter_module_docs

    records = list(iter_module_docs(members=False))
    encoder = load_encoder(model)
    started = time.perf_counter()
    passages = encoder.encode([r.text for r in records], role="passage", show_progress=True)
    truncated = encoder.last_stats.truncated
    queries = encoder.encode(list(DEMO_QUERIES), role="query")
    elapsed = time.perf_counter() - started
    typer.echo(
        f"embedded {len(records)} standard-library module docstrings with {model} in {elapsed:.1f}s "
        f"(dim {encoder.dimension}; {truncated} docstrings cut at {encoder.max_length} tokens)\n"
    )
    scores = queries @ passages.T
    for query, row in zip(DEMO_QUERIES, scores):
        typer.secho(f"query: {query}", bold=True)
        for index in np.argsort(-row)[:top_k]:
            typer.echo(f"  {row[index]:.3f}  {records[index].title[:100]}")
    first, second = "How do I unpack a tar archive?", "Extract files from a tarball."
    pair = encoder.encode([first, second], role="query")
    typer.echo(f"\nsimilarity({first!r}, {second!r}) = {float(pair[0] @ pair[1]):.3f}")
