"""A LlamaIndex ``BaseEmbedding`` that embeds queries and documents in their own roles (``pip install 'e5kit[llamaindex]'``).

Example:
    >>> from llama_index.core import Settings
    >>> from e5kit.integrations.llamaindex import E5kitEmbedding
    >>> Settings.embed_model = E5kitEmbedding(base_url="http://127.0.0.1:8000")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.embeddings import BaseEmbedding
from pydantic import Field, PrivateAttr

from e5kit.integrations.embedder import DEFAULT_BATCH_SIZE, EncoderEmbedder, ServerEmbedder, make_embedder

if TYPE_CHECKING:
    from e5kit.encoder import Encoder


class E5kitEmbedding(BaseEmbedding):
    """``llama_index.core.embeddings.BaseEmbedding`` over an e5kit server or a local ``Encoder``.

    Query embeddings (``get_query_embedding``, retrieval) use ``query_role``; text embeddings
    (``get_text_embedding(s)``, ingestion) use ``document_role``, which LlamaIndex's OpenAI embedding
    cannot tell an e5kit server (it sends no ``input_type``). Each vector is a list of ``dimension``
    floats. ``embed_batch_size`` (texts per server request or forward pass) defaults to 256.

    Args:
        base_url: An ``e5kit serve`` server ("http://host:port", or OpenAI's ".../v1" form).
        encoder: Instead of a server: an ``e5kit.Encoder``, or a model for ``Encoder.load``.
        api_key: The server's bearer token (default: $E5KIT_API_KEY); never serialised.
        model: Sent as the request's ``model`` (the server refuses a name it does not serve); also
            the default ``model_name`` (else "e5kit").
        timeout: Seconds per server request.
        query_role: Role of queries; "query" is E5's.
        document_role: Role of documents; "document" is read as "passage" (E5's "passage: ").
        **kwargs: BaseEmbedding's own fields (``embed_batch_size``, ``callback_manager``, ...).

    Raises:
        ValueError: both or neither of ``base_url`` and ``encoder``.
        e5kit.integrations.embedder.ServerError: (from the embed calls) the server refused a request.
    """

    base_url: str | None = Field(None, description="The e5kit server; None for a local Encoder.")
    model: str | None = Field(None, description="The served model's name, sent with each request.")
    timeout: float = Field(60.0, description="Seconds per server request.")
    query_role: str = Field("query", description="Role of query embeddings.")
    document_role: str = Field("document", description="Role of text (document) embeddings.")
    embed_batch_size: int = Field(DEFAULT_BATCH_SIZE, gt=0, le=2048, description="Texts per request or forward pass.")
    _embedder: ServerEmbedder | EncoderEmbedder = PrivateAttr()

    def __init__(
        self,
        *,
        base_url: str | None = None,
        encoder: Encoder | str | Path | None = None,
        api_key: str | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model_name", model or "e5kit")  # from_dict passes it back
        super().__init__(base_url=base_url, model=model, **kwargs)
        self._embedder = make_embedder(
            base_url, encoder, batch_size=self.embed_batch_size, api_key=api_key, model=model, timeout=self.timeout
        )

    @classmethod
    def class_name(cls) -> str:
        return "E5kitEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed([query], self.query_role)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._embedder.aembed([query], self.query_role))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed([text], self.document_role)[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._embedder.aembed([text], self.document_role))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts, self.document_role)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._embedder.aembed(texts, self.document_role)
