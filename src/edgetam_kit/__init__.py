"""edgetam-kit: one EdgeTAM inference engine for napari, FiftyOne, notebooks and the CLI.

    import edgetam_kit as ek
    model = ek.load_model("path/to/edgetam.pt")
    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    r = pred.predict(points=[[500, 375]], labels=[1])

Importing the package has no side effects and imports neither torch nor the engine: each
public name is resolved from its module on first use (``docs/architecture.md`` maps the layers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    "EdgeTamConfig": ".config", "get_config": ".config",
    "EdgeTam": ".modeling",
    "Backend": ".runtime", "Runtime": ".runtime", "backends": ".runtime", "optimize": ".runtime",
    "CheckpointError": ".io.checkpoint", "load_model": ".io.checkpoint", "save_model": ".io.checkpoint",
    "EmbeddingCache": ".io.cache",
    "export_onnx": ".io.onnx_export",
    "MaskSet": ".io.export", "export_masks": ".io.export",
    "FrameSource": ".io.sources", "open_source": ".io.sources",
    "ImagePredictor": ".engine.predictor", "Prediction": ".engine.prediction",
    "AutoMaskGenerator": ".engine.automask", "AutoMaskConfig": ".engine.automask",
    "SlicePrompt": ".engine.tracking", "TrackingSession": ".engine.tracking", "VideoTracker": ".engine.tracking",
    "segment_volume": ".engine.tracking",
    "Cancelled": ".progress",
    "CheckpointSpec": ".plugins.hookspecs", "Exporter": ".plugins.hookspecs", "hookimpl": ".plugins.hookspecs",
    "build_random_model": ".testing.random_weights",
    "overlay": ".engine.display", "montage": ".engine.display", "show": ".engine.display",
    "label_colors": ".engine.display",
    "to_table": ".engine.tables", "regionprops_table": ".engine.tables",
    "collect": ".engine.results", "TrackResult": ".engine.results", "AutoMasks": ".engine.results",
    "Predictions": ".engine.results",
    "describe": ".engine.reprs",
    "finetune": ".training", "FinetuneResult": ".training", "FinetuneSettings": ".training",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgetam_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # static analysers see the real names
    from .config import EdgeTamConfig, get_config
    from .engine.automask import AutoMaskConfig, AutoMaskGenerator
    from .engine.prediction import Prediction
    from .engine.predictor import ImagePredictor
    from .engine.tracking import SlicePrompt, TrackingSession, VideoTracker, segment_volume
    from .io.cache import EmbeddingCache
    from .io.checkpoint import CheckpointError, load_model, save_model
    from .io.export import MaskSet, export_masks
    from .io.sources import FrameSource, open_source
    from .modeling import EdgeTam
    from .plugins.hookspecs import CheckpointSpec, Exporter, hookimpl
    from .progress import Cancelled
    from .runtime import Backend, Runtime, backends, optimize
    from .testing.random_weights import build_random_model
    from .engine.display import label_colors, montage, overlay, show
    from .engine.reprs import describe
    from .engine.results import AutoMasks, Predictions, TrackResult, collect
    from .engine.tables import regionprops_table, to_table
    from .training import FinetuneResult, FinetuneSettings, finetune
