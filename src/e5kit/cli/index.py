"""``e5kit index build|add|delete``: a FAISS index of chunked documents with a SQLite document store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import BACKEND_HELP, Backend, app, fail, load_encoder, output_folder
from e5kit.cli.options import config_option
from e5kit.hub import DEFAULT_MODEL
from e5kit.retrieval.engines import StoreEmbedding
from e5kit.serving.index import IndexSettings

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


def _read_corpus(corpus: Path, id_field: str, text_field: str, title_field: str):
    from e5kit.io.files import InputFormatError
    from e5kit.serving.index import corpus_documents

    try:
        return list(corpus_documents(corpus, id_field=id_field, text_field=text_field, title_field=title_field))
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


def _validated(schema, **values):
    """``schema`` from the options given (None: not given, the field's default stands); bad values fail naming the option."""
    from pydantic import ValidationError

    try:
        return schema(**{name: value for name, value in values.items() if value is not None})
    except ValidationError as error:
        raise fail("; ".join(f"--{'-'.join(str(part).replace('_', '-') for part in e['loc'])}: {e['msg']}" for e in error.errors())) from error


def _add(index, documents, batch_size: int | None, embedding=None) -> None:
    import sqlite3

    from e5kit.serving.index import IndexStoreError

    try:
        report = index.add(documents, batch_size=batch_size, show_progress=True, embedding=embedding)
    except (IndexStoreError, ValueError) as error:
        raise fail(str(error)) from error
    except (sqlite3.Error, OSError) as error:
        raise fail(f"{index.path}: cannot write the index ({error})") from error
    typer.echo(
        f"{index.path}: {report} (window {index.stored.window} tokens, overlap {index.settings.overlap}); "
        f"now {index.num_documents} documents, {index.num_chunks} chunks"
    )


@index_app.command()
def build(
    corpus: Path = typer.Option(..., "--corpus", "-c", help=CORPUS_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to create."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model directory, bundled name, or Hub id."),
    backend: Backend = typer.Option(Backend.torch, help=BACKEND_HELP),
    kind: Kind = typer.Option(Kind.flat, help="flat: exact search; hnsw: graph (fast, approximate); ivfpq: compressed (needs >= 2**pq_bits chunks to train)."),
    window: int = typer.Option(None, min=1, help="Tokens per chunk (default: what fits in the model's max length after the prefix)."),
    overlap: int = typer.Option(32, min=0, help="Tokens shared by consecutive chunks."),
    hnsw_m: int = typer.Option(32, min=2, help="HNSW: neighbours per node."),
    ivf_lists: int = typer.Option(64, min=1, help="IVF-PQ: coarse clusters."),
    pq_subquantizers: int = typer.Option(8, min=1, help="IVF-PQ: sub-vectors per code (must divide the dimension)."),
    pq_bits: int = typer.Option(8, min=1, max=16, help="IVF-PQ: bits per sub-vector code."),
    nprobe: int = typer.Option(8, min=1, help="IVF-PQ: clusters visited per search."),
    id_field: str = typer.Option("_id", help="JSONL field of the document id (falls back to 'id')."),
    text_field: str = typer.Option("text", help="JSONL field of the document text."),
    title_field: str = typer.Option("title", help="JSONL field of the title (optional; embedded before the text)."),
    batch_size: int = typer.Option(None, min=1, help="Chunks per forward pass (default: 32 on torch, 8 on ONNX)."),
    overwrite: bool = typer.Option(False, help="Replace an existing index in --out."),
    train_sample: int = config_option(IndexSettings, "train_sample"),
    engine: str = ENGINE,
    workers: int = WORKERS,
    block_rows: int = BLOCK_ROWS,
) -> None:
    """Chunk, embed and index a corpus; documents map back to their chunks' character offsets.

    The chunks are embedded in blocks into OUT/embeddings first, then FAISS is filled block by block.
    """
    from e5kit.retrieval.engines import torchrun_rank
    from e5kit.serving.index import IndexStoreError, VectorIndex, embed_documents, index_window

    settings = _validated(
        IndexSettings, kind=kind.value, window=window, overlap=overlap, hnsw_m=hnsw_m, ivf_lists=ivf_lists,
        pq_subquantizers=pq_subquantizers, pq_bits=pq_bits, nprobe=nprobe, train_sample=train_sample,
    )
    embedding = _validated(StoreEmbedding, engine=engine, workers=workers, block_rows=block_rows)
    documents = _read_corpus(corpus, id_field, text_field, title_field)
    output_folder(out)
    encoder = load_encoder(model, backend=backend.value)
    model_ref = str(Path(model).resolve()) if Path(model).exists() else model
    if embedding.engine == "torchrun" and torchrun_rank()[0] != 0:  # rank 0 creates and fills the index
        try:
            embed_documents(out, documents, encoder, settings, window=index_window(encoder, settings), embedding=embedding, batch_size=batch_size)
        except (IndexStoreError, ValueError) as error:
            raise fail(str(error)) from error
        return
    try:
        index = VectorIndex.create(out, encoder, settings, model=model_ref, backend=backend.value, overwrite=overwrite)
    except (IndexStoreError, ValueError) as error:
        raise fail(str(error)) from error
    _add(index, documents, batch_size, embedding)


@index_app.command()
def add(
    index_dir: Path = typer.Argument(..., help="Index folder from `e5kit index build`."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help=CORPUS_HELP + " Documents whose id is indexed already are replaced."),
    id_field: str = typer.Option("_id", help="JSONL field of the document id (falls back to 'id')."),
    text_field: str = typer.Option("text", help="JSONL field of the document text."),
    title_field: str = typer.Option("title", help="JSONL field of the title."),
    backend: Backend = typer.Option(None, help=BACKEND_HELP + " Default: the backend the index was built with."),
    batch_size: int = typer.Option(None, min=1, help="Chunks per forward pass (default: 32 on torch, 8 on ONNX)."),
    engine: str = ENGINE,
    workers: int = WORKERS,
    block_rows: int = BLOCK_ROWS,
) -> None:
    """Add (or replace) documents in an existing index."""
    from e5kit.retrieval.engines import torchrun_rank

    embedding = _validated(StoreEmbedding, engine=engine, workers=workers, block_rows=block_rows)
    documents = _read_corpus(corpus, id_field, text_field, title_field)
    if embedding.engine == "torchrun" and torchrun_rank()[0] != 0:  # rank 0 opens and changes the index
        from e5kit.encoder.model_format import ModelDirectoryError
        from e5kit.serving.index import IndexStoreError, embed_for_add

        try:
            embed_for_add(index_dir, documents, backend=backend.value if backend else None, embedding=embedding, batch_size=batch_size)
        except (IndexStoreError, FileNotFoundError, ModelDirectoryError) as error:
            raise fail(str(error)) from error
        return
    _add(_open_index(index_dir, backend), documents, batch_size, embedding)


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
