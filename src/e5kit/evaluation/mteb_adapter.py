"""Run an e5kit model under the official ``mteb`` package (``pip install e5kit[mteb]``).

``MTEBEncoder`` follows mteb's encoder protocol (2.x: ``encode(DataLoader, task_metadata=...,
prompt_type=...)``; 1.x: ``encode(list[str], task_name=..., prompt_type=...)``) and applies E5's
prefix policy from the task type and prompt type, so mteb itself runs unchanged:

Example:
    >>> import mteb                                                     # doctest: +SKIP
    >>> model = MTEBEncoder(Encoder.load("path/to/model"))              # doctest: +SKIP
    >>> mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))         # doctest: +SKIP

``local_retrieval_task`` runs an MTEB retrieval task on a local BEIR folder instead of the Hub copy:
    >>> task = local_retrieval_task("data/beir/scifact", "SciFact")     # doctest: +SKIP
    >>> mteb.evaluate(model, [task], cache=mteb.ResultCache("mteb-results"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from e5kit.evaluation.prefix_policy import policy_for

#: mteb task types -> our task families (others, e.g. BitextMining or Summarization, are symmetric).
TASK_FAMILIES = {
    "Retrieval": "retrieval",
    "Reranking": "reranking",
    "STS": "sts",
    "Classification": "classification",
    "MultilabelClassification": "classification",
    "Clustering": "clustering",
    "PairClassification": "pair_classification",
}

#: mteb's ``ModelMeta.framework`` name of each encoder backend (``e5kit.encoder.backend``).
MTEB_FRAMEWORKS = {"torch": "PyTorch", "onnx": "ONNX", "openvino": "OpenVINO"}


def _texts(inputs: Any) -> list[str]:
    """A list of strings (mteb 1.x) or an iterable of batches {"text": [...]} (mteb 2.x DataLoader)."""
    if isinstance(inputs, str):
        raise TypeError("expected a list of texts or a DataLoader of batches, got a single string")
    if isinstance(inputs, (list, tuple)) and all(isinstance(text, str) for text in inputs):
        return list(inputs)
    texts: list[str] = []
    for batch in inputs if isinstance(inputs, Iterable) else ():
        if not isinstance(batch, dict) or "text" not in batch:
            raise TypeError("each batch must be a dict with a 'text' list (mteb's text input)")
        texts.extend(batch["text"])
    return texts


class MTEBEncoder:
    """An e5kit ``Encoder`` (or ``CachedEncoder``) seen through mteb's encoder protocol.

    Args:
        encoder: The model.
        name: Model name reported to mteb (default "e5kit/<hash>").
        batch_size: Texts per forward pass when mteb does not say.
        query_role, passage_role: Override E5's roles for every task.
    """

    def __init__(
        self,
        encoder,
        name: str | None = None,
        batch_size: int = 32,
        query_role: str | None = None,
        passage_role: str | None = None,
    ) -> None:
        from e5kit.evaluation.cache import weights_hash

        self.encoder = encoder
        self.batch_size = batch_size
        self.roles = (query_role, passage_role)
        self.revision = weights_hash(encoder)[:12]
        self.name = name or f"e5kit/{self.revision}"

    @property
    def mteb_model_meta(self):
        """mteb's ``ModelMeta`` for this model (name, revision = weights hash prefix, size, dimension)."""
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        return ModelMeta.create_empty(
            overwrites={
                "name": self.name,
                "revision": self.revision,
                "embed_dim": self.encoder.dimension,
                "max_tokens": self.encoder.max_length,
                "similarity_fn_name": ScoringFunction(self.encoder.similarity_fn_name),
                "framework": [MTEB_FRAMEWORKS[self.encoder.backend.name]],
            }
        )

    def role_for(self, task_type: str | None, prompt_type: Any = None) -> str:
        """E5's role for a task type and mteb prompt type ("query", "document" or None)."""
        policy = policy_for(TASK_FAMILIES.get(task_type or "", "sts"), *self.roles)
        kind = getattr(prompt_type, "value", prompt_type)
        return policy.passage_role if kind in ("document", "passage") else policy.query_role

    def encode(self, inputs, *, task_metadata=None, task_name: str | None = None, prompt_type=None, **kwargs) -> np.ndarray:
        """Embed mteb's inputs with the role E5 uses for this task and side.

        Args:
            inputs: A DataLoader of {"text": [...]} batches (mteb 2.x) or a list of strings (1.x).
            task_metadata: mteb 2.x task metadata (its ``type`` picks the policy).
            task_name: mteb 1.x task name (its type is looked up through mteb).
            prompt_type: "query" or "document" (retrieval and reranking sides).
            **kwargs: ``batch_size`` is honoured; mteb's other keywords (hf_split, hf_subset, ...) are ignored.
        """
        task_type = getattr(task_metadata, "type", None)
        if task_type is None and task_name:
            import mteb

            task_type = mteb.get_task(task_name).metadata.type
        role, batch_size = self.role_for(task_type, prompt_type), kwargs.get("batch_size", self.batch_size)
        if getattr(prompt_type, "value", prompt_type) in ("document", "passage"):
            # The corpus side follows the corpus rule: empty passages (FiQA has some) get all-zero rows.
            from e5kit.retrieval.dense import encode_corpus

            return encode_corpus(self.encoder, _texts(inputs), role=role, batch_size=batch_size).embeddings
        return self.encoder.encode(_texts(inputs), role=role, batch_size=batch_size)

    def _scoring(self, embeddings):
        """(n, dim) tensor whose dot products are the model's declared similarity (cosine unless it declares dot)."""
        import torch

        from e5kit.training.losses.similarity import scoring_embeddings

        embeddings = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).reshape(-1, self.encoder.dimension)
        return scoring_embeddings(embeddings, self.encoder.similarity_fn_name)

    def similarity(self, first, second):
        """The model's declared similarity, (len(first), len(second))."""
        return self._scoring(first) @ self._scoring(second).T

    def similarity_pairwise(self, first, second):
        """The model's declared similarity of row i of ``first`` with row i of ``second``, (n,)."""
        return (self._scoring(first) * self._scoring(second)).sum(dim=-1)


