"""Fixtures of the curation tests; the dump writers they use live in curation_dumps.py, a module with a
name of its own, so tests import them even when several test folders (each with a conftest) run together."""

from __future__ import annotations

from pathlib import Path

import pytest
from curation_dumps import json_lines, pushshift_records, write_lines


@pytest.fixture
def pushshift_dir(tmp_path) -> Path:
    """RS_2020-01.zst (submissions) and RC_2020-01.gz (comments): one shard."""
    submissions, comments = pushshift_records()
    write_lines(tmp_path / "RS_2020-01.zst", json_lines(submissions))
    write_lines(tmp_path / "RC_2020-01.gz", json_lines(comments))
    return tmp_path
