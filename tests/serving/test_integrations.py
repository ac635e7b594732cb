"""e5kit.integrations with the real LangChain and LlamaIndex packages, against a live loopback server
and a local Encoder; and the server's default role for requests that carry no input_type."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from e5kit.encoder import Encoder
from e5kit.serving.app import ROLE_WARNING_HEADER, create_app
from e5kit.serving.config import ServeConfig

DOCUMENTS = ["Mitosis is how a cell divides into two cells", "the cat sat on the mat"]
QUERY = "how do cells divide"


@pytest.fixture(scope="module")
def server_url(tiny_encoder, live_server):
    with live_server(create_app(tiny_encoder, ServeConfig(api_key="s3cret"), model_name="tiny")) as url:
        yield url


def expected(encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """The Encoder's own document-role and query-role vectors of DOCUMENTS and QUERY."""
    return encoder.encode(DOCUMENTS, role="passage"), encoder.encode([QUERY], role="query")[0]


def assert_roles(documents, query, encoder: Encoder) -> None:
    want_documents, want_query = expected(encoder)
    np.testing.assert_allclose(documents, want_documents, rtol=0, atol=1e-6)
    np.testing.assert_allclose(query, want_query, rtol=0, atol=1e-6)
    # The same text differs by role on a prompted model, so a role mix-up could not pass
    assert not np.allclose(np.asarray(documents[0]), encoder.encode([DOCUMENTS[0]], role="query")[0], atol=1e-3)


# ---------------------------------------------------------------------- LangChain
@pytest.fixture(scope="module")
def langchain():
    pytest.importorskip("langchain_core")
    import e5kit.integrations.langchain

    return e5kit.integrations.langchain


@pytest.mark.parametrize("target", ["server", "encoder"])
def test_langchain_embeds_documents_and_queries_in_their_roles(langchain, target, server_url, tiny_encoder):
    # Given LangChain embeddings over the server (with its key, OpenAI's /v1 base URL form) or the local Encoder
    from langchain_core.embeddings import Embeddings

    options = {"base_url": f"{server_url}/v1", "api_key": "s3cret", "model": "tiny"} if target == "server" else {"encoder": tiny_encoder}
    embeddings = langchain.E5kitEmbeddings(**options)
    assert isinstance(embeddings, Embeddings)
    # When documents and a query go through LangChain's two calls, sync and async
    documents, query = embeddings.embed_documents(DOCUMENTS), embeddings.embed_query(QUERY)
    adocuments, aquery = asyncio.run(embeddings.aembed_documents(DOCUMENTS)), asyncio.run(embeddings.aembed_query(QUERY))
    # Then they equal the Encoder's document-role and query-role vectors, as plain lists of floats
    assert isinstance(documents, list) and isinstance(documents[0], list) and isinstance(query[0], float)
    assert_roles(documents, query, tiny_encoder)
    assert_roles(adocuments, aquery, tiny_encoder)


def test_langchain_server_refusal_is_one_line_with_the_servers_reason(langchain, server_url):
    from e5kit.integrations.embedder import ServerError

    embeddings = langchain.E5kitEmbeddings(base_url=server_url, api_key="s3cret", model="text-embedding-3-small")
    with pytest.raises(ServerError, match=r"answered 404: model 'text-embedding-3-small' is not served here") as raised:
        embeddings.embed_query(QUERY)
    assert "\n" not in str(raised.value)


def test_langchain_needs_exactly_one_target(langchain, tiny_encoder):
    with pytest.raises(ValueError, match="exactly one of base_url"):
        langchain.E5kitEmbeddings()
    with pytest.raises(ValueError, match="exactly one of base_url"):
        langchain.E5kitEmbeddings(base_url="http://127.0.0.1:1", encoder=tiny_encoder)


# ---------------------------------------------------------------------- LlamaIndex
@pytest.fixture(scope="module")
def llamaindex():
    pytest.importorskip("llama_index.core")
    import e5kit.integrations.llamaindex

    return e5kit.integrations.llamaindex


