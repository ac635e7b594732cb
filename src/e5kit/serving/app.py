"""The embedding server: OpenAI-compatible ``POST /v1/embeddings`` and ``GET /v1/models``, ``POST /search``, health and metrics.

Role prefixes are applied server-side from the model's own prompts (``input_type``), so a client
cannot forget them. Concurrent requests are batched, and large ones split
(``batching.DynamicBatcher``). Every bad request gets a 4xx JSON error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, whose message names the problem.

A request without ``input_type`` to a model that has prompts is embedded in the server's default
role (``ServeConfig.default_input_type``, ``e5kit serve --default-role``; "query" unless set). Clients
that cannot send a role (LangChain's ``OpenAIEmbeddings``, LlamaIndex's ``OpenAIEmbedding``) then embed
documents as queries, so such a response carries a ``ROLE_WARNING_HEADER`` naming the role applied,
and the server logs it once; ``e5kit.integrations`` sends the right role for each call.

Inputs sent as token ids (a list of ints, or a list of such lists), as OpenAI's own clients may send
them (LangChain's ``OpenAIEmbeddings`` does by default), are OpenAI token ids: they are decoded to
text with tiktoken (``ServeConfig.token_ids_encoding``, cl100k_base by default, the encoding of
OpenAI's embedding models) and that text is embedded with the model's own tokenizer. Reading them as
ids of the model's tokenizer would embed unrelated text. Without tiktoken on the server such a
request gets a 400 that says how to send text instead.

Example:
    >>> app = create_app(Encoder.load("all-MiniLM-L6-v2"), ServeConfig())   # doctest: +SKIP
    >>> uvicorn.run(app)                                                     # doctest: +SKIP
"""


import base64
import gc
import json
import logging
import secrets
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictInt, Tag
from starlette.exceptions import HTTPException as StarletteHTTPException

from e5kit.encoder import NO_PROMPT, ROLE_ALIASES
from e5kit.encoder.backend import normalize_rows
from e5kit.io.text import has_visible_text, visible_character_class
from e5kit.serving.batching import BatchResult, DynamicBatcher
from e5kit.serving.config import ServeConfig

logger = logging.getLogger(__name__)

#: Response header set when a prompted model gets a request without ``input_type``.
ROLE_WARNING_HEADER = "X-E5kit-Warning"


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


#: What an embeddings request's ``input`` may be, for errors about it.
INPUT_ACCEPTED = "a string, a list of strings, or token ids (a list of integers >= 0, or a list of such lists)"

#: What an item of ``input`` should be, by pydantic's error type when it is of the wrong kind.
_INPUT_ITEM_KINDS = {"string_type": "a string", "int_type": "a token id (an integer >= 0)", "list_type": "a list of token ids"}


def _json_kind(value) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value)  # a number, true, false or null: short enough to show (orjson refuses ints beyond 64 bits)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    problems, first_field, wrong_input_item = [], None, False
    for item in error.errors():
        # Drop "body", the tags of input's forms, and pydantic's union-branch tags such as "list[constrained-str]".
        location = [str(part) for part in item["loc"] if part != "body" and part not in INPUT_FORMS and "[" not in str(part)]
        field = ".".join(location)
        first_field = first_field or (location[0] if location else None)
        if item["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', item['msg'])})")
        elif location[:1] == ["input"] and item["type"] in _INPUT_ITEM_KINDS:
            # pydantic names only the one form the discriminator chose; the client may have meant another.
            expected = INPUT_ACCEPTED if location == ["input"] else _INPUT_ITEM_KINDS[item["type"]]
            problems.append(f"{field}: expected {expected}, got {_json_kind(item['input'])}")
            wrong_input_item = wrong_input_item or location != ["input"]
        else:
            problems.append(f"{field or 'body'}: {item['msg']}")
    if wrong_input_item:
        problems.append(f"`input` is {INPUT_ACCEPTED}")
    return "; ".join(problems), first_field


