"""The Python API (issue 18, item 8): each stage's function and config importable from ``e5kit``,
loaded on first use so that ``import e5kit`` stays light, and typed (``py.typed``)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import e5kit

INIT = Path(e5kit.__file__)


def test_every_exported_name_is_the_object_of_its_module():
    # Given every public name of the package
    for name in e5kit.__all__:
        if name == "__version__":
            continue
        # When it is read from the top level, Then it is the very object its module defines
        assert getattr(e5kit, name) is getattr(importlib.import_module(e5kit._EXPORTS[name]), name), name
    assert {"curate", "pretrain", "finetune", "run_task", "export_onnx", "VectorIndex", "create_app", "Quickstart"} <= set(e5kit.__all__)
    assert {"CurateConfig", "PretrainConfig", "FinetuneConfig", "STSConfig", "ServeConfig", "QuickstartConfig"} <= set(e5kit.__all__)


def test_type_checkers_see_the_same_names_as_run_time():
    # Given the imports under TYPE_CHECKING (what type checkers read, thanks to py.typed)
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    typed = {(node.module, alias.name) for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    # Then they are exactly the lazily exported names, from the same modules
    assert typed == {(module, name) for name, module in e5kit._EXPORTS.items()}
    assert (INIT.parent / "py.typed").is_file()


def test_import_e5kit_loads_no_heavy_dependency():
    # When e5kit is imported in a fresh interpreter
    code = "import sys, e5kit; print(sorted(m for m in ('torch', 'numpy', 'transformers', 'pydantic', 'importlib.metadata') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    # Then none of torch, numpy, transformers, pydantic (or the metadata reader) is loaded yet
    assert loaded == "[]"


def test_unknown_names_raise_attribute_error_and_the_version_is_a_string():
    # When a name the package does not export is read, Then AttributeError names it
    with pytest.raises(AttributeError, match="no_such_name"):
        e5kit.no_such_name  # noqa: B018
    # And the version comes from the installed metadata
    assert isinstance(e5kit.__version__, str) and e5kit.__version__
