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
    """Features of records. ``frozen``: the encoder is not trained, so each record is encoded once
    and kept: the projected features (about 16 MB per image at the real shape, 1 MB for the tiny
    preset), or with ``raw`` the neck's output before conv_s0 / conv_s1 and the no-memory
    embedding, which are then applied (and trained) at every step (about 84 MB / 5 MB)."""

    def __init__(self, model: EdgeTam, frozen: bool, device: torch.device, raw: bool = False) -> None:
        self.model, self.frozen, self.device, self.raw = model, frozen, device, raw and frozen
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
        if self.frozen and key not in self._cache:
            with torch.no_grad():
                px = pixels_of(record, self.size, self.device)
                if self.raw:  # the trunk + neck output, before the projections being trained
                    levels = self.model.vision_encoder(px)
                    self._cache[key] = ImageFeatures(levels[-1], (levels[0], levels[1]))
                else:
                    self._cache[key] = self.model.encode_image(px)
        if self.frozen:
            return self._project(self._cache[key], grad) if self.raw else self._cache[key]
        with torch.set_grad_enabled(grad):
            return self.model.encode_image(pixels_of(record, self.size, self.device))

    def _project(self, raw: ImageFeatures, grad: bool) -> ImageFeatures:
        """What ``encode_image`` adds after the neck: the no-memory embedding and conv_s0 / conv_s1."""
        m = self.model
        with torch.set_grad_enabled(grad):
            return ImageFeatures(raw.embed + m.no_memory_embedding.reshape(1, -1, 1, 1),
                                 (m.mask_decoder.conv_s0(raw.high_res[0]), m.mask_decoder.conv_s1(raw.high_res[1])))

    def features(self, records: list[TrainImage], grad: bool) -> ImageFeatures:
        """Features of ``records`` stacked in order: (B, C, E, E) and the two finer levels."""
        if self.frozen or len(records) == 1:
            return _cat([self._get(r, grad) for r in records])
        px = torch.cat([pixels_of(r, self.size, self.device) for r in records])
        with torch.set_grad_enabled(grad):
            return self.model.encode_image(px)
