"""Text rules every stage shares, so the encoder, the server, curation and the index agree.

This module imports nothing else from e5kit: any layer may use it.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

import regex

# A character a reader can see: not whitespace (Unicode White_Space), not a control character (Cc)
# and not a format character (Cf: zero-width space U+200B, word joiner U+2060, soft hyphen U+00AD,
# byte-order mark U+FEFF, bidi marks, ...). Such characters render as nothing, so a text made only of
# them carries no content, and every such text would embed to the same vector.
_VISIBLE = regex.compile(r"[^\p{White_Space}\p{Cc}\p{Cf}]")


def has_visible_text(text: str) -> bool:
    """True when ``text`` holds at least one visible character.

    "No visible text" means empty, whitespace only, or only control/format characters (zero-width
    space, word joiner, soft hyphen, BOM, ...). The encoder refuses such inputs, the server answers
    422 naming the item, curation drops the pair with a counted reason, and retrieval corpora keep
    such documents as empty passages (counted) instead of embedding them.
    """
    return _VISIBLE.search(text) is not None


@functools.cache
def visible_character_class() -> str:
    """``has_visible_text``'s rule as a regular-expression class matching one visible character.

    Written with literal characters and ranges (no ``\\p{..}`` or ``\\s``), so Python's ``re`` and
    JSON Schema's ECMA-262 patterns read it alike: the server's OpenAPI schema states exactly the rule
    its validator enforces. Built once per process from the Unicode tables (about 0.2 s).
    """
    every_character = "".join(map(chr, range(sys.maxunicode + 1)))
    invisible = [ord(c) for c in regex.findall(r"[\p{White_Space}\p{Cc}\p{Cf}]", every_character)]
    ranges: list[list[int]] = []
    for code in invisible:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[^" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]"


# Characters that render as nothing and are not whitespace: format (Cf: U+200B, U+2060, U+00AD, U+FEFF,
# bidi marks, ...) and control characters other than whitespace controls (\t, \n, ... are White_Space).
_INVISIBLE = regex.compile(r"[[\p{Cf}\p{Cc}]--\p{White_Space}]", regex.V1)
_WHITESPACE_RUN = regex.compile(r"\p{White_Space}+")


def normalized_text_key(text: str) -> str:
    """The key under which two texts count as the same text (e.g. a mined negative copying a positive).

    NFKC (compatibility forms such as full-width letters, ligatures and non-breaking spaces fold to
    their plain forms), then Unicode case folding (``str.casefold``, then NFKC again as Unicode's
    caseless matching prescribes), then invisible format/control characters removed and every run of
    whitespace collapsed to one space, ends stripped. A text without visible text (``has_visible_text``)
    has the key "".
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return _WHITESPACE_RUN.sub(" ", _INVISIBLE.sub("", folded)).strip()
