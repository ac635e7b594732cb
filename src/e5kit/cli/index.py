"""``e5kit index build|add|delete``: a FAISS index of chunked documents with a SQLite document store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import BACKEND_HELP, FORCE_OPTION, Backend, app, fail, load_encoder, output_folder, overrides_option
from e5kit.cli.options import config_option
from e5kit.retrieval.engines import StoreEmbedding
from e5kit.serving.index_stage import IndexConfig

index_app = typer.Typer(
    help="Build and update a vector index of long documents (chunked into overlapping token windows).",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


class Kind(str, Enum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


CORPUS_HELP = "JSONL documents (BEIR corpus layout: _id, title, text); .gz/.zst allowed."
ENGINE = config_option(StoreEmbedding, "engine", note="torchrun: launch this command with torchrun; rank 0 writes the index.")
WORKERS = config_option(StoreEmbedding, "workers", note="With --engine ray.")
BLOCK_ROWS = config_option(StoreEmbedding, "block_rows", note="A killed build or add run again embeds only the blocks still missing.")
SEGMENT = config_option(IndexConfig, "segment_chunks", note="A killed add run again with the same value embeds only the blocks still missing.")


def _check_corpus(corpus: Path, id_field: str, text_field: str, title_field: str) -> None:
    """Read the corpus through once, keeping nothing, so a malformed record or repeated id is one error
    line before any output; the add then reads it again, a segment at a time."""
    from e5kit.io.files import InputFormatError
    from e5kit.serving.index import corpus_documents

    try:
        for _document in corpus_documents(corpus, id_field=id_field, text_field=text_field, title_field=title_field):
            pass
    except (FileNotFoundError, InputFormatError) as error:
        raise fail(str(error)) from error


def _open_index(path: Path, backend: Backend | None):
    """Open an index to change it: a folder or store that cannot be written is an error before the model loads."""
    import sqlite3

    from transformers.utils import logging as transformers_logging

    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.serving.index import DOCSTORE_FILE, SETTINGS_FILE, VECTORS_FILE, IndexStoreError, VectorIndex

    if path.is_dir():  # a missing one is VectorIndex.open's error ("not an index")
        output_folder(path, existing=(SETTINGS_FILE, VECTORS_FILE, DOCSTORE_FILE))
    transformers_logging.disable_progress_bar()
    try:
        return VectorIndex.open(path, backend=backend.value if backend else None)
    except (IndexStoreError, FileNotFoundError, ModelDirectoryError) as error:
        raise fail(str(error)) from error
    except (sqlite3.Error, OSError) as error:
        raise fail(f"{path}: cannot open the index ({error})") from error


def _add(index, documents, batch_size: int | None, segment_chunks: int, embedding=None) -> None:
    import sqlite3

    from e5kit.serving.index import IndexStoreError

    try:
        report = index.add(documents, batch_size=batch_size, show_progress=True, segment_chunks=segment_chunks, embedding=embedding)
    except (IndexStoreError, ValueError) as error:  # ValueError: also the corpus's InputFormatError, read as the add goes
        raise fail(str(error)) from error
    except (sqlite3.Error, OSError) as error:
        raise fail(f"{index.path}: cannot write the index ({error})") from error
    typer.echo(
        f"{index.path}: {report} (window {index.stored.window} tokens, overlap {index.settings.overlap}); "
        f"now {index.num_documents} documents, {index.num_chunks} chunks"
    )


@index_app.command()
def build(
    corpus: Path = config_option(IndexConfig, "corpus", "--corpus", "-c", note="Required."),
    out: Path = config_option(IndexConfig, "out", "--out", "-o", note="Required."),
    model: str = config_option(IndexConfig, "model", "--model", "-m"),
    backend: Backend = config_option(IndexConfig, "backend"),
    kind: Kind = config_option(IndexConfig, "kind"),
    window: int = config_option(IndexConfig, "window"),
    overlap: int = config_option(IndexConfig, "overlap"),
    hnsw_m: int = config_option(IndexConfig, "hnsw_m"),
    ivf_lists: int = config_option(IndexConfig, "ivf_lists"),
    pq_subquantizers: int = config_option(IndexConfig, "pq_subquantizers"),
    pq_bits: int = config_option(IndexConfig, "pq_bits"),
    nprobe: int = config_option(IndexConfig, "nprobe"),
    id_field: str = config_option(IndexConfig, "id_field"),
    text_field: str = config_option(IndexConfig, "text_field"),
    title_field: str = config_option(IndexConfig, "title_field"),
    batch_size: int = config_option(IndexConfig, "batch_size"),
    train_sample: int = config_option(IndexConfig, "train_sample"),
    engine: str = ENGINE,
    workers: int = WORKERS,
    block_rows: int = BLOCK_ROWS,
    segment_chunks: int = SEGMENT,
    config: Path = typer.Option(None, "--config", help="YAML config of the build (fields of IndexConfig)."),
    set_: list[str] = overrides_option("--set kind=hnsw --set hnsw_ef_search=128"),
    force: bool = FORCE_OPTION,
) -> None:
    """Chunk, embed and index a corpus; documents map back to their chunks' character offsets.

    The corpus is checked in one pass, then read in segments of --segment-chunks chunks: each is
    chunked, embedded in blocks into OUT/embeddings and committed to FAISS and the document store
    before the next is read. OUT/report.json, written last, marks a finished build: a rerun with the
    same settings, model and corpus is skipped, a changed one rebuilds the index, --force rebuilds it
    (and replaces an index no build recorded); a killed build resumes its embedding blocks.
    """
    import sqlite3

    from e5kit.config import load_config
    from e5kit.encoder.model_format import ModelDirectoryError
    from e5kit.io.files import InputFormatError
    from e5kit.serving.index import IndexStoreError
    from e5kit.serving.index_stage import IndexStage
    from e5kit.stage import REPORT_FILE, read_marker, run_stage

    given = {
        "corpus": corpus, "out": out, "model": model, "backend": backend and backend.value, "kind": kind and kind.value, "window": window,
        "overlap": overlap, "hnsw_m": hnsw_m, "ivf_lists": ivf_lists, "pq_subquantizers": pq_subquantizers, "pq_bits": pq_bits, "nprobe": nprobe,
        "id_field": id_field, "text_field": text_field, "title_field": title_field, "batch_size": batch_size, "train_sample": train_sample,
        "engine": engine, "workers": workers, "block_rows": block_rows, "segment_chunks": segment_chunks,
    }
    try:
        settings = load_config(IndexConfig, config, set_, options=given)
    except ValueError as error:
        raise fail(str(error)) from error
    _check_corpus(settings.corpus, settings.id_field, settings.text_field, settings.title_field)  # named before any output
    output_folder(settings.out)
    # An index a build's marker recorded is this stage's to replace; another one only with --force.
    replace = force or read_marker(settings.out / REPORT_FILE) is not None
    stage = IndexStage(settings, lambda name, backend: load_encoder(name, backend=backend), replace=replace)
    try:
        run_stage(stage, force=force, log=typer.echo)
    except (IndexStoreError, ValueError, FileNotFoundError, InputFormatError, ModelDirectoryError) as error:
        raise fail(str(error)) from error
    except (sqlite3.Error, OSError) as error:
        raise fail(f"{settings.out}: cannot write the index ({error})") from error


@index_app.command()
def add(
    index_dir: Path = typer.Argument(..., help="Index folder from `e5kit index build`."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help=CORPUS_HELP + " Documents whose id is indexed already are replaced."),
    id_field: str = config_option(IndexConfig, "id_field"),
    text_field: str = config_option(IndexConfig, "text_field"),
    title_field: str = config_option(IndexConfig, "title_field"),
    backend: Backend = typer.Option(None, help=BACKEND_HELP + " Default: the backend the index was built with."),
    batch_size: int = config_option(IndexConfig, "batch_size"),
    engine: str = ENGINE,
    workers: int = WORKERS,
    block_rows: int = BLOCK_ROWS,
    segment_chunks: int = SEGMENT,
) -> None:
    """Add (or replace) documents in an existing index, reading the corpus a segment at a time (after
    one pass that checks it)."""
    from e5kit.config import ConfigError, load_config
    from e5kit.retrieval.engines import torchrun_rank
    from e5kit.serving.index import corpus_documents

    try:
        embedding = load_config(StoreEmbedding, options={"engine": engine, "workers": workers, "block_rows": block_rows})
    except ConfigError as error:
        raise fail(str(error)) from error
    given = {"id_field": id_field, "text_field": text_field, "title_field": title_field, "segment_chunks": segment_chunks}
    chosen = {name: IndexConfig.model_fields[name].default if value is None else value for name, value in given.items()}  # the build's defaults
    segment_chunks = chosen.pop("segment_chunks")
    _check_corpus(corpus, *chosen.values())
    documents = corpus_documents(corpus, **chosen)
    if embedding.engine == "torchrun" and torchrun_rank()[0] != 0:  # rank 0 opens and changes the index
        from e5kit.encoder.model_format import ModelDirectoryError
        from e5kit.io.files import InputFormatError
        from e5kit.serving.index import IndexStoreError, embed_for_add

        try:
            embed_for_add(index_dir, documents, backend=backend.value if backend else None, segment_chunks=segment_chunks, embedding=embedding,
                          batch_size=batch_size)
        except (IndexStoreError, InputFormatError, FileNotFoundError, ModelDirectoryError) as error:
            raise fail(str(error)) from error
        return
    _add(_open_index(index_dir, backend), documents, batch_size, segment_chunks, embedding)


@index_app.command()
def delete(
    index_dir: Path = typer.Argument(..., help="Index folder from `e5kit index build`."),
    doc_ids: list[str] = typer.Argument(None, help="Document ids to delete."),
    ids_file: Path = typer.Option(None, "--ids-file", help="A file with one document id per line (added to the arguments)."),
) -> None:
    """Delete documents (all their chunks) from an index; ids not in the index are listed."""
    from e5kit.io.tables import read_texts

    ids = list(doc_ids or [])
    if ids_file is not None:
        try:
            ids += [line.strip() for line in read_texts(ids_file)]
        except (FileNotFoundError, ValueError) as error:
            raise fail(str(error)) from error
    if not ids:
        raise fail("no document ids given (pass ids as arguments or --ids-file)")
    import sqlite3

    index = _open_index(index_dir, Backend.torch)
    try:
        deleted, missing = index.delete(ids)
    except (sqlite3.Error, OSError) as error:
        raise fail(f"{index_dir}: cannot write the index ({error})") from error
    stale = f"; {index.stale_vectors} deleted vectors stay in the HNSW graph, filtered at search" if index.stale_vectors else ""
    typer.echo(f"{index_dir}: deleted {deleted} documents; not found: {len(missing)} {missing[:10] if missing else ''}{stale}")
