"""The result of one prompted object on one image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..transforms import upscale_logits

LOGIT_CLAMP = 32.0  # low-res logits are returned clamped, as the reference predictor does


@dataclass(repr=False)
class Prediction:
    """Result for one prompted object.

    masks: (K, H, W) bool at the input image's size; scores: (K,) predicted IoU;
    logits: (K, 4E, 4E) low-res logits (256x256 for EdgeTAM), clamped to +-32 — feed one
    back as ``mask_input``; object_score: logit that an object is present (> 0: present).
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    object_score: float

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.scores))

    def only(self, k: int) -> "Prediction":
        """This prediction with candidate ``k`` alone (K = 1)."""
        return Prediction(self.masks[k:k + 1], self.scores[k:k + 1], self.logits[k:k + 1], self.object_score)

    @classmethod
    def from_logits(cls, logits: torch.Tensor, iou: torch.Tensor, obj: torch.Tensor,
                    hw: tuple[int, int]) -> "Prediction":
        """From low-res logits (K, 4E, 4E), predicted IoU (K,) and the object-score logit, with the
        masks upsampled to ``hw`` (H, W)."""
        masks = upscale_logits(logits[None], hw)[0] > 0.0
        return cls(masks=masks.cpu().numpy(), scores=iou.float().cpu().numpy(),
                   logits=logits.float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP).cpu().numpy(), object_score=float(obj))

    def __repr__(self) -> str:
        k = self.masks.shape[0]
        hw = "x".join(str(int(n)) for n in self.masks.shape[1:])
        scores = ", ".join(f"{float(s):.3f}" for s in self.scores)
        return f"Prediction({k} mask(s) {hw}, scores=[{scores}], best={self.best if k else None}, " \
               f"object_score={float(self.object_score):.3f})"

    def _repr_html_(self) -> str:
        """Jupyter: the candidates as thumbnails (longest side <= 256 px) with their scores."""
        from .reprs import describe_prediction

        return describe_prediction(self)._repr_html_()

    def _repr_png_(self) -> bytes | None:
        from .reprs import describe_prediction

        return describe_prediction(self)._repr_png_()
