"""SAM-style training losses: focal + dice on masks, IoU-head regression, object-score BCE.

All mask losses are per object and per candidate (B, K); with several candidates (multimask
output) only the best one per object is trained for the mask, while the IoU head learns the
actual IoU of every candidate (it chooses among them at inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (SAM 2's: 20 focal, 1 dice, 1 IoU, 1 object score)."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """logits, target: (B, K, L, L) -> (B, K) mean sigmoid focal loss per mask."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """logits, target: (B, K, L, L) -> (B, K) soft dice loss."""
    prob = logits.sigmoid().flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (prob * t).sum(-1) + eps) / (prob.sum(-1) + t.sum(-1) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K, L, L) logits vs {0, 1} target -> (B, K) IoU of the thresholded masks (no gradient)."""
    pred = (logits.detach() > 0).flatten(2)
    t = (target > 0.5).flatten(2)
    inter = (pred & t).sum(-1).float()
    union = (pred | t).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@dataclass
class LossParts:
    """The loss and its terms (floats, for logs)."""

    total: torch.Tensor
    focal: float
    dice: float
    iou: float
    object_score: float
    train_iou: float


def sam_loss(logits: torch.Tensor, iou_pred: torch.Tensor, object_score: torch.Tensor, target: torch.Tensor,
             weights: LossWeights = LossWeights()) -> LossParts:
    """logits: (B, K, L, L); iou_pred: (B, K); object_score: (B,) logits; target: (B, 1, L, L)."""
    t = target.expand_as(logits).to(logits.dtype)
    focal, dice = focal_loss(logits.float(), t.float()), dice_loss(logits.float(), t.float())
    per_mask = weights.focal * focal + weights.dice * dice
    best = per_mask.argmin(-1)
    rows = torch.arange(len(best), device=logits.device)
    actual = mask_iou(logits, t)
    iou_loss = F.mse_loss(iou_pred.float(), actual, reduction="none").mean(-1)
    obj_loss = F.binary_cross_entropy_with_logits(object_score.float(), torch.ones_like(object_score.float()),
                                                  reduction="none")
    total = (per_mask[rows, best] + weights.iou * iou_loss + weights.object_score * obj_loss).mean()
    terms = [float(t.detach()) for t in (focal[rows, best].mean(), dice[rows, best].mean(), iou_loss.mean(),
                                         obj_loss.mean(), actual[rows, best].mean())]
    return LossParts(total, *terms)
