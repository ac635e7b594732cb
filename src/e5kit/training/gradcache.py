"""GradCache (Gao et al. 2021): the gradient of one huge in-batch-negative batch in the memory of one chunk.

1. Embed every chunk without a graph (recording the RNG state before each chunk).
2. Compute the loss on the cached embeddings (all-gathered across processes) and its gradient with
   respect to each local embedding.
3. Re-embed each chunk with a graph, replaying its RNG state so dropout masks match step 1, and
   back-propagate the cached embedding gradient through it. Parameter gradients accumulate chunk by
   chunk and equal those of the plain big batch.

A local batch that fits in one chunk per role skips the cache: one forward and one backward.

Texts are ordered by token length before chunking (queries and passages separately), so chunks carry
little padding; the loss is computed in the original pair order, so the result does not change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from e5kit.encoder import Encoder
from e5kit.io.hashing import text_key_hash
from e5kit.training.distributed import ProcessGroup, gather_no_grad, gather_with_grad
from e5kit.training.losses.infonce import info_nce_loss


@dataclass
class Chunk:
    """A padded slice of one role's texts: ``rows`` are the positions of its texts in the batch."""

    rows: torch.Tensor
    features: dict[str, torch.Tensor]


def text_keys(texts: Sequence[str], device: torch.device) -> torch.Tensor:
    """(n,) int64 ids of texts, equal in every process (Python's ``hash`` is per-process) for texts that are
    the same by ``e5kit.io.text.normalized_text_key`` (the rule mining rejects copies of a positive by)."""
    return torch.tensor([text_key_hash(text) for text in texts], dtype=torch.int64, device=device)


def length_sorted_chunks(encoder: Encoder, texts: Sequence[str], role: str, max_length: int, chunk_size: int) -> list[Chunk]:
    """Prefix (via ``Encoder.prepare``) and tokenise ``texts``, sort by token length, pad per chunk."""
    token_ids = encoder.token_ids(encoder.prepare(texts, role), max_length)
    order = np.argsort([-len(ids) for ids in token_ids], kind="stable")
    chunks = []
    for start in range(0, len(order), chunk_size):
        rows = order[start : start + chunk_size]
        input_ids, attention_mask = encoder.pad([token_ids[index] for index in rows])
        features = {
            "input_ids": torch.from_numpy(input_ids).to(encoder.device),
            "attention_mask": torch.from_numpy(attention_mask).to(encoder.device),
        }
        chunks.append(Chunk(rows=torch.from_numpy(rows.copy()).to(encoder.device), features=features))
    return chunks


