"""Data-parallel embedding into an ``EmbeddingStore`` on existing engines: one process, torchrun, Ray Data.

Every engine hands each worker whole blocks of rows (``e5kit.retrieval.store``), and each worker
builds its own encoder from an :class:`EncoderSpec`, so the store is the same bytes whichever engine
and however many workers wrote it:

- ``local``: this process embeds every block.
- ``torchrun``: rank ``r`` of ``W`` embeds blocks ``b % W == r``, then every rank waits at a barrier
  (gloo or NCCL, whichever process group torchrun's launcher set up; one is joined from the
  environment, once per process, if none was), so each rank can read the whole store afterwards.
- ``ray``: a Ray Data actor pool (one model per actor, ``workers`` actors) maps over the missing block
  numbers; on a cluster the store folder must be on storage every node sees.

A killed run resumes with any engine: finished blocks are skipped. :func:`embed_texts` is the one entry
for a stage whose texts are in memory (an index's chunks, an evaluation corpus): it names the store by
what is embedded, so a rerun resumes it and other texts or another model never reuse it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from e5kit.processes import join_process_group
from e5kit.retrieval.store import (
    DEFAULT_BLOCK_ROWS,
    EmbeddingStore,
    ReadBlock,
    StoreLayout,
    embed_blocks,
    open_or_replace_store,
    store_fingerprint,
)

Engine = Literal["local", "torchrun", "ray"]
ENGINES: tuple[str, ...] = ("local", "torchrun", "ray")


@dataclass(frozen=True)
class EncoderSpec:
    """How a worker builds the encoder (``e5kit.encoder.Encoder.load`` arguments); picklable.

    Attributes:
        model: Model directory, bundled name or Hub id.
        max_length: Token limit (None: the model's own).
        similarity_fn_name: "cosine" / "dot" (None: the model's own).
        device: Torch device (None: the default).
        dtype: Torch dtype name ("float32", "bfloat16", ...; None: the default).
        backend: "torch", an exported backend ("onnx", "openvino") or "auto" (the one ``e5kit export auto`` recorded).
        file_name: The exported backend's file (None: the export's default).
    """

    model: str
    max_length: int | None = None
    similarity_fn_name: str | None = None
    device: str | None = None
    dtype: str | None = None
    backend: str = "torch"
    file_name: str | None = None

    @classmethod
    def of(cls, encoder, model: str, **fields) -> EncoderSpec:
        """The spec that loads ``model`` as ``encoder`` runs it: its backend, file and precision
        (``Backend.load_options``), so workers embed exactly what this process would; ``fields`` add the rest."""
        return cls(model, **{**encoder.backend.load_options(), **fields})

    def load(self):
        from e5kit.encoder import Encoder

        return Encoder.load(self.model, **{key: value for key, value in asdict(self).items() if key != "model" and value is not None})


class StoreEmbedding(BaseModel):
    """How a stage embeds many texts into an ``EmbeddingStore`` (fields shared by the stages' configs).

    Attributes:
        engine: Who embeds: "local" (this process), "torchrun" (every rank of a torchrun launch embeds
            its share of the blocks) or "ray" (a Ray Data actor pool of ``workers``, one model each).
            The output is the same with each.
        workers: Ray actors (default 2).
        block_rows: Texts per embedding block: embeddings in memory at once, and the unit a killed run
            resumes from.
    """

    model_config = ConfigDict(extra="forbid")

    engine: Engine = "local"
    workers: int | None = Field(default=None, ge=1)
    block_rows: int = Field(default=DEFAULT_BLOCK_ROWS, ge=1)


def slice_block(texts: list[str], block_rows: int, block: int) -> list[str]:
    """Block ``block`` of an in-memory list (``partial(slice_block, texts, block_rows)`` is a ``ReadBlock``)."""
    return texts[block * block_rows : (block + 1) * block_rows]


def list_blocks(texts: list[str], block_rows: int) -> ReadBlock:
    """A picklable ``ReadBlock`` over an in-memory list."""
    return partial(slice_block, texts, block_rows)


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) of this process under torchrun (0, 1 outside it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def embed_store(
    spec: EncoderSpec | None,
    read_block: ReadBlock,
    store: EmbeddingStore,
    *,
    role: str | None,
    engine: Engine = "local",
    workers: int | None = None,
    batch_size: int | None = None,
    encoder: Any = None,
) -> int:
    """Embed every missing block of ``store`` with ``engine``; returns the blocks this call embedded.

    Args:
        spec: The encoder each worker builds (None: ``encoder``, which then must be given; not for ``ray``).
        read_block: Block -> texts; picklable for ``ray``.
        store: The store to fill (``open_store``).
        role: Role of the texts ("query", "passage").
        engine: "local", "torchrun" or "ray".
        workers: Ray actors (default: 2); torchrun takes its world size from the launcher.
        batch_size: Texts per forward pass.
        encoder: An already loaded encoder for ``local``/``torchrun`` (spares loading it again).

    Raises:
        ValueError: an unknown engine, or ``ray`` without a spec.
        ImportError: ``ray`` without Ray installed (``pip install 'e5kit[ray]'``).
    """
    if spec is None and (engine == "ray" or encoder is None):
        raise ValueError(f"engine {engine}: needs an EncoderSpec (the model each worker loads)")
    if engine == "local":
        return embed_blocks(encoder or spec.load(), read_block, store, role=role, batch_size=batch_size)
    if engine == "torchrun":
        return _embed_torchrun(spec, read_block, store, role=role, batch_size=batch_size, encoder=encoder)
    if engine == "ray":
        return _embed_ray(spec, read_block, store, role=role, workers=workers or 2, batch_size=batch_size)
    raise ValueError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")


def _embed_torchrun(spec: EncoderSpec, read_block: ReadBlock, store: EmbeddingStore, *, role, batch_size, encoder) -> int:
    import torch.distributed as dist

    try:
        join_process_group("gloo")
    except ValueError as error:
        raise ValueError(f"engine torchrun: {error}") from None
    rank, world_size = dist.get_rank(), dist.get_world_size()
    done = embed_blocks(encoder or spec.load(), read_block, store, role=role, rank=rank, world_size=world_size, batch_size=batch_size)
    dist.barrier()  # every rank reads the whole store after this
    return done


class _RayBlockEmbedder:
    """One Ray actor: loads the model once, embeds the blocks it is handed into the store."""

    def __init__(self, spec: EncoderSpec, read_block: ReadBlock, folder: str, role: str | None, batch_size: int | None) -> None:
        self.encoder = spec.load()
        self.read_block = read_block
        self.store = EmbeddingStore(folder)
        self.role = role
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        blocks = [int(block) for block in batch["block"]]
        done = embed_blocks(self.encoder, self.read_block, self.store, role=self.role, blocks=blocks, batch_size=self.batch_size, show_progress=False)
        return {"block": blocks, "embedded": [done] * len(blocks)}


def _embed_ray(spec: EncoderSpec, read_block: ReadBlock, store: EmbeddingStore, *, role, workers: int, batch_size) -> int:
    try:
        import ray
    except ImportError as error:
        raise ImportError("engine ray needs Ray Data: pip install 'e5kit[ray]'") from error
    missing = store.missing_blocks()
    if not missing:
        return 0
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    dataset = ray.data.from_items([{"block": block} for block in missing])
    dataset.map_batches(
        _RayBlockEmbedder,
        fn_constructor_kwargs={"spec": spec, "read_block": read_block, "folder": str(store.folder), "role": role, "batch_size": batch_size},
        batch_size=1,
        concurrency=min(workers, len(missing)),
        num_cpus=1,
    ).materialize()
    still = store.missing_blocks()
    if still:
        raise RuntimeError(f"{store.folder}: Ray finished but blocks {still[:5]} are missing")
    return len(missing)


def embed_texts(
    texts: Sequence[str],
    root: str | Path,
    encoder,
    *,
    role: str | None,
    settings: StoreEmbedding | None = None,
    spec: EncoderSpec | None = None,
    batch_size: int | None = None,
    dtype: Literal["float16", "float32"] = "float32",
) -> EmbeddingStore:
    """Embed in-memory ``texts`` into the store ``root/<fingerprint>`` and return it, finished.

    The fingerprint covers the encoder (``fingerprint()``, max length, normalisation, the role's prefix),
    the role and every text, so a rerun (after a kill, or of the same evaluation) resumes or reuses the
    store and anything else gets a store of its own; a store of the same texts in another layout
    (``block_rows``, ``dtype``) is replaced.

    Args:
        texts: The passages (empty ones get all-zero rows, never sent to the encoder).
        root: Folder the store goes under.
        encoder: The loaded ``Encoder`` (its fingerprint and dimension; it embeds under local/torchrun).
        role: Role of the texts.
        settings: Engine, Ray workers, block rows (default: local, ``DEFAULT_BLOCK_ROWS``).
        spec: How Ray actors load the same encoder; required for ``ray``.
        batch_size: Texts per forward pass.
        dtype: On-disk precision.

    Raises:
        ValueError: ``ray`` without ``spec``, or an unknown engine.
    """
    settings = settings or StoreEmbedding()
    texts_digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        texts_digest.update(text.encode("utf-8") + b"\0")
    fingerprint = store_fingerprint({"encoder": encoder.fingerprint(), "max_length": encoder.max_length, "normalize": encoder.normalize,
                                     "prefix": encoder.prompt_for(role), "role": role, "texts": texts_digest.hexdigest()})
    layout = StoreLayout(rows=len(texts), dimension=encoder.dimension, block_rows=settings.block_rows, dtype=dtype, fingerprint=fingerprint)
    store = open_or_replace_store(Path(root) / fingerprint, layout)
    embed_store(spec, list_blocks(list(texts), settings.block_rows), store, role=role, engine=settings.engine,
                workers=settings.workers, batch_size=batch_size, encoder=encoder)
    return store
