"""The HTTP server: OpenAI-compatible embeddings, search, errors, auth, metrics, batching."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import weakref

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from e5kit.serving.app import create_app
from e5kit.serving.config import ServeConfig
from e5kit.serving.index import IndexSettings, VectorIndex


@pytest.fixture(scope="module")
def client(tiny_encoder):
    app = create_app(tiny_encoder, ServeConfig(max_items=4, max_chars=300, max_body_bytes=4000), model_name="tiny")
    with TestClient(app) as test_client:
        yield test_client


def test_embeddings_apply_the_prefix_server_side(client, tiny_encoder, texts):
    # Given a list of texts and input_type passage
    response = client.post("/v1/embeddings", json={"input": texts[:3], "input_type": "passage", "model": "tiny"})
    # Then the response has OpenAI's shape and equals encoding with the passage prefix
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and all(d["object"] == "embedding" for d in body["data"])
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], tiny_encoder.encode(texts[:3], role="passage"), atol=1e-5)
    # And usage counts the tokens embedded, prefix and special tokens included
    tokens = sum(len(ids) for ids in tiny_encoder.tokenizer(tiny_encoder.prepare(texts[:3], "passage"))["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # And a bare string without input_type is embedded as a query (the default)
    single = client.post("/v1/embeddings", json={"input": texts[0]}).json()
    np.testing.assert_allclose(single["data"][0]["embedding"], tiny_encoder.encode_queries(texts[:1])[0], atol=1e-5)


def test_float_embeddings_read_back_as_the_encoders_float32_bits(client, tiny_encoder, texts):
    # Given texts embedded through the server as JSON floats and by the encoder itself
    body = client.post("/v1/embeddings", json={"input": texts[:3], "input_type": "passage"}).json()
    expected = tiny_encoder.encode(texts[:3], role="passage")
    # Then every float, parsed and stored as float32, has exactly the encoder's bits (not just close)
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert got.dtype == expected.dtype and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # And truncated dimensions renormalised by the server read back exactly too
    cut = client.post("/v1/embeddings", json={"input": texts[:1], "input_type": "passage", "dimensions": 8}).json()
    # (the text embedded alone, as the server does: float32 sums may round differently in a batch of 3 on AVX-512)
    alone = tiny_encoder.encode(texts[:1], role="passage")
    kept = alone[:, :8] / np.maximum(np.linalg.norm(alone[:, :8], axis=1, keepdims=True), 1e-12)
    assert np.array_equal(np.array(cut["data"][0]["embedding"], dtype=np.float32), kept[0].astype(np.float32))


def test_dimensions_and_base64(client, tiny_encoder):
    full = tiny_encoder.encode_queries(["cats"])[0]
    body = client.post("/v1/embeddings", json={"input": ["cats"], "dimensions": 8, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"input": []}, 422, "input"),
        ({"input": ""}, 422, "input"),
        ({"input": ["ok", "   "]}, 422, "input.1: Value error, has no visible text"),
        # no visible text in one shared definition (e5kit.io.text): control, format and zero-width characters too
        ({"input": "\x1f"}, 422, "has no visible text"),
        ({"input": "\ufeff "}, 422, "has no visible text"),
        ({"input": ["ok", "\u200b"]}, 422, "input.1: Value error, has no visible text"),
        ({"input": ["ok", "fine", "\u2060\u00ad"]}, 422, "input.2: Value error, has no visible text"),
        ({"input": ["ok", 3]}, 422, "input"),
        ({"input": ["a"] * 5}, 422, "at most 4"),
        ({"input": "x" * 301}, 422, "at most 300"),
        ({"input": "ok", "input_type": "title"}, 422, "input_type: Input should be 'corpus', 'doc'"),
        ({"input": "ok", "model": "gpt"}, 404, "model 'gpt' is not served"),
        ({"input": "ok", "dimensions": 33}, 422, "dimensions"),
        ({"input": "ok", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": "ok", "extra": 1}, 422, "extra"),
        ({"input": "\ud800"}, 422, "input: Input should be a valid string"),
    ],
)
def test_bad_input_gets_a_named_4xx_error(client, payload, status, needle):
    # json.dumps escapes the lone surrogate as \\ud800, as a client sending it would
    response = client.post("/v1/embeddings", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_a_list_mixing_a_number_and_a_string_is_told_what_input_accepts(client):
    # Given an input list whose first item is neither a string nor a token id, and whose second is a string
    response = client.post("/v1/embeddings", json={"input": [1.5, "a"]})
    # Then the one-line 422 names the wrong item against the strings the list was judged to hold, and every accepted form
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "input.0: expected a string, got 1.5; "
        "`input` is a string, a list of strings, or token ids (a list of integers >= 0, or a list of such lists)"
    )
    # And an input of no accepted kind at all is told the same forms
    whole = client.post("/v1/embeddings", json={"input": {"text": "a"}}).json()["error"]
    assert whole["message"].startswith("input: expected a string, a list of strings, or token ids") and whole["message"].endswith("got an object")
    assert whole["param"] == "input"


@pytest.mark.parametrize(
    "body,needle",
    [
        (b'{"input": "caf\xe9"}', "the body is not valid UTF-8 (byte 0xe9 at position 14)"),
        (b'{"input": ' + b"[" * 1900 + b"]" * 1900 + b"}", "nested too deeply"),  # under the 4,000-byte limit
    ],
)
def test_unparseable_bodies_get_a_400_saying_why(client, body, needle):
    # Given a body that is not UTF-8, or JSON nested beyond what the parser can take
    response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    # Then the 400 says what is wrong with it, like every other error of the server
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


def test_malformed_json_and_oversized_bodies(client):
    response = client.post("/v1/embeddings", content=b'{"input": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]["message"]
    response = client.post("/v1/embeddings", json={"input": ["x" * 290] * 4, "model": "y" * 3000})
    assert response.status_code == 413 and "4000" in response.json()["error"]["message"]
    # A chunked body without Content-Length is counted too
    response = client.post("/v1/embeddings", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_search_without_index_is_404_and_health_metrics(client):
    assert client.post("/search", json={"query": "cats"}).status_code == 404
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["dimension"] == 32 and health["index"] is None
    metrics = client.get("/metrics").text
    assert 'e5kit_requests_total{endpoint="/v1/embeddings",status="200"}' in metrics
    assert "e5kit_batch_texts_bucket" in metrics


def test_objects_alive_at_start_leave_the_collectors_view_while_it_serves(tiny_encoder):
    class Node:
        pass

    # Given a server, whose libraries and model leave hundreds of thousands of objects for a full collection to walk
    with TestClient(create_app(tiny_encoder, ServeConfig())) as client:
        # When it has started, Then what was alive then is out of the collector's view (gc.freeze)
        assert gc.get_freeze_count() > 10_000
        # And it serves, and a reference cycle made after start is still collected
        assert client.post("/v1/embeddings", json={"input": "cats"}).status_code == 200
        cycle = Node()
        cycle.self, alive = cycle, weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
    # And after shutdown the collector sees everything again
    assert gc.get_freeze_count() == 0


def test_an_app_serves_again_after_its_lifespan_runs_a_second_time(tiny_encoder):
    # Given one app and one TestClient, whose every `with` block runs the app's lifespan (startup and shutdown)
    app = create_app(tiny_encoder, ServeConfig())
    client = TestClient(app)
    for run in range(2):
        # When it is started again after a shutdown
        with client:
            # Then each run embeds, and the collector sees everything again after each shutdown
            response = client.post("/v1/embeddings", json={"input": "cats"})
            assert response.status_code == 200, f"run {run}: {response.text}"
        assert gc.get_freeze_count() == 0


def test_bearer_token(tiny_encoder):
    app = create_app(tiny_encoder, ServeConfig(api_key="s3cret"))
    with TestClient(app) as client:
        assert client.post("/v1/embeddings", json={"input": "cats"}).status_code == 401
        wrong = client.post("/v1/embeddings", json={"input": "cats"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert client.post("/v1/embeddings", json={"input": "cats"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_search_returns_documents_with_their_best_chunk(tiny_encoder, corpus, tmp_path):
    index = VectorIndex.create(tmp_path / "idx", tiny_encoder, IndexSettings(overlap=8), model="tiny")
    index.add(corpus)
    with TestClient(create_app(tiny_encoder, ServeConfig(), index=index)) as client:
        body = client.post("/search", json={"query": "the cat sat on the mat", "top_k": 3}).json()
    expected = index.search(["the cat sat on the mat"], k=3)[0]
    assert [hit["doc_id"] for hit in body["data"]] == [hit.doc_id for hit in expected]
    np.testing.assert_allclose([hit["score"] for hit in body["data"]], [hit.score for hit in expected], atol=1e-5)
    assert body["data"][0]["snippet"] == expected[0].snippet()


def test_concurrent_requests_are_batched_and_answered_in_order(tiny_encoder, texts):
    # Given a server that waits up to 200 ms to fill a batch
    app = create_app(tiny_encoder, ServeConfig(max_wait_ms=200, max_batch_size=64))

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                # When several requests arrive together
                responses = await asyncio.gather(
                    *(http.post("/v1/embeddings", json={"input": [text], "input_type": "passage"}) for text in texts)
                )
                metrics = (await http.get("/metrics")).text
        return responses, metrics

    responses, metrics = asyncio.run(run())
    # Then each gets its own embedding, and they shared forward passes
    got = np.array([r.json()["data"][0]["embedding"] for r in responses])
    np.testing.assert_allclose(got, tiny_encoder.encode(texts, role="passage"), atol=1e-5)
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("e5kit_batch_texts_count")))
    assert batches < len(texts)
