"""edgetam-kit: one EdgeTAM inference engine for napari, FiftyOne, notebooks and the CLI.

    import edgetam_kit as ek
    model = ek.load_model("path/to/edgetam.pt")
    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    r = pred.predict(points=[[500, 375]], labels=[1])
"""

from .checkpoint import CheckpointError, load_model, save_model
from .config import EdgeTamConfig, get_config
from .hookspecs import CheckpointSpec, hookimpl
from .modeling import EdgeTam
from .predictor import ImagePredictor, Prediction
from .progress import Cancelled
from .random_weights import build_random_model
from .automask import AutoMaskGenerator
from .cache import EmbeddingCache
from .export import MaskSet, export_masks
from .hookspecs import Exporter
from .sources import FrameSource, open_source
from .runtime import Backend, Runtime, backends, optimize
from .tracking import SlicePrompt, TrackingSession, VideoTracker, segment_volume

__version__ = "0.1.0"

__all__ = [
    "AutoMaskGenerator",
    "Backend",
    "Runtime",
    "backends",
    "optimize",
    "EmbeddingCache",
    "MaskSet",
    "export_masks",
    "Exporter",
    "Cancelled",
    "CheckpointError",
    "CheckpointSpec",
    "EdgeTam",
    "EdgeTamConfig",
    "ImagePredictor",
    "Prediction",
    "FrameSource",
    "SlicePrompt",
    "TrackingSession",
    "VideoTracker",
    "build_random_model",
    "open_source",
    "segment_volume",
    "get_config",
    "hookimpl",
    "load_model",
    "save_model",
    "__version__",
]
