"""Fixtures for the fine-tuning tests: one torch thread (the tiny BEIR folder, the tiny cross-encoder and
write_jsonl come from tests/conftest.py, which the data-preparation tests in tests/data share)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(single_torch_thread):
    """Tiny-model steps here run on one intra-op thread (see tests/conftest.py)."""
    yield
