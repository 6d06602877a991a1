"""nn.Modules only: tensors in, tensors out. Nothing here reads files or knows numpy."""

from .edgetam import EdgeTam, ImageFeatures, DecoderOutput

__all__ = ["EdgeTam", "ImageFeatures", "DecoderOutput"]
