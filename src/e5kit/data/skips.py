"""Counted skips and drops that remember where they came from.

Every record a reader passes over and every pair a filter drops is counted under a readable reason
with its location (file and line), so a report can trace "truncated or corrupt compressed stream: 3"
to the files and lines it happened at.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

#: Locations kept per reason (the first ones met, in reading order).
EXAMPLES = 5
#: The file name recorded for a unit that comes from no file (e.g. the standard library's docs).
NO_FILE = "(no file)"


class SkipCounter(Counter):
    """Skipped or dropped units: a ``Counter`` of reason -> count that also keeps, per reason, the count
    per file and the first :data:`EXAMPLES` (file, line) locations.

    Count only with :meth:`add`, so every count has a location (``sum(self.values())`` equals the sum
    of the per-file counts).

    Example:
        >>> skips = SkipCounter()
        >>> skips.add("invalid UTF-8", "a.jsonl", 3)
        >>> skips["invalid UTF-8"], skips.where()["invalid UTF-8"]
        (1, {'files': {'a.jsonl': 1}, 'examples': [{'file': 'a.jsonl', 'line': 3}]})
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, Counter] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}

    def add(self, reason: str, file: str | Path | None, line: int | None = None, count: int = 1) -> None:
        """Count ``count`` units skipped for ``reason`` at ``file`` (None: no file) and ``line`` (1-based; None: unknown)."""
        self[reason] += count
        name = NO_FILE if file is None else str(file)
        self.files.setdefault(reason, Counter())[name] += count
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES:
            examples.append({"file": name, "line": line})

    def merge(self, other: SkipCounter, prefix: str = "") -> None:
        """Add ``other``'s counts and locations (its reasons prefixed with ``prefix``); examples stay the first met."""
        for reason, count in other.items():
            name = prefix + reason
            self[name] += count
            self.files.setdefault(name, Counter()).update(other.files.get(reason, {}))
            examples = self.examples.setdefault(name, [])
            examples.extend(other.examples.get(reason, [])[: EXAMPLES - len(examples)])

    def where(self) -> dict[str, dict[str, Any]]:
        """JSON-ready locations: reason -> {"files": {file: count, most first}, "examples": [{"file", "line"}, ...]}."""
        return {
            reason: {
                "files": dict(sorted(self.files.get(reason, {}).items(), key=lambda item: (-item[1], item[0]))),
                "examples": self.examples.get(reason, []),
            }
            for reason in sorted(self)
        }

    @classmethod
    def from_json(cls, counts: dict[str, int], where: dict[str, dict[str, Any]]) -> SkipCounter:
        """The counter :meth:`where` and ``dict(counter)`` describe (e.g. read back from a done marker)."""
        skips = cls()
        skips.update(counts)
        for reason, entry in where.items():
            skips.files[reason] = Counter(entry["files"])
            skips.examples[reason] = list(entry["examples"])
        return skips
