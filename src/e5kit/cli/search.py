"""``e5kit search IDX "query"``: the top documents of an index, each with its best chunk."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from e5kit.cli.app import app, fail
from e5kit.cli.index import BACKEND_HELP, Backend, _open_index


@app.command()
def search(
    index_dir: Path = typer.Argument(..., help="Index folder from `e5kit index build`."),
    query: list[str] = typer.Argument(
        ..., help="One or more queries (the model's query prefix is added); - reads them from standard input, one per line."
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Documents to show per query."),
    snippet_chars: int = typer.Option(240, min=20, help="Characters of the best chunk to show."),
    backend: Backend = typer.Option(None, help=BACKEND_HELP + " Default: the backend the index was built with."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object per query and line (JSON Lines) instead of text: "
        '{"query", "hits": [{"rank", "score", "doc_id", "title", "chunk_index", "start", "end", "snippet"}]}.',
    ),
) -> None:
    """Print the top-k documents for each query: score, id, title, best chunk's offsets and a snippet.

    Offsets are character positions in the document's title + " " + text (its text alone when it has
    no title); the snippet is the best chunk, shortened to --snippet-chars on a word boundary.
    With - as the query, every line of standard input is one: e5kit search IDX - --json < questions.txt
    """
    query = read_queries(query)
    index = _open_index(index_dir, backend)
    try:
        results = index.search(query, k=top_k)
    except (TypeError, ValueError) as error:
        raise fail(str(error)) from error
    if as_json:
        for text, hits in zip(query, results):
            typer.echo(json.dumps({"query": text, "hits": [hit_record(rank, hit, snippet_chars) for rank, hit in enumerate(hits, start=1)]},
                                  ensure_ascii=False))
        return
    for text, hits in zip(query, results):
        typer.echo(f"query: {text}")
        if not hits:
            typer.echo("  (the index is empty)")
        for rank, hit in enumerate(hits, start=1):
            title = f" | {hit.title}" if hit.title else ""
            typer.echo(f"  {rank}. {hit.score:.4f}  {hit.doc_id}{title}  [chunk {hit.chunk_index}, chars {hit.start}-{hit.end}]")
            typer.echo(f"     {hit.snippet(snippet_chars)}")


def read_queries(arguments: list[str]) -> list[str]:
    """The queries, each ``-`` among the arguments replaced by the lines of standard input."""
    from e5kit.io.files import STDIN, InputFormatError
    from e5kit.io.tables import read_texts

    queries: list[str] = []
    for argument in arguments:
        try:
            queries += read_texts(STDIN, jsonl=False) if argument == STDIN else [argument]
        except InputFormatError as error:
            raise fail(str(error)) from error
    return queries


def hit_record(rank: int, hit, snippet_chars: int) -> dict:
    """One hit of ``search --json``: its rank (1 = best), inner-product score, document id and title, and
    the best chunk's index, character offsets [start, end) and snippet."""
    return {
        "rank": rank, "score": float(hit.score), "doc_id": hit.doc_id, "title": hit.title,
        "chunk_index": hit.chunk_index, "start": hit.start, "end": hit.end, "snippet": hit.snippet(snippet_chars),
    }
