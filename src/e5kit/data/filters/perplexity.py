"""Perplexity under a KenLM model (E5 dropped Common Crawl passages from high-perplexity pages).

Active only when a model path is given; it then needs the ``kenlm`` module (``pip install kenlm``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from e5kit.data.filters.base import FilterConfig, Verdict
from e5kit.io.pairs import Pair


class Config(FilterConfig):
    """Perplexity settings.

    Attributes:
        model_path: A KenLM ``.arpa`` or ``.bin`` model; None disables the filter.
        max_perplexity: Passages scoring above are dropped.
    """

    model_path: Path | None = None
    max_perplexity: float = 1000.0

    def active(self) -> bool:
        return self.model_path is not None


class Scorer(Protocol):
    def perplexity(self, text: str) -> float: ...


def load_kenlm(path: Path) -> Scorer:
    """Load a KenLM model, with a clear error when the module or the file is missing."""
    try:
        import kenlm
    except ImportError as error:
        raise ValueError(f"filters.perplexity.model_path is set ({path}) but the kenlm module is not installed: pip install kenlm") from error
    if not Path(path).is_file():
        raise ValueError(f"filters.perplexity.model_path: {path}: no such file")
    return kenlm.Model(str(path))


class PerplexityFilter:
    """Drop pairs whose passage has a perplexity above ``max_perplexity``."""

    name = "perplexity"

    def __init__(self, config: Config, scorer: Scorer | None = None) -> None:
        self.config = config
        self.scorer = scorer if scorer is not None else load_kenlm(config.model_path)

    def keep(self, pair: Pair) -> Verdict:
        # KenLM scores one line; newlines would be read as words.
        if self.scorer.perplexity(" ".join(pair.passage.split())) > self.config.max_perplexity:
            return f"passage perplexity over {self.config.max_perplexity:g}"
        return True
