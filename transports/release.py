"""The release this is: `tidings --version` and the OpenAPI document name it."""

from __future__ import annotations

import importlib.metadata

__all__ = ["version"]


def version() -> str:
    """The installed release: the distribution's metadata, else `tidings.__version__`."""
    try:
        return importlib.metadata.version("tidings")
    except importlib.metadata.PackageNotFoundError:
        from tidings import __version__

        return __version__
