"""Image features for training: cached once when the encoder is frozen, computed per step when not."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..modeling.edgetam import EdgeTam, ImageFeatures
from ..transforms import to_model_input, to_unit_rgb
from .data import TrainImage


def pixels_of(record: TrainImage, size: int, device: torch.device) -> torch.Tensor:
    """(1, 3, size, size) normalised model input of a record (as ``ImagePredictor.set_image`` does)."""
    rgb = to_unit_rgb(record.image, name=f"image {record.name}", keep_uint8=True)
    return to_model_input(rgb, size, device, torch.float32)


def _cat(feats: list[ImageFeatures]) -> ImageFeatures:
    return ImageFeatures(torch.cat([f.embed for f in feats]),
                         (torch.cat([f.high_res[0] for f in feats]), torch.cat([f.high_res[1] for f in feats])))


class FeatureSource:
    """Features of records. ``frozen``: the encoder (with conv_s0/conv_s1 and the no-memory
    embedding) is not trained, so each record is encoded once and kept (about 16 MB per image at
    the real shape, 1 MB for the tiny preset)."""

    def __init__(self, model: EdgeTam, frozen: bool, device: torch.device) -> None:
        self.model, self.frozen, self.device = model, frozen, device
        self.size = model.config.image_size
        self._cache: dict[int, ImageFeatures] = {}

    def warm(self, records: list[TrainImage], progress: Callable[[int, int], None] | None = None) -> None:
        """Encode every record now (frozen encoder only)."""
        if not self.frozen:
            return
        for i, rec in enumerate(records):
            self._get(rec, grad=False)
            if progress is not None:
                progress(i + 1, len(records))

    def _get(self, record: TrainImage, grad: bool) -> ImageFeatures:
        key = id(record)
        if self.frozen and key in self._cache:
            return self._cache[key]
        with torch.set_grad_enabled(grad and not self.frozen):
            feats = self.model.encode_image(pixels_of(record, self.size, self.device))
        if self.frozen:
            self._cache[key] = ImageFeatures(feats.embed.detach(), tuple(h.detach() for h in feats.high_res))
        return feats

    def features(self, records: list[TrainImage], grad: bool) -> ImageFeatures:
        """Features of ``records`` stacked in order: (B, C, E, E) and the two finer levels."""
        if self.frozen or len(records) == 1:
            return _cat([self._get(r, grad) for r in records])
        px = torch.cat([pixels_of(r, self.size, self.device) for r in records])
        with torch.set_grad_enabled(grad):
            return self.model.encode_image(px)
