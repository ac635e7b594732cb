"""e5kit: E5-style text embeddings, from raw text pairs to a served model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("e5kit")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # Importing torch costs seconds; keep `import e5kit` (and `e5kit --help`) fast until the Encoder is used.
    if name == "Encoder":
        from e5kit.encoder import Encoder

        return Encoder
    raise AttributeError(f"module 'e5kit' has no attribute {name!r}")


__all__ = ["Encoder", "__version__"]
