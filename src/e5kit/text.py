"""Text rules every stage shares, so the encoder, the server, curation and the index agree.

This module imports nothing else from e5kit: any layer may use it.
"""

from __future__ import annotations

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
