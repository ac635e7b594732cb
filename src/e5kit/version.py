"""The installed e5kit's version, for result files and ``e5kit --version``.

It lives here, below every stage, so that a stage can record it without importing the top-level
``e5kit`` package (whose lazy API imports the stages: importing it from one made an import cycle).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    """The installed distribution's version; ``0.0.0+unknown`` when running from a source tree without an install."""
    try:
        return version("e5kit")
    except PackageNotFoundError:
        return "0.0.0+unknown"
