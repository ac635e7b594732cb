"""The short sentences the serving and export tests embed, and long documents built from them.

A module with a name of its own (not a conftest), so the root conftest's ``texts`` fixture and the
serving conftest's ``corpus`` fixture import the same sentences.
"""

from __future__ import annotations

SENTENCES = [
    "the cat sat on the mat",
    "cells divide and genes change in cancer",
    "python can read and write files",
    "the sun and the moon in a blue sky",
    "a new study of protein and disease in patients",
    "search the index to find the vector of a text",
    "a big dog and a small cat",
    "how does the treatment effect the results of the study",
]


def long_text(words: int, offset: int = 0) -> str:
    """A document of ``words`` words drawn from the sentences, long enough to need several chunks."""
    pool = " ".join(SENTENCES).split()
    return " ".join(pool[(offset + i) % len(pool)] for i in range(words))


#: Mixed lengths for fidelity checks: one text past the tiny models' 64-token limit, one single word.
MIXED_LENGTHS = [
    "the cat sat on the mat",
    "cells divide and genes change in cancer",
    "python can read and write files",
    "a new study of protein and disease in patients",
    "how does the treatment effect the results of the study " * 8,
    "cats",
]
