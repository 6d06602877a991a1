"""Validation: mask IoU from one point per object, and how well the IoU head predicts it.

The prompt is deterministic (the pixel farthest inside each object), the mask is the candidate
with the highest predicted IoU (as ``ImagePredictor.predict`` picks it), and IoU is measured at
the image's own resolution after bilinear upsampling of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..modeling.edgetam import EdgeTam
from ..transforms import scale_xy, upscale_logits
from .data import TrainImage
from .features import FeatureSource
from .prompts import center_point


@dataclass(frozen=True)
class EvalMetrics:
    """iou: mean mask IoU over objects; calibration_error: mean |predicted IoU - actual IoU| of the
    chosen masks; n_objects: how many objects were measured."""

    iou: float
    calibration_error: float
    n_objects: int


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


@torch.no_grad()
def evaluate(model: EdgeTam, source: FeatureSource, records: list[TrainImage], max_objects: int = 400) -> EvalMetrics:
    """Metrics over (at most ``max_objects``, in order) objects of ``records``."""
    training = model.mask_decoder.training
    model.mask_decoder.eval()
    size = model.config.image_size
    ious, errors = [], []
    try:
        for rec in records:
            if len(ious) >= max_objects:
                break
            masks = rec.masks[: max_objects - len(ious)]
            feats = source.features([rec], grad=False)
            coords = np.stack([scale_xy(center_point(m), rec.hw, size) for m in masks])
            labels = torch.ones(len(masks), 1, dtype=torch.long, device=source.device)
            out = model.decode(feats, torch.from_numpy(coords).to(source.device), labels, multimask=True)
            pick = out.iou.argmax(-1)
            rows = torch.arange(len(masks), device=pick.device)
            logits = upscale_logits(out.low_res_logits[rows, pick][:, None], rec.hw)[:, 0]
            pred = (logits > 0).cpu().numpy()
            predicted = out.iou[rows, pick].float().cpu().numpy()
            for p, g, q in zip(pred, masks, predicted):
                actual = _iou(p, g)
                ious.append(actual)
                errors.append(abs(float(q) - actual))
    finally:
        model.mask_decoder.train(training)
    if not ious:
        return EvalMetrics(float("nan"), float("nan"), 0)
    return EvalMetrics(float(np.mean(ious)), float(np.mean(errors)), len(ious))
