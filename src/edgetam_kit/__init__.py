"""edgetam-kit: one EdgeTAM inference engine for napari, FiftyOne, notebooks and the CLI.

    import edgetam_kit as ek
    model = ek.load_model("path/to/edgetam.pt")
    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    r = pred.predict(points=[[500, 375]], labels=[1])
"""

import sys as _sys


def _avoid_triton_llvm_clash() -> None:
    """napari's canvas (Mesa OpenGL) loads Mesa's libLLVM; importing triton afterwards loads a
    second LLVM and the process segfaults. timm -> torchvision -> torch._dynamo imports triton
    when present. If an LLVM is already mapped into this process and triton is not yet
    imported, hide triton (torch then runs without it: CPU inference and the CPU
    torch.compile backend do not need it)."""
    if not _sys.platform.startswith("linux") or "triton" in _sys.modules:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if "libLLVM" in maps.read():
                _sys.modules["triton"] = None  # type: ignore[assignment]
    except OSError:
        pass


_avoid_triton_llvm_clash()

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