def _http_error_message(error: StarletteHTTPException) -> str:
    """The error's detail, or for a body FastAPI could not parse, what is wrong with it.

    FastAPI answers any body that fails to parse other than as invalid JSON with "There was an error
    parsing the body" and keeps the cause: name it, as every other error of this server does.
    """
    cause = error.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position {cause.start}); send JSON encoded as UTF-8"
    if isinstance(cause, RecursionError):
        return f"the body's JSON is nested too deeply to parse; `input` is {INPUT_ACCEPTED}"
    return str(error.detail)


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "A request the model cannot serve (text without visible characters, token ids that cannot be decoded)",
        401: "Missing or wrong bearer token (when the server requires one)",
        404: "Unknown model, or no index loaded",
        413: "Request body larger than max_body_bytes",
        422: "Malformed JSON or a field that fails validation (the message names it)",
    }.items()
}


# ---------------------------------------------------------------------- responses
class EmbeddingsJSONResponse(JSONResponse):
    """JSON written by orjson, float32 arrays as the shortest decimals that read back as the same float32.

    The standard encoder writes each float32 as the 17-digit decimal of its float64 widening, through
    ``tolist``: for one 384-dimensional embedding, 268 us and 7.5 kB against 12 us and 4.2 kB here
    (measured on a 2-core Xeon), and the event loop renders every response of a batch while the
    next batch waits for its clients' requests. Parsed back to float32 both give the same bits
    (text-embeddings-inference writes float32 the same way).
    """

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


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


# ---------------------------------------------------------------------- token ids
SEND_TEXT_HINT = (
    "or send text instead (LangChain's OpenAIEmbeddings does with check_embedding_ctx_length=False; "
    "the server truncates at the model's token limit itself)"
)


