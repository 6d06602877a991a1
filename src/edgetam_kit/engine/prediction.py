"""The result of one prompted object on one image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
