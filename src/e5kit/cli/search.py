"""``e5kit search IDX "query"``: the top documents of an index, each with its best chunk."""

from __future__ import annotations

from pathlib import Path

import typer

from e5kit.cli.app import app, fail
from e5kit.cli.index import BACKEND_HELP, Backend, _open_index


@app.command()
def search(
    index_dir: Path = typer.Argument(..., help="Index folder from `e5kit index build`."),
    query: list[str] = typer.Argument(..., help="One or more queries (the model's query prefix is added)."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Documents to show per query."),
    snippet_chars: int = typer.Option(240, min=20, help="Characters of the best chunk to show."),
    backend: Backend = typer.Option(None, help=BACKEND_HELP + " Default: the backend the index was built with."),
) -> None:
    """Print the top-k documents for each query: score, id, title, best chunk's offsets and a snippet."""
    index = _open_index(index_dir, backend)
    try:
        results = index.search(query, k=top_k)
    except (TypeError, ValueError) as error:
        raise fail(str(error)) from error
    for text, hits in zip(query, results):
        typer.echo(f"query: {text}")
        if not hits:
            typer.echo("  (the index is empty)")
        for rank, hit in enumerate(hits, start=1):
            title = f" | {hit.title}" if hit.title else ""
            typer.echo(f"  {rank}. {hit.score:.4f}  {hit.doc_id}{title}  [chunk {hit.chunk_index}, chars {hit.start}-{hit.end}]")
            typer.echo(f"     {hit.snippet(snippet_chars)}")
