"""Fixtures for the serving tests: a small corpus, a tiktoken encoding that needs no download, and a real
uvicorn server on a loopback port (the tiny model as an Encoder and ``texts`` come from tests/conftest.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tiny_texts import SENTENCES, long_text


@pytest.fixture()
def corpus() -> list:
    from e5kit.serving.index import Document

    documents = [Document(f"s{i}", text) for i, text in enumerate(SENTENCES)]
    documents += [Document(f"long{i}", long_text(150, offset=i * 7), title=f"long document {i}") for i in range(3)]
    return documents


#: Name under which ``tiktoken_test_encoding`` registers its encoding with tiktoken.
TEST_ENCODING = "e5kit-test-bytes"


@pytest.fixture(scope="session")
def tiktoken_test_encoding():
    """A byte-level tiktoken encoding (256 byte tokens and two merges) registered as ``TEST_ENCODING``.

    tiktoken downloads cl100k_base's file on first use, which tests cannot; this one is built in
    memory and decodes exactly like any tiktoken encoding. Skips when tiktoken is not installed.
    """
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {bytes([i]): i for i in range(256)} | {b"at": 256, b" the": 257}
    encoding = tiktoken.Encoding(TEST_ENCODING, pat_str=r" ?\S+|\s+", mergeable_ranks=ranks, special_tokens={})
    tiktoken.registry.ENCODINGS[TEST_ENCODING] = encoding  # get_encoding() looks here first
    yield encoding
    tiktoken.registry.ENCODINGS.pop(TEST_ENCODING, None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def live_server():
    """``running_server``, for tests and fixtures to start their own app with."""
    return running_server


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields the base URL, stops on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
