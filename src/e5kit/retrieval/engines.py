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

A killed run resumes with any engine: finished blocks are skipped.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal

from e5kit.processes import join_process_group
from e5kit.retrieval.store import EmbeddingStore, ReadBlock, embed_blocks

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
        backend: "torch" or an exported backend ("onnx").
    """

    model: str
    max_length: int | None = None
    similarity_fn_name: str | None = None
    device: str | None = None
    backend: str = "torch"

    def load(self):
        from e5kit.encoder import Encoder

        return Encoder.load(self.model, **{key: value for key, value in asdict(self).items() if key != "model" and value is not None})


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
    spec: EncoderSpec,
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
        spec: The encoder each worker builds.
        read_block: Block -> texts; picklable for ``ray``.
        store: The store to fill (``open_store``).
        role: Role of the texts ("query", "passage").
        engine: "local", "torchrun" or "ray".
        workers: Ray actors (default: 2); torchrun takes its world size from the launcher.
        batch_size: Texts per forward pass.
        encoder: An already loaded encoder for ``local``/``torchrun`` (spares loading it again).

    Raises:
        ValueError: an unknown engine.
        ImportError: ``ray`` without Ray installed (``pip install 'e5kit[ray]'``).
    """
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
