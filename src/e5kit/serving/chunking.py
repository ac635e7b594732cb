"""Splitting long documents into overlapping token windows that map back to character offsets.

E5 reads at most 512 tokens; a longer document embedded whole loses its tail. Each document is
tokenised once with the model's own (fast) tokenizer, cut into windows of ``window`` tokens that
overlap by ``overlap`` tokens, and each window is returned as a character span of the original text,
so a search hit can point at the exact passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Tokens kept free beside the prefix and special tokens: re-tokenising a cut-out span can merge or
#: split a token at its edges.
EDGE_MARGIN = 2


@dataclass(frozen=True)
class Chunk:
    """One window of a document.

    Attributes:
        index: Position of the window in its document (0-based).
        start: First character of the window in the document text.
        end: One past its last character.
    """

    index: int
    start: int
    end: int


def window_spans(
    offsets: Sequence[tuple[int, int]], window: int, overlap: int, word_starts: Sequence[bool] | None = None
) -> list[Chunk]:
    """Cut a token sequence into overlapping windows, as character spans.

    Args:
        offsets: (start, end) character offsets of each token, in order.
        window: Most tokens per window.
        overlap: Tokens shared by consecutive windows (0 <= overlap < window); fewer when a boundary
            moves to a word start.
        word_starts: True where a token begins a word; windows then start and end on word
            boundaries (a word longer than the window is still cut). None treats every token as a word.

    Returns:
        Chunks covering every token; one chunk for a text no longer than ``window``; none for no tokens.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    total = len(offsets)
    starts = word_starts if word_starts is not None else [True] * total
    chunks: list[Chunk] = []
    first = 0
    while first < total:
        last = min(first + window, total) - 1
        cut = last
        while cut < total - 1 and cut > first and not starts[cut + 1]:  # do not end inside a word
            cut -= 1
        if cut > first or last == total - 1:
            last = cut
        chunks.append(Chunk(index=len(chunks), start=offsets[first][0], end=offsets[last][1]))
        if last == total - 1:
            break
        following = max(last + 1 - overlap, first + 1)
        while following <= last and not starts[following]:  # start the next window on a word
            following += 1
        first = following
    return chunks


def chunk_window(tokenizer, max_length: int, prefix: str) -> int:
    """Tokens of document text that fit in one input of ``max_length`` after the prefix and special tokens."""
    prefix_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
    window = max_length - tokenizer.num_special_tokens_to_add(pair=False) - prefix_tokens - EDGE_MARGIN
    if window < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text after the prefix {prefix!r}")
    return window


def chunk_texts(texts: Sequence[str], tokenizer, window: int, overlap: int) -> list[list[Chunk]]:
    """Chunk each text with ``window_spans`` using the tokenizer's character offsets (fast tokenizers only)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"chunking needs a fast tokenizer with character offsets; {type(tokenizer).__name__} is not one")
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # long documents are expected here: no "sequence longer than max length" warnings
    )
    chunks = []
    for row, offsets in enumerate(encoded["offset_mapping"]):
        words = encoded.word_ids(row)
        word_starts = [i == 0 or words[i] != words[i - 1] for i in range(len(words))]
        chunks.append(window_spans(offsets, window, overlap, word_starts))
    return chunks