def local_retrieval_task(data_dir, task: str = "SciFact", split: str = "test"):
    """mteb's retrieval task ``task`` (its name, metadata, main score and evaluator) with its Hub data
    replaced by a local BEIR folder, read by e5kit's BEIR reader; nothing is downloaded.

    Args:
        data_dir: Folder with corpus.jsonl[.gz], queries.jsonl[.gz] and qrels/<split>.tsv.
        task: An mteb retrieval task name (``mteb.get_task`` resolves it).
        split: The qrels split, which becomes the task's only evaluation split. Queries without qrels
            in it are left out (mteb scores every query it is given).

    Returns:
        The mteb task, its data loaded: pass it to ``mteb.evaluate``.

    Raises:
        ValueError: ``task`` is not a retrieval task (or unknown to mteb, from ``mteb.get_task``).
        FileNotFoundError, InputFormatError: from ``e5kit.io.beir.load_beir``.
    """
    import mteb
    from datasets import Dataset

    from e5kit.io.beir import load_beir

    instance = mteb.get_task(task, eval_splits=[split])
    if instance.metadata.type != "Retrieval":
        raise ValueError(f"{task}: an mteb {instance.metadata.type} task; local_retrieval_task takes a Retrieval task")
    corpus, queries, qrels = load_beir(data_dir, split)
    instance.dataset = {
        "default": {
            split: {
                "corpus": Dataset.from_list([{"id": doc_id, "title": doc.get("title", ""), "text": doc["text"]} for doc_id, doc in corpus.items()]),
                "queries": Dataset.from_list([{"id": query_id, "text": queries[query_id]} for query_id in qrels]),
                "relevant_docs": qrels,
                "top_ranked": None,
            }
        }
    }
    instance.data_loaded = True
    return instance
