"""``e5kit index build`` as a stage (``e5kit.stage``): a corpus -> an index folder, its marker
``OUT/report.json``.

A rerun with the same settings, model and corpus file is skipped; a changed one rebuilds the index
(a finished index that no ``index build`` recorded is refused unless ``--force``). A killed build
resumes its embedding blocks (``OUT/embeddings``, named by the model and the chunks, so blocks of
other settings are never taken up); the index itself is started again (``VectorIndex.create``
replaces an unfinished build). The corpus is read as the build goes, one segment at a time
(``segment_chunks``), never held whole.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from e5kit.encoder.backend import weights_fingerprint
from e5kit.encoder.model_format import BackendName
from e5kit.hub import DEFAULT_MODEL, resolve_model_dir
from e5kit.retrieval.engines import StoreEmbedding
from e5kit.serving.index import (
    SEGMENT_CHUNKS,
    SETTINGS_FILE,
    IndexSettings,
    IndexStoreError,
    VectorIndex,
    corpus_documents,
    embed_documents,
    index_window,
)
from e5kit.stage import Stage, local_model


class IndexConfig(IndexSettings, StoreEmbedding):
    """What ``e5kit index build`` builds: the index settings (``IndexSettings``), how the chunks are
    embedded (``StoreEmbedding``) and the files.

    Attributes:
        corpus: JSONL documents (BEIR corpus layout: _id, title, text); .gz/.zst allowed.
        out: Index folder to create.
        model: Model directory, bundled name, or Hub id.
        backend: torch; onnx for a model directory written by `e5kit export onnx`; openvino for one
            written by `e5kit export openvino`; auto for the backend `e5kit export auto` measured
            fastest and recorded (the index stores the backend; search and serve use it).
        kind: flat: exact search; hnsw: graph (fast, approximate); ivfpq: compressed (needs >= 2**pq_bits
            chunks to train).
        window: Tokens per chunk (None: what fits in the model's max length after the prefix).
        overlap: Tokens shared by consecutive chunks.
        hnsw_m: HNSW: neighbours per node.
        ivf_lists: IVF-PQ: coarse clusters.
        pq_subquantizers: IVF-PQ: sub-vectors per code (must divide the dimension).
        pq_bits: IVF-PQ: bits per sub-vector code.
        nprobe: IVF-PQ: clusters visited per search.
        id_field: JSONL field of the document id (falls back to 'id').
        text_field: JSONL field of the document text.
        title_field: JSONL field of the title (optional; embedded before the text).
        batch_size: Chunks per forward pass (None: 32 on torch, 8 on ONNX).
        segment_chunks: Chunks read from the corpus, embedded and committed at a time: memory holds one
            segment's texts, never the corpus's. The index is the same with any value (ivfpq reads its
            first segment up to train_sample chunks, the ones it trains on).
    """

    model_config = ConfigDict(extra="forbid")

    corpus: Path
    out: Path
    model: str = DEFAULT_MODEL
    backend: BackendName = "torch"
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"
    batch_size: int | None = Field(default=None, ge=1)
    segment_chunks: int = Field(default=SEGMENT_CHUNKS, ge=1)

    def index_settings(self) -> IndexSettings:
        """The settings stored in the index (``index.json``)."""
        return IndexSettings(**self.model_dump(include=set(IndexSettings.model_fields)))

    def embedding(self) -> StoreEmbedding:
        return StoreEmbedding(**self.model_dump(include=set(StoreEmbedding.model_fields)))


class IndexStage(Stage[IndexConfig]):
    """Index build as a stage: reads the corpus (and a model folder), writes the index folder.

    Args:
        config: The build's settings.
        load_encoder: (model, backend) -> the encoder (the CLI passes its clean-error loader).
        replace: Replace an index already in ``out`` (``--force``, or a build the marker recorded).
    """

    name = "index"
    config_class = IndexConfig
    # How the chunks are embedded, never what: the index is the same with each engine and segment size (tested).
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"engine", "workers", "batch_size", "segment_chunks"})
    resumable = True

    def __init__(self, config: IndexConfig, load_encoder: Callable[[str, str], Any], replace: bool = False) -> None:
        super().__init__(config)
        self.load_encoder = load_encoder
        self.replace = replace

    @property
    def output_dir(self) -> Path:
        return Path(self.config.out)

    def inputs(self) -> list[Path]:
        return [self.config.corpus, *local_model(self.config.model)]

    def outputs(self) -> dict[str, Path]:
        return {"index": self.output_dir}

    def execute(self, log: Callable[[str], None]) -> dict[str, Any]:
        from e5kit.retrieval.engines import torchrun_rank

        config, settings, embedding = self.config, self.config.index_settings(), self.config.embedding()
        documents = corpus_documents(config.corpus, id_field=config.id_field, text_field=config.text_field, title_field=config.title_field)
        encoder = self.load_encoder(config.model, config.backend)
        if embedding.engine == "torchrun" and torchrun_rank()[0] != 0:  # rank 0 creates and fills the index
            embed_documents(config.out, documents, encoder, settings, window=index_window(encoder, settings), segment_chunks=config.segment_chunks,
                            embedding=embedding, batch_size=config.batch_size)
            return {}
        model_ref = str(Path(config.model).resolve()) if Path(config.model).exists() else config.model
        try:
            index = VectorIndex.create(
                config.out, encoder, settings, model=model_ref, backend=config.backend, overwrite=self.replace,
                model_fingerprint=weights_fingerprint(resolve_model_dir(config.model)),
            )
        except IndexStoreError as error:
            if (config.out / SETTINGS_FILE).exists() and not self.replace:
                raise IndexStoreError(f"{error}; no report.json says e5kit index build made it: --force replaces it") from None
            raise
        report = index.add(documents, batch_size=config.batch_size, show_progress=True, segment_chunks=config.segment_chunks, embedding=embedding)
        log(f"{index.path}: {report} (window {index.stored.window} tokens, overlap {index.settings.overlap}); "
            f"now {index.num_documents} documents, {index.num_chunks} chunks")
        return {"added": report.added, "replaced": report.replaced, "chunks": report.chunks, "truncated": report.truncated,
                "empty": report.empty, "skipped": dict(report.skipped), "documents": index.num_documents, "window": index.stored.window}
