"""One prompt parser for every face: points, labels, a box and a mask input, validated and moved
from the caller's pixels to the model's square input frame.

Conventions: points are (x, y) in pixels of the image as given; boxes are (x0, y0, x1, y1);
labels are 1 (positive) and 0 (negative). In the model frame, a box becomes two corner points
with labels 2 and 3, placed before the clicks. Errors are ``ValueError``/``TypeError`` naming
the argument (with ``where``, e.g. ``points[3]``) and the accepted form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..transforms import scale_xy

BOX_LABELS = (2, 3)  # the model's labels of a box's top-left and bottom-right corners


@dataclass(frozen=True)
class Prompt:
    """One object's prompt in the model frame.

    coords: (P, 2) float32 model-frame pixels (x, y), box corners first; labels: (P,) int64;
    mask: None or (4E, 4E) float32 low-res logits; image_index: which image set it is on.
    """

    coords: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None
    image_index: int = 0

    def signature(self) -> tuple[int, bool]:
        """Prompts with equal signatures decode together in one batch (no padding)."""
        return (len(self.labels), self.mask is not None)

    @property
    def has_points(self) -> bool:
        return len(self.labels) > 0


def float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as float32; ``ValueError`` naming ``name`` if not numbers or not finite."""
    if isinstance(value, torch.Tensor):  # requires_grad, bf16, or on a GPU: read the values
        value = value.detach().cpu().float()
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers (a list or array), got {type(value).__name__}: {exc}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_inside(xy: np.ndarray, hw: tuple[int, int], name: str) -> None:
    """Points must lie on the image: 0 <= x <= W and 0 <= y <= H (pixels)."""
    h, w = hw
    bad = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
    if bad.any():
        raise ValueError(
            f"{name} has coordinates outside the {w}x{h} image (x in [0, {w}], y in [0, {h}]): "
            f"{xy[bad].tolist()}; coordinates are (x, y) in pixels"
        )


@dataclass(frozen=True)
class PromptParser:
    """Parses prompts for a model whose input frame is ``image_size`` pixels square and whose
    mask inputs are ``low_res_size`` pixels square."""

    image_size: int
    low_res_size: int

    def parse(self, points: Any, labels: Any, box: Any, mask_input: Any, hw: tuple[int, int], where: str = "",
              image_index: int = 0, box_name: str | None = None) -> Prompt:
        """A validated ``Prompt`` for an image of ``hw`` (H, W) pixels. ``where`` suffixes the
        argument names in errors (``"[3]"`` for the fourth object of a batch); ``box_name``
        overrides the box's name (``"boxes[3]"``)."""
        box_name = box_name or f"box{where}"
        coords, labs = [], []
        if box is not None:
            b = float_array(box, box_name)
            if b.shape != (4,):
                raise ValueError(f"{box_name} must be 4 numbers (x0, y0, x1, y1), got shape {b.shape}")
            if b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"{box_name} must have x1 >= x0 and y1 >= y0 (x0, y0, x1, y1), got {b.tolist()}")
            check_inside(b.reshape(2, 2), hw, box_name)
            coords.append(scale_xy(b.reshape(2, 2), hw, self.image_size))
            labs.append(np.array(BOX_LABELS, np.int64))
        if points is not None:
            p = float_array(points, f"points{where}")
            if p.ndim == 1 and p.shape == (2,):
                p = p[None]
            if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
                raise ValueError(f"points{where} must be shaped (P, 2) with P >= 1, as (x, y) pixels, got shape "
                                 f"{p.shape}")
            check_inside(p, hw, f"points{where}")
            coords.append(scale_xy(p, hw, self.image_size))
            labs.append(self._labels(labels, len(p), where))
        elif labels is not None:
            raise ValueError(f"labels{where} given without points{where}")
        mask = None if mask_input is None else self._mask(mask_input, where)
        if not coords and mask is None:
            raise ValueError(f"prompt{where} is empty: give points, a box or a mask_input")
        cat_coords = np.concatenate(coords, 0).astype(np.float32) if coords else np.zeros((0, 2), np.float32)
        cat_labels = np.concatenate(labs, 0) if labs else np.zeros((0,), np.int64)
        return Prompt(cat_coords, cat_labels, mask, int(image_index))

    @staticmethod
    def _labels(labels: Any, n: int, where: str) -> np.ndarray:
        if labels is None:
            return np.ones(n, dtype=np.int64)
        lab = np.asarray(labels)
        if lab.ndim == 0:
            lab = lab[None]
        if lab.ndim != 1 or len(lab) != n:
            raise ValueError(f"labels{where} must have one entry per point ({n}), got shape {lab.shape}")
        if lab.dtype.kind not in "biu" or not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels{where} must be 1 (positive) or 0 (negative), got {lab.tolist()}")
        return lab.astype(np.int64)

    def _mask(self, mask_input: Any, where: str) -> np.ndarray:
        m = float_array(mask_input, f"mask_input{where}")
        side = self.low_res_size
        if m.shape == (1, side, side):
            m = m[0]
        if m.shape != (side, side):
            raise ValueError(
                f"mask_input{where} must be low-res logits shaped ({side}, {side}) or (1, {side}, {side}) "
                f"(a Prediction.logits[k]), got shape {m.shape}"
            )
        return m


def batch_size_of(points: Any, labels: Any, boxes: Any, mask_inputs: Any,
                  image_index: Any) -> tuple[int, list[int]]:
    """(N, image_index as N ints) for ``predict_batch``'s per-object lists (one entry per object;
    any may be None); errors name the argument whose length disagrees."""
    lists = {"points": points, "labels": labels, "boxes": boxes, "mask_inputs": mask_inputs}
    n = None
    for name, value in lists.items():
        if value is None:
            continue
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
            raise TypeError(f"{name} must be a list with one entry per object, got {type(value).__name__}")
        if n is None:
            n = len(value)
        elif len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries but another argument has {n}; give one per object")
    if isinstance(image_index, (int, np.integer)) and not isinstance(image_index, bool):
        image_index = [int(image_index)] * (n or 0)
    elif image_index is not None and (isinstance(image_index, (str, bytes, Mapping))
                                      or not hasattr(image_index, "__len__")):
        raise TypeError(f"image_index must be an int or a list of ints (one per object), got {image_index!r}")
    if n is None:
        if image_index is None:
            raise ValueError("predict_batch needs points, boxes or mask_inputs (one entry per object)")
        n = len(image_index)
    if image_index is None:
        image_index = [0] * n
    if len(image_index) != n:
        raise ValueError(f"image_index has {len(image_index)} entries for {n} objects; give one per object")
    return n, list(image_index)
