"""The ``edgetam`` command line (``edgetam_kit.cli:main``)."""

from .main import main

__all__ = ["main"]
