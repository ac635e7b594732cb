"""A LangChain ``Embeddings`` that embeds queries and documents in their own roles (``pip install 'e5kit[langchain]'``).

Example:
    >>> from e5kit.integrations.langchain import E5kitEmbeddings
    >>> embeddings = E5kitEmbeddings(base_url="http://127.0.0.1:8000")   # doctest: +SKIP
    >>> embeddings.embed_documents(["Mitosis is ..."])                   # "passage: " added by the server
    >>> embeddings.embed_query("how do cells divide")                    # "query: "
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.embeddings import Embeddings

from e5kit.integrations.embedder import make_embedder

if TYPE_CHECKING:
    from e5kit.encoder import Encoder


class E5kitEmbeddings(Embeddings):
    """``langchain_core.embeddings.Embeddings`` over an e5kit server or a local ``Encoder``.

    ``embed_query`` embeds in ``query_role`` and ``embed_documents`` in ``document_role``, which
    LangChain's ``OpenAIEmbeddings`` cannot tell an e5kit server (it sends no ``input_type``).
    Vectors are lists of floats, one per text: (len(texts), dimension) for ``embed_documents``.

    Args:
        base_url: An ``e5kit serve`` server ("http://host:port", or OpenAI's ".../v1" form).
        encoder: Instead of a server: an ``e5kit.Encoder``, or a model for ``Encoder.load``.
        api_key: The server's bearer token (default: $E5KIT_API_KEY).
        model: Sent as the request's ``model`` (the server refuses a name it does not serve).
        batch_size: Texts per server request or per forward pass.
        timeout: Seconds per server request.
        query_role: Role of queries; "query" is E5's.
        document_role: Role of documents; "document" is read as "passage" (E5's "passage: ").

    Raises:
        ValueError: both or neither of ``base_url`` and ``encoder``.
        e5kit.integrations.embedder.ServerError: (from the embed calls) the server refused a request.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        encoder: Encoder | str | Path | None = None,
        api_key: str | None = None,
        model: str | None = None,
        batch_size: int | None = None,
        timeout: float = 60.0,
        query_role: str = "query",
        document_role: str = "document",
    ) -> None:
        self.embedder = make_embedder(base_url, encoder, batch_size=batch_size, api_key=api_key, model=model, timeout=timeout)
        self.query_role, self.document_role = query_role, document_role

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Documents' vectors, in ``document_role``."""
        return self.embedder.embed(texts, self.document_role)

    def embed_query(self, text: str) -> list[float]:
        """A query's vector, in ``query_role``."""
        return self.embedder.embed([text], self.query_role)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` without blocking the event loop."""
        return await self.embedder.aembed(texts, self.document_role)

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` without blocking the event loop."""
        return (await self.embedder.aembed([text], self.query_role))[0]
