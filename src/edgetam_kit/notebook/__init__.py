"""The notebook face: ``%load_ext edgetam_kit.notebook`` in Jupyter/IPython.

Loading the extension registers rich HTML views for the objects that live below the engine and
so cannot carry their own (an ``EdgeTam`` model: preset, runtime, device, precision, video; an
``EmbeddingCache``: entries, size on disk). Engine results (``Prediction``, ``TrackResult``,
``AutoMasks``, ``Predictions``) render without it. ``ek.describe(obj)`` shows any of them.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """IPython hook for ``%load_ext edgetam_kit.notebook``."""
    from ..engine.reprs import register_formatters

    register_formatters(ipython)
