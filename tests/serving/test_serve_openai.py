"""OpenAI API completeness: token-id inputs decoded with tiktoken, GET /v1/models, OpenAI's 2,048-input limit."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from e5kit.serving.app import create_app
from e5kit.serving.config import ServeConfig

SENTENCES = ["the cat sat on the mat", "how do cells divide", "python can read and write files"]


@pytest.fixture(scope="module")
def token_client(tiny_encoder, tiktoken_test_encoding):
    config = ServeConfig(token_ids_encoding=tiktoken_test_encoding.name, max_items=4, max_chars=300)
    with TestClient(create_app(tiny_encoder, config, model_name="tiny")) as client:
        yield client


def test_token_id_lists_embed_like_the_text_they_decode_to(token_client, tiny_encoder, tiktoken_test_encoding):
    # Given texts tokenised client-side with a tiktoken encoding, as LangChain's OpenAIEmbeddings does
    rows = [tiktoken_test_encoding.encode(text) for text in SENTENCES]
    assert any(token >= 256 for row in rows for token in row)  # merged tokens, not only bytes
    # When they are sent as a list of token-id lists, and one of them as a single list
    many = token_client.post("/v1/embeddings", json={"input": rows, "input_type": "passage"})
    one = token_client.post("/v1/embeddings", json={"input": [float(token) for token in rows[1]]})  # JSON Schema integers
    # Then the server decoded them and embedded the text with the model's own tokenizer and prefix
    assert many.status_code == 200, many.text
    np.testing.assert_allclose([d["embedding"] for d in many.json()["data"]], tiny_encoder.encode_passages(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(one.json()["data"][0]["embedding"], tiny_encoder.encode_queries(SENTENCES[1:2])[0], atol=1e-5)
    # And usage counts the model's tokens, not the client's
    tokens = sum(len(ids) for ids in tiny_encoder.tokenizer(tiny_encoder.prepare(SENTENCES, "passage"))["input_ids"])
    assert many.json()["usage"]["prompt_tokens"] == tokens


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        # an id beyond the encoding, named with the input it is in
        ({"input": [[116, 104, 101], [99, 97, 300]]}, 400, "input[1]: token id 300 is beyond the tiktoken encoding 'e5kit-test-bytes' (ids 0 to 257)"),
        ({"input": [99, 97, 9999]}, 400, "input: token id 9999 is beyond"),
        # ids that decode to no visible text are refused like such text
        ({"input": [[32, 32], [99]]}, 400, "input: text at index 0 has no visible text (empty, whitespace or zero-width characters only) (decoded from its token ids)"),
        ({"input": [-1]}, 422, "greater than or equal to 0"),
        ({"input": [[]]}, 422, "input"),
        ({"input": [1.5, 2.0]}, 422, "input.0: expected a token id (an integer >= 0), got 1.5; `input` is a string, a list of strings, or token ids"),
        ({"input": [True]}, 422, "input.0: expected a token id (an integer >= 0), got true"),
        ({"input": [[1, "7"]]}, 422, "input.0.1: expected a token id (an integer >= 0), got a string"),
        ({"input": [[1], 2]}, 422, "input.1: expected a list of token ids, got 2"),
        ({"input": [1] * 301}, 422, "at most 300"),
        ({"input": [[1]] * 5}, 422, "at most 4"),
    ],
)
def test_bad_token_ids_get_a_named_4xx(token_client, payload, status, needle):
    # Given token ids the server cannot read, Then the error names the input and the problem
    response = token_client.post("/v1/embeddings", json=payload)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]


def test_token_ids_without_tiktoken_get_a_400_saying_what_to_do(tiny_encoder, monkeypatch):
    # Given a server whose Python has no tiktoken
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with TestClient(create_app(tiny_encoder, ServeConfig())) as client:
        # When a client sends token ids
        response = client.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
        # Then it is told why they cannot be read and how to send text instead; text still works
        assert client.post("/v1/embeddings", json={"input": "cats"}).status_code == 200
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "token_ids_unsupported" and error["param"] == "input"
    assert "tiktoken, which is not installed" in error["message"] and "pip install 'e5kit[openai]'" in error["message"]
    assert "check_embedding_ctx_length=False" in error["message"]


def test_an_encoding_that_does_not_load_is_named(tiny_encoder):
    pytest.importorskip("tiktoken")
    # Given a server configured with an encoding tiktoken does not know, When token ids arrive, Then a 400 names it
    with TestClient(create_app(tiny_encoder, ServeConfig(token_ids_encoding="no-such-encoding"))) as client:
        response = client.post("/v1/embeddings", json={"input": [1, 2, 3]})
    assert response.status_code == 400
    assert "the tiktoken encoding 'no-such-encoding', which did not load" in response.json()["error"]["message"]


def test_models_endpoints_in_openai_shape(tiny_encoder):
    # Given a server for models/e5-tiny served as "tiny", When a client lists and retrieves models
    config = ServeConfig(model="models/e5-tiny", served_model_name="tiny")
    with TestClient(create_app(tiny_encoder, config)) as client:
        listed = client.get("/v1/models").json()
        # Then the list holds the served model, and each name an embeddings request accepts retrieves it
        assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny"]
        model = listed["data"][0]
        assert model["object"] == "model" and model["owned_by"] == "e5kit" and isinstance(model["created"], int)
        for name in ("tiny", "models/e5-tiny", "e5-tiny"):
            assert client.get(f"/v1/models/{name}").json() == model
        missing = client.get("/v1/models/text-embedding-3-small")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert "'text-embedding-3-small' is not served here; this server serves 'tiny'" in missing.json()["error"]["message"]


def test_models_need_the_bearer_token_too(tiny_encoder):
    # Given a server with an api_key, Then listing models needs it like embedding does
    with TestClient(create_app(tiny_encoder, ServeConfig(api_key="s3cret"))) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_openai_item_limit_by_default_with_large_requests_split_into_batches(tiny_encoder):
    # Given the default limits and a small batch size
    config = ServeConfig(max_batch_size=16)
    assert config.max_items == 2048
    texts = [f"text number {i} of the cat" for i in range(2048)]
    with TestClient(create_app(tiny_encoder, config)) as client:
        # When a request carries OpenAI's maximum of 2,048 inputs
        response = client.post("/v1/embeddings", json={"input": texts, "input_type": "passage"})
        too_many = client.post("/v1/embeddings", json={"input": texts + ["one more"]})
        metrics = client.get("/metrics").text
    # Then it is embedded whole and in order, in forward batches of at most 16 texts
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(2048))
    np.testing.assert_allclose([data[i]["embedding"] for i in (0, 1000, 2047)], tiny_encoder.encode_passages([texts[i] for i in (0, 1000, 2047)]), atol=1e-5)
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("e5kit_batch_texts_count")))
    assert batches == 2048 / 16
    assert 'e5kit_batch_texts_bucket{le="16.0"} 128.0' in metrics
    # And one input more is refused, naming the limit
    assert too_many.status_code == 422 and "at most 2048 items" in too_many.json()["error"]["message"]