class GradCache:
    """Accumulates into the model's ``.grad`` the gradient of the InfoNCE loss of one global batch.

    Args:
        encoder: The encoder being trained (its model in train mode).
        chunk_size: Texts embedded at once; peak activation memory follows this.
        tau: Temperature of the loss.
        similarity_fn_name: The loss's score, "cosine" (E5) or "dot".
        symmetric: Add the passage->query loss.
        mask_false_negatives: Mask in-batch negatives with the same query or passage text.
        query_max_length: Token limit of queries.
        passage_max_length: Token limit of passages.
        group: Process group; the local batch is this process's slice of the global batch.
        autocast: Factory of the mixed-precision context for forward passes.
        scale_loss: Applied to the loss before its backward (fp16 loss scaling); identity by default.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        chunk_size: int,
        tau: float = 0.01,
        similarity_fn_name: str = "cosine",
        symmetric: bool = False,
        mask_false_negatives: bool = True,
        query_max_length: int = 128,
        passage_max_length: int = 128,
        group: ProcessGroup | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        scale_loss: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
    ) -> None:
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.tau = tau
        self.similarity_fn_name = similarity_fn_name
        self.symmetric = symmetric
        self.mask_false_negatives = mask_false_negatives
        self.max_lengths = {"query": query_max_length, "passage": passage_max_length}
        self.group = group or ProcessGroup()
        self.autocast = autocast
        self.scale_loss = scale_loss

    def step(self, queries: Sequence[str], passages: Sequence[str], loss: Callable[..., torch.Tensor] | None = None) -> float:
        """Add this process's share of the global-batch gradient to ``.grad``; return the global loss.

        Args:
            queries: This process's queries (the global batch is the concatenation over ranks).
            passages: Their positive passages, row for row.
            loss: The loss, called as ``loss(local query embeddings, local passage embeddings, queries,
                passages)`` and gathering across processes itself; None is InfoNCE with in-batch
                negatives. Another loss may take several passages per query (fine-tuning's groups).
        """
        if loss is None and len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        device = self.encoder.device
        texts = {"query": queries, "passage": passages}
        chunks = {
            role: length_sorted_chunks(self.encoder, role_texts, role, self.max_lengths[role], self.chunk_size)
            for role, role_texts in texts.items()
        }
        if all(len(role_chunks) == 1 for role_chunks in chunks.values()):
            return self._single_pass(chunks, queries, passages, loss)
        rng_states = {role: [] for role in chunks}
        cached = {}
        with torch.no_grad():
            for role, role_chunks in chunks.items():
                cached[role] = torch.empty((len(texts[role]), self.encoder.dimension), device=device)
                for chunk in role_chunks:
                    rng_states[role].append(self._rng_state())
                    with self.autocast():
                        cached[role][chunk.rows] = self.encoder.embed(chunk.features).float()

        local_queries = cached["query"].requires_grad_()
        local_passages = cached["passage"].requires_grad_()
        loss = (loss or self._info_nce)(local_queries, local_passages, queries, passages)
        self.scale_loss(loss).backward()

        gradients = {"query": local_queries.grad, "passage": local_passages.grad}
        for role, role_chunks in chunks.items():
            for chunk, state in zip(role_chunks, rng_states[role]):
                with self._replayed_rng(state), self.autocast():
                    embeddings = self.encoder.embed(chunk.features).float()  # (chunk, dim)
                # d(sum(e * g))/d(theta) = g . de/d(theta): backprop the cached embedding gradient.
                torch.dot(embeddings.flatten(), gradients[role][chunk.rows].flatten()).backward()
        return float(loss.detach())

    def _single_pass(self, chunks: dict[str, list[Chunk]], queries: Sequence[str], passages: Sequence[str], loss) -> float:
        """The plain big-batch step, for a local batch that fits in one chunk per role.

        Caching would only add a second forward pass: one graph through both roles gives the same
        gradients at the same peak memory.
        """
        embedded = {}
        for role, (chunk,) in chunks.items():
            with self.autocast():
                embeddings = self.encoder.embed(chunk.features).float()  # (n, dim), in length order
            embedded[role] = embeddings[torch.argsort(chunk.rows)]  # back to input order
        loss = (loss or self._info_nce)(embedded["query"], embedded["passage"], queries, passages)
        self.scale_loss(loss).backward()
        return float(loss.detach())

    def _info_nce(self, local_queries: torch.Tensor, local_passages: torch.Tensor, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        """InfoNCE of the global batch, from this process's cached embeddings (and texts, for false negatives)."""
        device = self.encoder.device
        keys = {}
        if self.mask_false_negatives:
            keys = {
                "query_keys": gather_no_grad(text_keys(queries, device), self.group),
                "passage_keys": gather_no_grad(text_keys(passages, device), self.group),
            }
        return info_nce_loss(
            local_queries,
            local_passages,
            gather_with_grad(local_queries, self.group),
            gather_with_grad(local_passages, self.group),
            offset=self.group.rank * len(queries),
            tau=self.tau,
            similarity_fn_name=self.similarity_fn_name,
            symmetric=self.symmetric,
            **keys,
        )

    def _rng_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.encoder.device
        cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return torch.get_rng_state(), cuda_state

    @contextlib.contextmanager
    def _replayed_rng(self, state: tuple[torch.Tensor, torch.Tensor | None]):
        """Run with the RNG as it was before the chunk's first forward, then restore the current RNG."""
        device = self.encoder.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            cpu_state, cuda_state = state
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            yield
