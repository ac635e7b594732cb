"""One definition of "no visible text", shared by the encoder, the server, curation and the index."""

from __future__ import annotations

import re
import sys

import pytest

from e5kit.io.text import has_visible_text, visible_character_class


@pytest.mark.parametrize("text", ["", " ", "\n\t", "\u200b", "\u2060", "\u00ad", "\ufeff", "\u200b \u200d\u2060", "\x00\x1f", "\u3000"])
def test_texts_without_visible_characters(text):
    assert not has_visible_text(text)


@pytest.mark.parametrize("text", ["a", " x ", "\u200bword", "é", "数", "🙂", "-", "\u00ad-"])
def test_texts_with_a_visible_character(text):
    assert has_visible_text(text)


def test_the_schema_pattern_states_the_same_rule_for_every_character():
    # Given the character class the server publishes in its OpenAPI schema
    visible = re.compile(visible_character_class())
    # Then for every Unicode code point, it matches exactly when has_visible_text says the character is visible
    disagreements = [code for code in range(sys.maxunicode + 1) if bool(visible.fullmatch(chr(code))) != has_visible_text(chr(code))]
    assert disagreements == []
