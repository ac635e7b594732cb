"""Command-line interface: one thin driver module per stage over the library code."""

from __future__ import annotations

from e5kit.cli import demo, encode  # noqa: F401  (each module registers its commands)
from e5kit.cli.app import app


def main() -> None:
    """Entry point of the ``e5kit`` console script."""
    app()


__all__ = ["app", "main"]