class TokenIdDecoder:
    """Decodes OpenAI token ids to text with the tiktoken encoding ``name``.

    The encoding loads on first use (tiktoken downloads its file once, or reads it from
    ``$TIKTOKEN_CACHE_DIR``), and whether it loaded is kept for the server's lifetime.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._encoding = None
        self._failure: str | None = None

    def _load(self):
        with self._lock:
            if self._encoding is None and self._failure is None:
                try:
                    import tiktoken
                except ImportError:
                    self._failure = (
                        "input: token ids are decoded with tiktoken, which is not installed on this server "
                        f"(pip install 'e5kit[openai]'); {SEND_TEXT_HINT}"
                    )
                else:
                    try:
                        self._encoding = tiktoken.get_encoding(self.name)
                    except Exception as error:  # unknown name, no network, unreadable cache: all say the same to clients
                        logger.warning("tiktoken encoding %r did not load: %s: %s", self.name, type(error).__name__, error)
                        self._failure = (
                            f"input: token ids need the tiktoken encoding {self.name!r}, which did not load on this server "
                            f"({type(error).__name__}: {error}); {SEND_TEXT_HINT}"
                        )
        if self._failure is not None:
            raise ApiError(400, self._failure, param="input", code="token_ids_unsupported")
        return self._encoding

    def decode(self, rows: list[list[int]], labels: list[str]) -> list[str]:
        """Text of each row of token ids; ``labels`` name the rows in errors ("input", "input[3]").

        Raises:
            ApiError: 400 when tiktoken or the encoding is unavailable, or an id is not in the encoding.
        """
        encoding = self._load()
        texts = []
        for ids, label in zip(rows, labels, strict=True):
            problem = next((f"token id {i} is beyond" for i in ids if i >= encoding.n_vocab), None)
            if problem is None:
                try:
                    texts.append(encoding.decode(ids))
                except KeyError:  # an unused id inside the range (cl100k_base has a few)
                    problem = f"token id {next(i for i in ids if not _is_token(encoding, i))} is not in"
            if problem is not None:
                raise ApiError(
                    400, f"{label}: {problem} the tiktoken encoding {self.name!r} (ids 0 to {encoding.n_vocab - 1})",
                    param="input", code="invalid_token_id",
                )
        return texts


def _is_token(encoding, token_id: int) -> bool:
    try:
        encoding.decode_single_token_bytes(token_id)
    except KeyError:
        return False
    return True


# ---------------------------------------------------------------------- schemas
#: The forms an embeddings request's ``input`` takes, as OpenAI's API defines it.
INPUT_FORMS = ("text", "texts", "token_ids", "token_id_lists")


def _input_form(value) -> str:
    """Which of ``INPUT_FORMS`` ``value`` is meant to be, so that a bad input is told what is wrong with
    it in that form rather than in all four.

    A list is judged by its first item that some form holds, so in ``[1.5, "a"]`` the 1.5 is the item
    named wrong (a list of strings), not the string (token ids).
    """
    if not isinstance(value, list):
        return "text"
    forms = (form for item in value if (form := _list_form_of(item)) is not None)
    return next(forms, "token_ids" if value and isinstance(value[0], int | float) else "texts")


def _list_form_of(item) -> str | None:
    """The form of a list holding ``item``; None for an item no form holds (1.5, true, null, an object)."""
    if isinstance(item, str):
        return "texts"
    if isinstance(item, list):
        return "token_id_lists"
    if isinstance(_integral_float_as_int(item), int) and not isinstance(item, bool):
        return "token_ids"
    return None


def _integral_float_as_int(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


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


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When this server loaded the model (Unix seconds).")
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


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

    # OpenAI token ids (see the module docstring): JSON Schema integers, so 7.0 passes but "7", 7.5 and true do not.
    TokenId = Annotated[StrictInt, Field(ge=0), BeforeValidator(_integral_float_as_int)]
    TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=config.max_chars)]
    Items = Field(min_length=1, max_length=config.max_items)

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        input: Annotated[
            Annotated[Text, Tag("text")]
            | Annotated[list[Text], Items, Tag("texts")]
            | Annotated[TokenIds, Tag("token_ids")]
            | Annotated[list[TokenIds], Items, Tag("token_id_lists")],
            Discriminator(_input_form),
        ] = Field(
            description=(
                f"A string or a list of 1 to {config.max_items} strings of at most {config.max_chars} characters; "
                f"or OpenAI token ids ({config.token_ids_encoding}): one list of at most {config.max_chars} ids, "
                f"or a list of 1 to {config.max_items} such lists, decoded to text before embedding."
            )
        )
        model: str | None = Field(None, description="Must name the served model when given.")
        input_type: Role | None = Field(
            None,
            description=(
                f"The role whose prefix the model adds (none: raw text); default {config.default_input_type}, "
                f"and then a model with prompts answers with an {ROLE_WARNING_HEADER} header naming that role."
            ),
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
    token_decoder = TokenIdDecoder(config.token_ids_encoding)
    role_warning = (
        f"no input_type: embedded with the server's default role {config.default_input_type!r}; send input_type "
        f"'query' or 'document' (e5kit.integrations does), or start the server with --default-role"
    ) if encoder.prompts else None
    role_warning_logged = False
    loaded_at = int(time.time())

    registry = CollectorRegistry()
    requests = Counter("e5kit_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=registry)
    latency = Histogram("e5kit_request_seconds", "Request latency by endpoint", ["endpoint"], registry=registry)
    batch_texts = Histogram("e5kit_batch_texts", "Texts per forward batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=registry)
    batch_seconds = Histogram("e5kit_batch_seconds", "Time to embed one batch", registry=registry)
    embedded = Counter("e5kit_embedded_texts", "Texts embedded", registry=registry)
    tokens_total = Counter("e5kit_tokens", "Tokens embedded (prefix and special tokens included)", registry=registry)

    def embed(texts: list[str]) -> BatchResult:
        # Prefixed already; forward batches at the backend's best size.
        embeddings, stats = encoder.encode_with_stats(texts, role=NO_PROMPT, show_progress=False)
        return BatchResult(embeddings, stats.token_counts)

    def record_batch(size: int, seconds: float) -> None:
        batch_texts.observe(size)
        batch_seconds.observe(seconds)
        embedded.inc(size)

    batcher = DynamicBatcher(embed, config.max_batch_size, config.max_wait_ms, on_batch=record_batch)
    Gauge("e5kit_queue_waiting", "Requests waiting for a batch", registry=registry).set_function(lambda: batcher.waiting)

    @asynccontextmanager
    async def lifespan(_app):
        if config.warmup_max_length:
            started = time.perf_counter()
            # Batches reach the encoder at most max_batch_size texts at a time, which encode then cuts at its own batch size.
            shapes = encoder.warm_up(min(config.max_batch_size, encoder.default_batch_size), config.warmup_max_length)
            if shapes:
                logger.info("warmed up %d input shapes (texts up to %d tokens) in %.1f s", shapes, config.warmup_max_length, time.perf_counter() - started)
        # Python's full collections walk every tracked object, and a loaded model's libraries leave ~400,000
        # (all-MiniLM-L6-v2 on OpenVINO): a full collection takes ~210 ms. Scratch run on an AMD EPYC Zen 5,
        # benchmarks/serve_load.py's closed loop five times over its 400 requests: one fell in the first pass
        # with 16 requests in flight, p99 276 ms against 81-84 in the next four; frozen, 83-95 in all five. What
        # exists at start lives as long as the server, so it leaves the collector's view (gc.freeze, as
        # Python's docs advise for long-lived processes) until shutdown.
        gc.collect()
        gc.freeze()
        try:
            await batcher.start()
            yield
        finally:
            await batcher.stop()
            gc.unfreeze()

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
        return error_response(error.status_code, _http_error_message(error), headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception):
        logger.exception("unexpected error")
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")

    async def embed_request(texts: list[str], role: str, decoded: bool = False) -> BatchResult:
        try:
            prepared = encoder.prepare(texts, role)
        except (TypeError, ValueError) as error:
            source = " (decoded from its token ids)" if decoded else ""
            raise ApiError(400, f"input: {error}{source}", param="input") from error
        return await batcher.submit(prepared)

    async def request_texts(request_input) -> tuple[list[str], bool]:
        """The texts of an embeddings request's ``input``, and whether they were decoded from token ids."""
        if isinstance(request_input, str):
            return [request_input], False
        if isinstance(request_input[0], str):
            return request_input, False
        if isinstance(request_input[0], int):  # one input as token ids
            return await run_in_threadpool(token_decoder.decode, [request_input], ["input"]), True
        labels = [f"input[{i}]" for i in range(len(request_input))]
        return await run_in_threadpool(token_decoder.decode, request_input, labels), True

    def model_object() -> dict:
        return {"id": served_name, "object": "model", "created": loaded_at, "owned_by": "e5kit"}

    @app.get("/v1/models", response_model=ModelList, responses={401: ERROR_RESPONSES[401]}, dependencies=protected)
    async def models() -> dict:
        """The served model, in OpenAI's list shape."""
        return {"object": "list", "data": [model_object()]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelObject, responses={s: ERROR_RESPONSES[s] for s in (401, 404)}, dependencies=protected)
    async def model(model_id: str) -> dict:
        """The served model when ``model_id`` names it (as ``model`` in an embeddings request may)."""
        if model_id not in accepted_names:
            raise ApiError(404, f"model {model_id!r} is not served here; this server serves {served_name!r}", "model", "model_not_found")
        return model_object()

    role_header = {ROLE_WARNING_HEADER: {"description": "Set when input_type was omitted and the model has prompts: the role applied.", "schema": {"type": "string"}}}

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses={200: {"headers": role_header}, **ERROR_RESPONSES}, dependencies=protected)
    async def embeddings(body: EmbeddingRequest) -> Response:
        """Embed one or more texts or token-id lists (OpenAI-compatible); the role prefix comes from ``input_type``."""
        nonlocal role_warning_logged
        if body.model is not None and body.model not in accepted_names:
            raise ApiError(404, f"model {body.model!r} is not served here; this server serves {served_name!r}", "model", "model_not_found")
        role = body.input_type or config.default_input_type
        texts, decoded = await request_texts(body.input)
        result = await embed_request(texts, role, decoded)
        vectors = result.embeddings
        if body.dimensions is not None and body.dimensions < vectors.shape[1]:
            vectors = vectors[:, : body.dimensions].copy()
            if encoder.normalize:  # a cosine model's truncated vectors are unit vectors again; a dot model's stay raw
                vectors = normalize_rows(vectors)
        if body.encoding_format == "base64":
            encoded = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
        else:
            encoded = list(np.ascontiguousarray(vectors, dtype=np.float32))  # rows that orjson writes as float32
        used = int(sum(result.tokens))
        tokens_total.inc(used)
        headers = None
        if body.input_type is None and role_warning is not None:
            headers = {ROLE_WARNING_HEADER: role_warning}
            if not role_warning_logged:  # every such response carries the header; the log says it once
                role_warning_logged = True
                logger.warning("%s (further requests without input_type are not logged)", role_warning)
        return EmbeddingsJSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(encoded)],
                "model": served_name,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            },
            headers=headers,
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
            "backend": encoder.backend.name,
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
    app.add_middleware(MetricsMiddleware, requests=requests, latency=latency, endpoints={"/v1/embeddings", "/v1/models", "/search", "/health", "/metrics"})
    return app
