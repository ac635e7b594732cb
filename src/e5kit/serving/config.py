"""``e5kit serve`` settings: one pydantic config, loadable from YAML, every field overridable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from e5kit.encoder.model_format import BackendName


class ServeConfig(BaseModel):
    """Settings of the embedding server (see ``configs/serve.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model to serve (default: the index's model, else all-MiniLM-L6-v2).")
    backend: BackendName | None = Field(
        None, description="torch; onnx for an `e5kit export onnx` directory; openvino for an `e5kit export openvino` one; "
        "auto for the backend `e5kit export auto` measured fastest and recorded (default: the index's backend with an index, else torch)."
    )
    index: Path | None = Field(None, description="Index folder for POST /search (from `e5kit index build`).")
    threads: int | None = Field(
        None, ge=1, description="Inference threads (default: one per physical core on onnx/openvino, torch's own on torch). "
        "With other work on the machine, fewer threads than cores keep latency steady (benchmarks/serve_load.py measures both).",
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    api_key: str | None = Field(None, description="Require 'Authorization: Bearer KEY' (also from $E5KIT_API_KEY).")
    served_model_name: str | None = Field(None, description="The 'model' name clients send (default: the model folder's name).")
    default_input_type: str = Field(
        "query",
        description=(
            "Role of requests without input_type (`e5kit serve --default-role`): query (E5's prefix for symmetric use, "
            "right for queries, wrong for documents), document, none (raw text) or a prompt name; to a model with "
            "prompts such a response carries an X-E5kit-Warning header."
        ),
    )
    max_batch_size: int = Field(32, ge=1, description="Most texts per encode call: concurrent requests share one, larger requests are split into several, taking turns with the others.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long a request waits for others to share its batch.")
    warmup_max_length: int = Field(
        256, ge=0, description="On backends that build kernels per input shape (openvino), run every batch shape of texts up to this many "
        "tokens (capped at the model's limit) once at start, so the first requests of each shape are not slow; 0: no warm-up.",
    )
    max_items: int = Field(2048, ge=1, description="Inputs per request (OpenAI's limit; LangChain sends 1,000).")
    max_chars: int = Field(20_000, ge=1, description="Characters (or token ids) per input; longer inputs are refused, long texts are truncated at the model's token limit.")
    max_body_bytes: int = Field(4_000_000, ge=1, description="Request body size in bytes (a request within OpenAI's 300,000-token cap fits, even sent as token ids).")
    token_ids_encoding: str = Field("cl100k_base", description="tiktoken encoding that decodes inputs sent as token ids, as OpenAI clients such as LangChain do by default (needs `pip install 'e5kit[openai]'`).")
    max_top_k: int = Field(100, ge=1, description="Most documents one /search returns.")


def describe_fields() -> str:
    """One line per setting with its default, for ``--help``."""
    lines = []
    for name, info in ServeConfig.model_fields.items():
        lines.append(f"{name} (default {info.default!r}): {info.description}")
    return "\n\n".join(lines)
