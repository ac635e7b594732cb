"""The Python standard library's own documentation as (title, text) records.

Every Python installation carries real English technical prose: module, class and function
docstrings and the language reference topics behind ``help()``. Read like E5's Wikipedia source
(entity name + section -> passage), they give an offline corpus on any machine. Sources are parsed
with ``ast`` rather than imported, so no module runs (``antigravity`` would open a browser).
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from e5kit.data.skips import SkipCounter
from e5kit.io.text import has_visible_text

#: Folders of the standard library that hold tests, demos or vendored code rather than documentation.
_SKIPPED_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "turtledemo", "lib2to3"}


@dataclass(frozen=True)
class DocRecord:
    """One documented object.

    Attributes:
        doc_id: Dotted name, e.g. ``json.dumps`` or ``topic:ASSERTION``.
        kind: "module", "class", "function", "method" or "topic".
        title: Name plus the docstring's first line, the query-like side.
        text: The full docstring, the passage-like side.
    """

    doc_id: str
    kind: str
    title: str
    text: str

    @property
    def body(self) -> str:
        """The docstring after its summary paragraph ("" for one-paragraph docstrings)."""
        parts = self.text.split("\n\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""


def stdlib_dir() -> Path:
    """The folder of this interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _record(doc_id: str, kind: str, docstring: str) -> DocRecord:
    summary = docstring.strip().splitlines()[0].strip()
    return DocRecord(doc_id=doc_id, kind=kind, title=f"{doc_id}: {summary}", text=docstring.strip())


def iter_module_docs(root: Path | None = None, *, members: bool = True, skips: SkipCounter | None = None) -> Iterator[DocRecord]:
    """Yield docstring records of the public modules (and, with ``members``, their classes, functions and methods).

    Private names (leading underscore) and test folders are left out; files that do not parse are
    passed over (the standard library ships a few Python-2 era fixtures), counted in ``skips`` when given.
    """
    root = root or stdlib_dir()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIPPED_PARTS.intersection(relative.parts) or any(
            part.startswith("_") and part != "__init__.py" for part in relative.parts
        ):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            if skips is not None:
                skips.add("Python file that does not parse", path)
            continue
        module = _module_name(path, root)
        docstring = ast.get_docstring(tree)
        if docstring and has_visible_text(docstring):
            yield _record(module, "module", docstring)
        if not members:
            continue
        yield from _member_docs(tree.body, module)


def _member_docs(body: list[ast.stmt], prefix: str, in_class: bool = False) -> Iterator[DocRecord]:
    """Public classes and functions of a module body, and the public methods of those classes."""
    for node in body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        name = f"{prefix}.{node.name}"
        is_class = isinstance(node, ast.ClassDef)
        docstring = ast.get_docstring(node)
        if docstring and has_visible_text(docstring):
            yield _record(name, "class" if is_class else ("method" if in_class else "function"), docstring)
        if is_class:
            yield from _member_docs(node.body, name, in_class=True)


def iter_topic_docs() -> Iterator[DocRecord]:
    """Yield the language-reference topics that ``help("TOPIC")`` prints."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if has_visible_text(text):
            first_line = text.splitlines()[0].strip()
            yield DocRecord(doc_id=f"topic:{name}", kind="topic", title=f"{name}: {first_line}", text=text)
