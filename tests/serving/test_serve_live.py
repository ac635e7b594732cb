"""A real uvicorn server on a free loopback port: schemathesis against its OpenAPI schema, and a load test."""

from __future__ import annotations

import asyncio
import importlib.util
import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from e5kit.serving.app import create_app
from e5kit.serving.config import ServeConfig
from e5kit.serving.index import IndexSettings, VectorIndex

LOAD_REQUESTS = 200
LOAD_CONCURRENCY = 16
SCHEMATHESIS_EXAMPLES = int(os.environ.get("E5KIT_SCHEMATHESIS_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def base_url(tiny_encoder, corpus_index, live_server, request):
    # The body limit fits the largest schema-valid request (8 x 500 characters, JSON-escaped surrogate
    # pairs take 12 bytes each), so schemathesis's valid requests are never refused as too large.
    # Token ids decode with an in-memory tiktoken encoding (cl100k_base would be downloaded) when
    # tiktoken is installed; without it they get the documented 400.
    encoding = "cl100k_base"
    if importlib.util.find_spec("tiktoken") is not None:
        encoding = request.getfixturevalue("tiktoken_test_encoding").name
    config = ServeConfig(max_items=8, max_chars=500, max_body_bytes=60_000, token_ids_encoding=encoding)
    app = create_app(tiny_encoder, config, index=corpus_index, model_name="tiny")
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def corpus_index(tiny_encoder, tmp_path_factory):
    from e5kit.serving.index import Document

    index = VectorIndex.create(tmp_path_factory.mktemp("live") / "idx", tiny_encoder, IndexSettings(overlap=4), model="tiny")
    index.add([Document(f"d{i}", text) for i, text in enumerate(["the cat sat on the mat", "python reads files", "cells divide"])])
    return index


def test_schemathesis_finds_no_server_errors_or_schema_violations(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/models", "/v1/models/{model_id}", "/search", "/health", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # Given any request schemathesis generates for this operation, Then the server answers
            # without a 5xx, with a documented status code and a body matching the documented schema
            if case.operation.path != "/v1/embeddings":
                case.call_and_validate()
                return
            # And accepts it, but for the refusals of token ids that a schema cannot state: ids the
            # tiktoken encoding does not have (it is known only once it loads), ids that decode to no
            # visible text, or no tiktoken at all
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            if response.status_code == 400:
                assert isinstance(case.body["input"], list) and not isinstance(case.body["input"][0], str), response.text
            else:
                case.validate_response(response, checks=[positive_data_acceptance])

        check()


def test_loopback_load_has_no_errors(base_url):
    # Given a fixed number of concurrent requests against the live server
    async def run():
        limits = httpx.Limits(max_connections=LOAD_CONCURRENCY)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
            semaphore = asyncio.Semaphore(LOAD_CONCURRENCY)

            async def one(i: int):
                async with semaphore:
                    if i % 10 == 0:
                        return await http.post("/search", json={"query": "cat", "top_k": 2})
                    return await http.post("/v1/embeddings", json={"input": [f"text number {i}", "the cat"], "input_type": "passage"})

            return await asyncio.gather(*(one(i) for i in range(LOAD_REQUESTS)))

    responses = asyncio.run(run())
    # Then every request succeeds, and the server batched them
    assert [r.status_code for r in responses].count(200) == LOAD_REQUESTS
    embeddings = [r.json()["data"] for i, r in enumerate(responses) if i % 10]
    assert all(len(data) == 2 and len(data[0]["embedding"]) == 32 for data in embeddings)
    searches = [r.json()["data"] for i, r in enumerate(responses) if i % 10 == 0]
    assert all(len(data) == 2 and data[0]["doc_id"] == "d0" for data in searches)
    metrics = httpx.get(f"{base_url}/metrics").text
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("e5kit_batch_texts_count")))
    assert batches < LOAD_REQUESTS
