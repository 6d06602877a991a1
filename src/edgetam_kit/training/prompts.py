"""Prompts sampled from ground truth, the way SAM-style training does, and the batches built of them.

Everything here is a pure function of (seed, step) and the data, so a resumed run draws exactly
the batches an unbroken run would. Coordinates: (x, y) pixels of the original image, scaled to
the model's square input frame (``size`` x ``size``) before they reach the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..transforms import scale_xy
from .data import TrainImage

PROMPT_KINDS = ("point", "points", "box")


@dataclass
class Batch:
    """One step's objects. image_index: (B,) index into the step's ``images``; coords: (B, P, 2)
    model-frame pixels (x, y); labels: (B, P) (1 positive, 0 negative, 2/3 box corners);
    target: (B, 1, L, L) float {0, 1} ground truth at the decoder's low resolution L = 4E."""

    images: list[int]
    image_index: torch.Tensor
    object_index: torch.Tensor
    kind: str
    coords: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator of one step (independent of every other step: resume draws the same)."""
    return np.random.default_rng([seed, step, stream])


def low_res_targets(masks: np.ndarray, low_res: int) -> torch.Tensor:
    """(N, H, W) bool -> (N, 1, L, L) float {0, 1}: area-averaged, then > 0.5."""
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    return (F.interpolate(m, size=(low_res, low_res), mode="area") > 0.5).float()


def _pick(rng: np.random.Generator, where: np.ndarray, k: int) -> np.ndarray:
    """k (x, y) pixel positions drawn uniformly from the True pixels of ``where`` (H, W)."""
    ys, xs = np.nonzero(where)
    idx = rng.integers(0, len(xs), size=k)
    return np.stack([xs[idx], ys[idx]], -1).astype(np.float32)


def _negatives(rng: np.random.Generator, mask: np.ndarray, k: int) -> np.ndarray:
    """k points outside ``mask``, near it (within the box grown by its own size), else anywhere."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy, dx = y1 - y0, x1 - x0
    near = np.zeros_like(mask)
    near[max(0, y0 - dy):min(h, y1 + dy), max(0, x0 - dx):min(w, x1 + dx)] = True
    outside = near & ~mask
    if not outside.any():
        outside = ~mask
    if not outside.any():  # the object is the whole image: a "negative" on it is still a valid prompt
        outside = mask
    return _pick(rng, outside, k)


def jittered_box(rng: np.random.Generator, mask: np.ndarray, jitter: float = 0.1, max_px: float = 20.0) -> np.ndarray:
    """(2, 2) corners (x0, y0), (x1, y1) of the mask's box, each side moved by N(0, jitter * side),
    at most ``max_px``, clipped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
    box = box + np.clip(rng.normal(0.0, 1.0, 4) * jitter * side, -max_px, max_px)
    box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
    x0, x1 = sorted(box[[0, 2]])
    y0, y1 = sorted(box[[1, 3]])
    return np.array([[x0, y0], [x1, y1]], np.float32)


def sample_prompt(rng: np.random.Generator, mask: np.ndarray, kind: str, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) image-pixel (x, y) coordinates and (P,) labels for one object."""
    if kind == "box":
        return jittered_box(rng, mask), np.array([2, 3])
    if kind == "point":
        return _pick(rng, mask, 1), np.array([1])
    pos, neg = _pick(rng, mask, n_pos), _negatives(rng, mask, n_neg)
    return np.concatenate([pos, neg]), np.array([1] * n_pos + [0] * n_neg)


def make_batch(records: list[TrainImage], step: int, seed: int, batch_size: int, images_per_step: int,
               kinds: tuple[str, ...], size: int, low_res: int) -> Batch:
    """The objects of step ``step``: an epoch-wise permutation of the images gives this step's
    ``images_per_step`` images, then up to ceil(batch_size / images) objects of each are drawn,
    and one prompt kind for the whole step (so every object has the same number of points)."""
    n = len(records)
    per_epoch = -(-n // images_per_step)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch, 1]).permutation(n)
    chosen = order[k * images_per_step:(k + 1) * images_per_step].tolist()
    rng = step_rng(seed, step)
    kind = kinds[int(rng.integers(len(kinds)))]
    n_pos, n_neg = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    per_image = -(-batch_size // len(chosen))
    coords, labels, targets, img_idx, obj_idx = [], [], [], [], []
    for slot, i in enumerate(chosen):
        rec = records[i]
        take = rng.permutation(len(rec.masks))[:per_image]
        for j in sorted(take.tolist()):
            xy, lab = sample_prompt(rng, rec.masks[j], kind, n_pos, n_neg)
            coords.append(scale_xy(xy, rec.hw, size))
            labels.append(lab)
            img_idx.append(slot)
            obj_idx.append(j)
        targets.append(low_res_targets(rec.masks[sorted(take.tolist())], low_res))
    return Batch(
        images=chosen,
        image_index=torch.tensor(img_idx, dtype=torch.long),
        object_index=torch.tensor(obj_idx, dtype=torch.long),
        kind=kind,
        coords=torch.from_numpy(np.stack(coords)).float(),
        labels=torch.from_numpy(np.stack(labels)).long(),
        target=torch.cat(targets),
    )


def correction_clicks(rng: np.random.Generator, logits: torch.Tensor, target: torch.Tensor,
                      size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One correction click per object from the previous prediction's larger error region:
    a positive click in a missed part, a negative one in a false part. logits/target: (B, 1, L, L).
    Returns coords (B, 1, 2) model-frame pixels and labels (B, 1)."""
    pred = (logits.detach() > 0).cpu().numpy()[:, 0]
    gt = target.cpu().numpy()[:, 0] > 0.5
    low = gt.shape[-1]
    coords, labels = [], []
    for p, g in zip(pred, gt):
        missed, false = g & ~p, p & ~g
        if not missed.any() and not false.any():  # already right: confirm with a positive click
            missed = g if g.any() else np.ones_like(g)
        positive = missed.sum() >= false.sum()
        xy = _pick(rng, missed if positive else false, 1)[0]
        coords.append((xy + 0.5) * size / low)
        labels.append(1 if positive else 0)
    return torch.tensor(np.stack(coords), dtype=torch.float32)[:, None], torch.tensor(labels)[:, None]


def center_point(mask: np.ndarray) -> np.ndarray:
    """(1, 2) the (x, y) pixel farthest inside the mask (the validation prompt: deterministic)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return np.array([[x, y]], np.float32)
