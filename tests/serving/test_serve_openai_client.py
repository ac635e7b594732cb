"""The official ``openai`` package against a live loopback server: texts, token ids, models, errors."""

from __future__ import annotations

import numpy as np
import pytest

from e5kit.serving.app import create_app
from e5kit.serving.config import ServeConfig

openai = pytest.importorskip("openai")

TEXTS = ["the cat sat on the mat", "how do cells divide"]


@pytest.fixture(scope="module")
def client(tiny_encoder, tiktoken_test_encoding, live_server):
    config = ServeConfig(api_key="s3cret", token_ids_encoding=tiktoken_test_encoding.name)
    with live_server(create_app(tiny_encoder, config, model_name="tiny")) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0, timeout=60)


def test_openai_client_embeds_texts_and_token_ids(client, tiny_encoder, tiktoken_test_encoding):
    # Given the official client (which asks for base64 unless told otherwise)
    # When it embeds texts, with input_type passed through extra_body
    response = client.embeddings.create(model="tiny", input=TEXTS, extra_body={"input_type": "passage"})
    # Then the vectors equal e5kit's passages, in OpenAI's response types
    assert response.model == "tiny" and [d.index for d in response.data] == [0, 1]
    np.testing.assert_allclose([d.embedding for d in response.data], tiny_encoder.encode_passages(TEXTS), atol=1e-5)
    # And float output and dimensions work as in OpenAI's API
    short = client.embeddings.create(model="tiny", input=TEXTS[0], dimensions=8, encoding_format="float")
    full = tiny_encoder.encode_queries(TEXTS[:1])[0]
    np.testing.assert_allclose(short.data[0].embedding, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)
    # When it sends token ids, as LangChain's OpenAIEmbeddings does by default
    ids = [tiktoken_test_encoding.encode(text) for text in TEXTS]
    from_ids = client.embeddings.create(model="tiny", input=ids)
    # Then they embed like the texts they decode to (queries: the server's default role)
    np.testing.assert_allclose([d.embedding for d in from_ids.data], tiny_encoder.encode_queries(TEXTS), atol=1e-5)
    assert from_ids.usage.prompt_tokens == sum(len(row) for row in tiny_encoder.tokenizer(tiny_encoder.prepare(TEXTS, "query"))["input_ids"])


def test_openai_client_lists_and_retrieves_the_model(client):
    assert [model.id for model in client.models.list()] == ["tiny"]
    model = client.models.retrieve("tiny")
    assert model.object == "model" and model.owned_by == "e5kit"
    with pytest.raises(openai.NotFoundError, match="'text-embedding-3-small' is not served here"):
        client.models.retrieve("text-embedding-3-small")


def test_openai_client_sees_refusals_as_its_own_errors(client):
    # A model name the server does not serve, a bad token id, a wrong key: each a typed error naming the problem
    with pytest.raises(openai.NotFoundError, match="model 'text-embedding-ada-002' is not served here"):
        client.embeddings.create(model="text-embedding-ada-002", input="cats")
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]: token id 9999 is beyond"):
        client.embeddings.create(model="tiny", input=[[99, 97], [9999]])
    with pytest.raises(openai.UnprocessableEntityError, match="input.0: expected a string, got null"):
        client.embeddings.create(model="tiny", input=[None])
    wrong_key = client.with_options(api_key="nope")
    with pytest.raises(openai.AuthenticationError, match="invalid bearer token"):
        wrong_key.embeddings.create(model="tiny", input="cats")
