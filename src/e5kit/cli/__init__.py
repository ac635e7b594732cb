"""Command-line interface: one thin driver module per stage over the library code.

Every module in this package registers its commands on ``e5kit.cli.app.app`` when imported, so
adding a stage means adding a module here, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from e5kit.cli.app import app

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    """Entry point of the ``e5kit`` console script."""
    app()


__all__ = ["app", "main"]
