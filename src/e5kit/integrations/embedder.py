"""What the LangChain and LlamaIndex classes share: embedding texts in a role, through an e5kit server
or a local ``Encoder``.

Both backends return plain ``list[list[float]]`` (the frameworks' type), the float32 values of the
model's vectors. A server is asked for base64 vectors, so they arrive exactly as the server computed
them; the two backends give the same numbers for the same model and backend.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import httpx

    from e5kit.encoder import Encoder

#: Texts per server request: under the server's default 2,048-input limit and its 4 MB body limit
#: for texts of a few thousand characters.
DEFAULT_BATCH_SIZE = 256


class ServerError(RuntimeError):
    """An e5kit server refused a request; the message carries its status and its own explanation."""


class ServerEmbedder:
    """Embeds texts in a role through an e5kit server's ``POST /v1/embeddings`` (``input_type`` = the role).

    Args:
        base_url: The server, e.g. "http://127.0.0.1:8000"; an OpenAI-style base URL ending in "/v1"
            is accepted too.
        api_key: Bearer token (default: $E5KIT_API_KEY, as ``e5kit serve`` reads it; else none).
        model: Sent as the request's ``model``, which the server checks names the model it serves;
            None sends none.
        batch_size: Texts per request.
        timeout: Seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout: float = 60.0,
    ) -> None:
        import httpx

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        root = base_url.rstrip("/")
        self.url = root.removesuffix("/v1") + "/v1/embeddings"
        api_key = api_key if api_key is not None else os.environ.get("E5KIT_API_KEY")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model, self.batch_size, self.timeout = model, batch_size, timeout
        self._client = httpx.Client(timeout=timeout, headers=self.headers)

    def _body(self, texts: Sequence[str], role: str) -> dict:
        body = {"input": list(texts), "input_type": role, "encoding_format": "base64"}
        if self.model is not None:
            body["model"] = self.model
        return body

    def _vectors(self, response: httpx.Response, count: int) -> list[list[float]]:
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ServerError(f"{self.url} answered {response.status_code}: {message}")
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        if len(data) != count:
            raise ServerError(f"{self.url} returned {len(data)} vectors for {count} texts")
        rows = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data]
        return np.stack(rows).tolist()

    def _batches(self, texts: Sequence[str]) -> list[Sequence[str]]:
        return [texts[start : start + self.batch_size] for start in range(0, len(texts), self.batch_size)]

    def embed(self, texts: Sequence[str], role: str) -> list[list[float]]:
        """One vector per text, embedded in ``role`` ("query", "document", "none" or a prompt name of the model).

        Raises:
            ServerError: the server answered with an error (bad role, text without visible characters,
                wrong model name or key, ...); its message is kept.
            httpx.HTTPError: the server could not be reached.
        """
        vectors: list[list[float]] = []
        for batch in self._batches(texts):
            vectors += self._vectors(self._client.post(self.url, json=self._body(batch, role)), len(batch))
        return vectors

    async def aembed(self, texts: Sequence[str], role: str) -> list[list[float]]:
        """``embed`` without blocking the event loop."""
        import httpx

        # A client per call: a kept one is bound to the event loop it first ran on, and frameworks
        # call from several (LlamaIndex runs asyncio.run per batch in some paths).
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
            vectors: list[list[float]] = []
            for batch in self._batches(texts):
                vectors += self._vectors(await client.post(self.url, json=self._body(batch, role)), len(batch))
        return vectors


class EncoderEmbedder:
    """Embeds texts in a role with a local ``e5kit.Encoder``.

    Args:
        encoder: An Encoder, or what ``Encoder.load`` takes (a model folder, bundled name or Hub id).
        batch_size: Texts per forward pass (default: the encoder's).
    """

    def __init__(self, encoder: Encoder | str | Path, *, batch_size: int | None = None) -> None:
        if isinstance(encoder, str | Path):
            from e5kit.encoder import Encoder

            encoder = Encoder.load(encoder)
        self.encoder, self.batch_size = encoder, batch_size

    def embed(self, texts: Sequence[str], role: str) -> list[list[float]]:
        """One vector per text, embedded in ``role`` (see ``Encoder.prompt_for``).

        Raises:
            ValueError: the model has no prompt for ``role``, or a text has no visible characters.
        """
        # encode_with_stats: an Encoder's last_stats would be shared by concurrent async calls.
        vectors, _ = self.encoder.encode_with_stats(list(texts), role=role, batch_size=self.batch_size)
        return vectors.tolist()

    async def aembed(self, texts: Sequence[str], role: str) -> list[list[float]]:
        """``embed`` in a worker thread."""
        return await asyncio.to_thread(self.embed, texts, role)


def make_embedder(
    base_url: str | None, encoder: Encoder | str | Path | None, *, batch_size: int | None = None, **server_options
) -> ServerEmbedder | EncoderEmbedder:
    """A ``ServerEmbedder`` for ``base_url`` or an ``EncoderEmbedder`` for ``encoder``.

    Raises:
        ValueError: both or neither of ``base_url`` and ``encoder`` are given.
    """
    if (base_url is None) == (encoder is None):
        raise ValueError("give exactly one of base_url (an e5kit server) and encoder (a local model)")
    if base_url is not None:
        return ServerEmbedder(base_url, batch_size=batch_size or DEFAULT_BATCH_SIZE, **server_options)
    return EncoderEmbedder(encoder, batch_size=batch_size)
