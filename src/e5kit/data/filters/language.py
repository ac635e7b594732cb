"""Language identification with py3langid, whose model ships inside the wheel (no download at run time)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from e5kit.data.filters.base import FilterConfig, Verdict
from e5kit.io.pairs import Pair


class Config(FilterConfig):
    """Language settings.

    Attributes:
        enabled: Run the filter.
        languages: ISO 639-1 codes to keep.
        min_confidence: Minimum normalised probability of the predicted language.
        sides: Which sides must be in a kept language.
        max_chars: Classify this many leading characters (speed; long texts do not need more).
    """

    enabled: bool = True
    languages: list[str] = ["en"]
    min_confidence: float = 0.5
    sides: Literal["passage", "both"] = "passage"
    max_chars: int = 2000


@lru_cache(maxsize=1)
def identifier():
    """py3langid's bundled model with normalised probabilities (loaded once per process)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageFilter:
    """Keep pairs whose text is classified as one of ``languages`` with enough confidence."""

    name = "language"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.languages = set(config.languages)
        unknown = self.languages - set(identifier().labels)
        if unknown:
            raise ValueError(f"filters.language.languages: unknown code(s) {sorted(unknown)}")

    def keep(self, pair: Pair) -> Verdict:
        sides = [("passage", pair.passage)] + ([("query", pair.query)] if self.config.sides == "both" else [])
        for side, text in sides:
            language, confidence = identifier().classify(text[: self.config.max_chars])
            if language not in self.languages:
                return f"{side} not in {'/'.join(sorted(self.languages))}"
            if confidence < self.config.min_confidence:
                return f"{side} language confidence under {self.config.min_confidence}"
        return True
