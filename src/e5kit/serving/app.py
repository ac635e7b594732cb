"""The embedding server: OpenAI-compatible ``POST /v1/embeddings``, ``POST /search``, health and metrics.

Role prefixes are applied server-side from the model's own prompts (``input_type``), so a client
cannot forget them. Concurrent requests are batched (``batching.DynamicBatcher``). Every bad
request gets a 4xx JSON error in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
whose message names the problem.

Example:
    >>> app = create_app(Encoder.load("all-MiniLM-L6-v2"), ServeConfig())   # doctest: +SKIP
    >>> uvicorn.run(app)                                                     # doctest: +SKIP
"""


import base64
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from e5kit.encoder import NO_PROMPT, ROLE_ALIASES
from e5kit.serving.batching import BatchResult, DynamicBatcher
from e5kit.serving.config import ServeConfig
from e5kit.text import has_visible_text, visible_character_class

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- errors
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """A request the server refuses; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large", 500: "server_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "invalid_request_error"), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    problems, first_field = [], None
    for item in error.errors():
        # Drop "body" and pydantic's union-branch tags such as "list[constrained-str]".
        location = [str(part) for part in item["loc"] if part != "body" and "[" not in str(part)]
        field = ".".join(location)
        first_field = first_field or (location[0] if location else None)
        if item["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', item['msg'])})")
        else:
            problems.append(f"{field or 'body'}: {item['msg']}")
    return "; ".join(problems), first_field


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "A request the model cannot serve (unknown input_type, dimensions too large)",
        401: "Missing or wrong bearer token (when the server requires one)",
        404: "Unknown model, or no index loaded",
        413: "Request body larger than max_body_bytes",
        422: "Malformed JSON or a field that fails validation (the message names it)",
    }.items()
}


# ---------------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            message = "Content-Length is not a number" if not declared.isdigit() else (
                f"request body is {int(declared)} bytes; the limit is {self.limit} (max_body_bytes)"
            )
            return await error_response(400 if not declared.isdigit() else 413, message)(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await error_response(413, f"request body exceeds {self.limit} bytes (max_body_bytes)")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class MetricsMiddleware:
    """Count requests by endpoint and status, and time them."""

    def __init__(self, app, requests: Counter, latency: Histogram, endpoints: set[str]) -> None:
        self.app, self.requests, self.latency, self.endpoints = app, requests, latency, endpoints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500
        started = time.perf_counter()

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.requests.labels(endpoint, str(status)).inc()


# ---------------------------------------------------------------------- schemas
def _valid_text(text: str) -> str:
    if not has_visible_text(text):
        raise ValueError("has no visible text (empty, whitespace or zero-width characters only)")
    return text


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class SearchResult(BaseModel):
    doc_id: str
    score: float
    title: str
    chunk_index: int = Field(description="Which chunk of the document matched best.")
    start: int = Field(description="First character of that chunk in the document.")
    end: int = Field(description="One past its last character.")
    snippet: str


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchResult]
    model: str


def _request_models(config: ServeConfig, dimension: int, roles: list[str]):
    """Request schemas carrying this server's limits and the model's roles, so the OpenAPI schema shows them."""
    Role = Literal.__getitem__(tuple(roles))
    # The pattern states the visible-text rule in the schema; _valid_text enforces it with a clear message.
    Text = Annotated[
        str,
        Field(min_length=1, max_length=config.max_chars, json_schema_extra={"pattern": visible_character_class()}),
        AfterValidator(_valid_text),
    ]

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        input: Text | Annotated[list[Text], Field(min_length=1, max_length=config.max_items)] = Field(
            description=f"A string or a list of 1 to {config.max_items} strings of at most {config.max_chars} characters."
        )
        model: str | None = Field(None, description="Must name the served model when given.")
        input_type: Role | None = Field(
            None, description=f"The role whose prefix the model adds (none: raw text); default {config.default_input_type}."
        )
        dimensions: int | None = Field(None, ge=1, le=dimension, description="Keep the first N dimensions, renormalised.")
        encoding_format: Literal["float", "base64"] = "float"
        user: str | None = Field(None, max_length=256, description="Accepted for OpenAI compatibility; unused.")

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        query: Text
        top_k: int = Field(10, ge=1, le=config.max_top_k)
        snippet_chars: int = Field(240, ge=20, le=5000)

    return EmbeddingRequest, SearchRequest


# ---------------------------------------------------------------------- the app
def create_app(encoder, config: ServeConfig, index=None, model_name: str | None = None) -> FastAPI:
    """Build the FastAPI app serving ``encoder`` (and ``index`` for /search) with ``config``'s limits."""
    served_name = config.served_model_name or model_name or "e5kit"
    accepted_names = {served_name, config.model or served_name, str(config.model or "").rstrip("/").rsplit("/", 1)[-1]}
    known_roles = sorted({"query", "passage", NO_PROMPT, *ROLE_ALIASES, *encoder.prompts})
    if config.default_input_type not in known_roles:
        raise ValueError(f"default_input_type {config.default_input_type!r} is not one of {', '.join(known_roles)}")
    EmbeddingRequest, SearchRequest = _request_models(config, encoder.dimension, known_roles)

    registry = CollectorRegistry()
    requests = Counter("e5kit_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=registry)
    latency = Histogram("e5kit_request_seconds", "Request latency by endpoint", ["endpoint"], registry=registry)
    batch_texts = Histogram("e5kit_batch_texts", "Texts per forward batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=registry)
    batch_seconds = Histogram("e5kit_batch_seconds", "Time to embed one batch", registry=registry)
    embedded = Counter("e5kit_embedded_texts", "Texts embedded", registry=registry)
    tokens_total = Counter("e5kit_tokens", "Tokens embedded (prefix and special tokens included)", registry=registry)

    def embed(texts: list[str]) -> BatchResult:
        # Prefixed already; forward batches at the backend's best size.
        embeddings, stats = encoder.encode_with_stats(texts, role=NO_PROMPT)
        return BatchResult(embeddings, stats.token_counts)

    def record_batch(size: int, seconds: float) -> None:
        batch_texts.observe(size)
        batch_seconds.observe(seconds)
        embedded.inc(size)

    batcher = DynamicBatcher(embed, config.max_batch_size, config.max_wait_ms, on_batch=record_batch)
    Gauge("e5kit_queue_waiting", "Requests waiting for a batch", registry=registry).set_function(lambda: batcher.waiting)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="e5kit embedding server", version="1", lifespan=lifespan)

    bearer = HTTPBearer(auto_error=False, description="Set when the server runs with an api_key.")

    async def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), config.api_key.encode()):
            raise ApiError(401, "missing or invalid bearer token (send 'Authorization: Bearer <api key>')", code="invalid_api_key")

    protected = [Depends(check_token)] if config.api_key else []

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error.status, error.message, error.param, error.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError):
        message, field = _validation_message(error)
        return error_response(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException):
        return error_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception):
        logger.exception("unexpected error")
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")

    async def embed_request(texts: list[str], role: str) -> BatchResult:
        try:
            prepared = encoder.prepare(texts, role)
        except (TypeError, ValueError) as error:
            raise ApiError(400, f"input: {error}", param="input") from error
        return await batcher.submit(prepared)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERROR_RESPONSES, dependencies=protected)
    async def embeddings(body: EmbeddingRequest) -> Response:
        """Embed one or more texts (OpenAI-compatible); the role prefix comes from ``input_type``."""
        if body.model is not None and body.model not in accepted_names:
            raise ApiError(404, f"model {body.model!r} is not served here; this server serves {served_name!r}", "model", "model_not_found")
        role = body.input_type or config.default_input_type
        texts = [body.input] if isinstance(body.input, str) else body.input
        result = await embed_request(texts, role)
        vectors = result.embeddings
        if body.dimensions is not None and body.dimensions < vectors.shape[1]:
            vectors = vectors[:, : body.dimensions]
            if encoder.normalize:  # a cosine model's truncated vectors are unit vectors again; a dot model's stay raw
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
        else:
            encoded = vectors.tolist()
        used = int(sum(result.tokens))
        tokens_total.inc(used)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(encoded)],
                "model": served_name,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    @app.post("/search", response_model=SearchResponse, responses=ERROR_RESPONSES, dependencies=protected)
    async def search(body: SearchRequest) -> Response:
        """The top documents of the loaded index for a query, each with its best chunk."""
        if index is None:
            raise ApiError(404, "no index is loaded; start the server with --index IDX", code="no_index")
        result = await embed_request([body.query], index.settings.query_role)
        hits = (await run_in_threadpool(index.search_vectors, result.embeddings, body.top_k))[0]
        data = [
            {
                "doc_id": hit.doc_id, "score": hit.score, "title": hit.title, "chunk_index": hit.chunk_index,
                "start": hit.start, "end": hit.end, "snippet": hit.snippet(body.snippet_chars),
            }
            for hit in hits
        ]
        return JSONResponse({"object": "list", "data": data, "model": served_name})

    @app.get("/health")
    async def health() -> dict:
        """Liveness and what is served."""
        return {
            "status": "ok",
            "model": served_name,
            "backend": "onnx" if encoder.model is None else "torch",
            "dimension": encoder.dimension,
            "max_length": encoder.max_length,
            "prompts": encoder.prompts,
            "index": None if index is None else {"documents": index.num_documents, "chunks": index.num_chunks, "kind": index.settings.kind},
        }

    metrics_responses = {200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}, 401: ERROR_RESPONSES[401]}

    @app.get("/metrics", response_class=Response, responses=metrics_responses, dependencies=protected)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, requests=requests, latency=latency, endpoints={"/v1/embeddings", "/search", "/health", "/metrics"})
    return app
