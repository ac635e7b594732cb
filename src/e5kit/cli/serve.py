"""``e5kit serve``: an OpenAI-compatible embedding server (with /search over an index)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

from e5kit.cli.app import app, fail, load_encoder, overrides_option
from e5kit.cli.options import config_option
from e5kit.hub import DEFAULT_MODEL
from e5kit.serving.config import ServeConfig, describe_fields

SERVE_HELP = f"""Serve a model over HTTP: POST /v1/embeddings and GET /v1/models (OpenAI-compatible),
POST /search (with --index), GET /health, GET /metrics (Prometheus).

Settings, lowest precedence first: defaults, --config YAML, the options below, --set key=value.
Every setting and its default:

{describe_fields()}
"""


class DefaultRole(str, Enum):
    query = "query"
    document = "document"
    none = "none"


@app.command(help=SERVE_HELP)
def serve(
    model: str = config_option(ServeConfig, "model", "--model", "-m"),
    index: Path = config_option(ServeConfig, "index", "--index"),
    backend: str = config_option(ServeConfig, "backend"),
    threads: int = config_option(ServeConfig, "threads"),
    host: str = config_option(ServeConfig, "host"),
    port: int = config_option(ServeConfig, "port"),
    api_key: str = config_option(ServeConfig, "api_key", note="Without either, no auth."),
    max_batch_size: int = config_option(ServeConfig, "max_batch_size"),
    max_wait_ms: float = config_option(ServeConfig, "max_wait_ms"),
    warmup_max_length: int = config_option(ServeConfig, "warmup_max_length"),
    max_items: int = config_option(ServeConfig, "max_items"),
    max_chars: int = config_option(ServeConfig, "max_chars"),
    max_body_bytes: int = config_option(ServeConfig, "max_body_bytes"),
    default_input_type: DefaultRole = config_option(
        ServeConfig, "default_input_type", "--default-role",
        note="Clients that cannot send input_type (LangChain's OpenAIEmbeddings) then embed documents as queries; "
        "e5kit.integrations sends the right role.",
    ),
    config: Path = typer.Option(None, "--config", help="YAML file of settings, or a bundled config's name (`e5kit config show serve`)."),
    overrides: list[str] = overrides_option("--set max_items=64 --set max_wait_ms=2"),
) -> None:
    import uvicorn

    from e5kit.config import ConfigError, load_config

    options = dict(
        model=model, index=index, backend=backend, threads=threads, host=host, port=port, api_key=api_key or os.environ.get("E5KIT_API_KEY"),
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, warmup_max_length=warmup_max_length, max_items=max_items, max_chars=max_chars,
        max_body_bytes=max_body_bytes, default_input_type=default_input_type.value if default_input_type else None,
    )
    try:
        settings = load_config(ServeConfig, config, overrides, options)
    except ConfigError as error:
        raise fail(str(error)) from error
    served_app = build_app(settings)
    typer.echo(f"serving {served_app.title} on http://{settings.host}:{settings.port} (docs at /docs)")
    uvicorn.run(served_app, host=settings.host, port=settings.port, log_level="warning")


def build_app(settings):
    """Load the model (and index) named by ``settings`` and build the app; clean errors for bad paths.

    With an index, the model, backend and similarity default to those it was built with, and another
    model is refused (``StoredIndex.check_model``): its queries would not match the stored vectors.
    """
    from e5kit.serving.app import create_app
    from e5kit.serving.index import IndexStoreError, VectorIndex, read_stored

    if settings.index is None:
        model = settings.model or DEFAULT_MODEL
        encoder = load_encoder(model, backend=settings.backend or "torch", threads=settings.threads)
        return create_app(encoder, settings, index=None, model_name=Path(model).name)
    try:
        stored = read_stored(settings.index)
    except IndexStoreError as error:
        raise fail(str(error)) from error
    model = settings.model or stored.model
    encoder = load_encoder(model, backend=settings.backend or stored.backend, threads=settings.threads, similarity_fn_name=stored.similarity_fn_name)
    try:
        if warning := stored.check_model(model, encoder):
            typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
        index = VectorIndex.open(settings.index, encoder=encoder)
    except IndexStoreError as error:
        raise fail(str(error)) from error
    return create_app(encoder, settings, index=index, model_name=Path(model).name)