@pytest.mark.parametrize("target", ["server", "encoder"])
def test_llamaindex_embeds_texts_and_queries_in_their_roles(llamaindex, target, server_url, tiny_encoder):
    # Given a LlamaIndex embed model over the server or the local Encoder, batching one text at a time
    from llama_index.core.embeddings import BaseEmbedding

    options = {"base_url": server_url, "api_key": "s3cret"} if target == "server" else {"encoder": tiny_encoder}
    embed_model = llamaindex.E5kitEmbedding(embed_batch_size=1, **options)
    assert isinstance(embed_model, BaseEmbedding)
    # When texts (ingestion) and a query (retrieval) are embedded through LlamaIndex's public calls
    documents, query = embed_model.get_text_embedding_batch(DOCUMENTS), embed_model.get_query_embedding(QUERY)
    single = embed_model.get_text_embedding(DOCUMENTS[0])
    adocuments = asyncio.run(embed_model.aget_text_embedding_batch(DOCUMENTS))
    aquery = asyncio.run(embed_model.aget_query_embedding(QUERY))
    # Then texts have the document role and the query the query role
    assert_roles(documents, query, tiny_encoder)
    assert_roles(adocuments, aquery, tiny_encoder)
    np.testing.assert_allclose(single, documents[0], rtol=0, atol=1e-6)


def test_llamaindex_round_trips_through_its_dict_without_the_api_key(llamaindex, server_url, tiny_encoder, monkeypatch):
    # Given a server embed model saved with LlamaIndex's to_dict
    embed_model = llamaindex.E5kitEmbedding(base_url=server_url, api_key="s3cret", model="tiny")
    fields = embed_model.to_dict()
    assert fields["base_url"] == server_url and fields["model_name"] == "tiny" and "s3cret" not in str(fields)
    # When it is rebuilt with from_dict, the key coming from the environment
    monkeypatch.setenv("E5KIT_API_KEY", "s3cret")
    rebuilt = llamaindex.E5kitEmbedding.from_dict(fields)
    # Then it embeds queries as before
    np.testing.assert_allclose(rebuilt.get_query_embedding(QUERY), expected(tiny_encoder)[1], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- imports
def test_importing_e5kit_imports_no_framework():
    # The integrations package itself stays light too: only its per-framework modules import a framework
    code = "import sys, e5kit, e5kit.integrations, e5kit.integrations.embedder; print(sorted(m for m in ('langchain_core', 'llama_index', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# ---------------------------------------------------------------------- the server's default role
def test_role_less_request_to_a_prompted_model_is_flagged_and_logged_once(tiny_encoder, caplog):
    # Given a prompted model served with the default settings
    app = create_app(tiny_encoder, ServeConfig(), model_name="tiny")
    # When two requests come without input_type and one with it
    with caplog.at_level(logging.WARNING, logger="e5kit.serving.app"), TestClient(app) as client:
        first, second = (client.post("/v1/embeddings", json={"input": [QUERY]}) for _ in range(2))
        explicit = client.post("/v1/embeddings", json={"input": [QUERY], "input_type": "query"})
    # Then the role-less ones are embedded as queries and say so in a header naming the role and the fix
    for response in (first, second):
        assert response.status_code == 200
        assert "default role 'query'" in response.headers[ROLE_WARNING_HEADER] and "--default-role" in response.headers[ROLE_WARNING_HEADER]
    np.testing.assert_allclose(first.json()["data"][0]["embedding"], tiny_encoder.encode([QUERY], role="query")[0], atol=1e-6)
    # And the explicit one carries no header, and the log said it once
    assert ROLE_WARNING_HEADER not in explicit.headers
    assert [record.getMessage().count("no input_type") for record in caplog.records] == [1]


def test_model_without_prompts_gets_no_header(tiny_bert_dir):
    app = create_app(Encoder.load(tiny_bert_dir, prompts={}, device="cpu"), ServeConfig(), model_name="plain")
    with TestClient(app) as client:
        response = client.post("/v1/embeddings", json={"input": [QUERY]})
    assert response.status_code == 200 and ROLE_WARNING_HEADER not in response.headers


def test_serve_default_role_option_sets_the_role_of_role_less_requests(tiny_bert_dir, tiny_encoder, monkeypatch):
    # Given `e5kit serve --default-role document` (uvicorn.run replaced so that the app can be called here)
    import uvicorn

    from e5kit.cli import app as cli

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_bert_dir), "--default-role", "document"])
    assert result.exit_code == 0, result.output
    # When a request comes without input_type
    with TestClient(served[0]) as client:
        response = client.post("/v1/embeddings", json={"input": DOCUMENTS})
    # Then it is embedded as documents, and the header names that role
    np.testing.assert_allclose([d["embedding"] for d in response.json()["data"]], expected(tiny_encoder)[0], atol=1e-6)
    assert "default role 'document'" in response.headers[ROLE_WARNING_HEADER]
