"""Conversions between FiftyOne labels and the engine's pixel prompts and bool masks.

FiftyOne coordinates are relative: boxes ``[x, y, w, h]`` and keypoints ``(x, y)`` in [0, 1]
of the image width/height; a Detection's ``mask`` covers its box only. The engine takes
pixels of the image as given: points ``(x, y)``, boxes ``(x0, y0, x1, y1)``, and returns
full-image ``(H, W)`` bool masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROMPT_TYPES = ("Detections", "Detection", "Keypoints", "Keypoint")


@dataclass
class ObjectPrompt:
    """One object to segment, in pixels of an image of ``(H, W)``.

    box: (4,) x0, y0, x1, y1 or None; points: (P, 2) x, y or None (labels all 1);
    label / index: carried over from the prompt label to the output detection.
    """

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    label: str | None = None
    index: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def single_click(self) -> bool:
        """One point and no box: ambiguous, so the best of 3 candidate masks is taken."""
        return self.box is None and self.points is not None and len(self.points) == 1


def prompts_from_label(label: Any, hw: tuple[int, int], field_name: str = "prompt_field") -> list[ObjectPrompt]:
    """FiftyOne Detections/Detection (boxes) or Keypoints/Keypoint (points) -> ObjectPrompts.

    ``None`` gives no prompts. Boxes are clipped to the image; keypoints that are NaN (FiftyOne's
    "not visible") are dropped, as are keypoint objects left with no point.
    """
    if label is None:
        return []
    kind = type(label).__name__
    if kind not in PROMPT_TYPES:
        raise ValueError(f"{field_name} must hold Detections or Keypoints labels, got {kind}")
    h, w = hw
    items = getattr(label, "detections", None) if kind == "Detections" else (
        getattr(label, "keypoints", None) if kind == "Keypoints" else [label])
    out = []
    for item in items or []:
        carry = {"label": item.label, "index": item.index}
        if kind.startswith("Detection"):
            if item.bounding_box is None:
                continue
            x, y, bw, bh = (float(v) for v in item.bounding_box)
            box = np.array([x * w, y * h, (x + bw) * w, (y + bh) * h], dtype=np.float64)
            box[0::2] = np.clip(box[0::2], 0, w)
            box[1::2] = np.clip(box[1::2], 0, h)
            out.append(ObjectPrompt(box=box, **carry))
        else:
            pts = np.asarray(item.points or [], dtype=np.float64).reshape(-1, 2)
            pts = pts[np.isfinite(pts).all(1)]
            if len(pts) == 0:
                continue
            pts = np.clip(pts * [w, h], 0, [w, h])
            out.append(ObjectPrompt(points=pts, **carry))
    return out


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(H, W) bool -> inclusive pixel bounds (x0, y0, x1, y1), or None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def detection_from_mask(mask: np.ndarray, label: str | None = None, confidence: float | None = None,
                        index: int | None = None, **attributes: Any):
    """Full-image (H, W) bool mask -> fo.Detection whose box is the mask's pixel bounds and whose
    ``mask`` is the mask cropped to that box; None for an empty mask."""
    import fiftyone as fo

    bounds = mask_box(mask)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    h, w = mask.shape
    box = [x0 / w, y0 / h, (x1 + 1 - x0) / w, (y1 + 1 - y0) / h]
    det = fo.Detection(label=label, bounding_box=box, mask=np.ascontiguousarray(mask[y0:y1 + 1, x0:x1 + 1]),
                       **attributes)
    if confidence is not None and math.isfinite(confidence):
        det.confidence = float(confidence)
    if index is not None:
        det.index = int(index)
    return det


def detection_full_mask(det: Any, hw: tuple[int, int]) -> np.ndarray:
    """Inverse of ``detection_from_mask``: the detection's mask placed in an (H, W) bool image."""
    h, w = hw
    x, y, bw, bh = det.bounding_box
    x0, y0 = int(round(x * w)), int(round(y * h))
    m = np.asarray(det.get_mask()).astype(bool)
    out = np.zeros((h, w), bool)
    out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return out


def segmentation_from_masks(masks: list[np.ndarray], hw: tuple[int, int]):
    """fo.Segmentation with uint16 label image: object i (in order) = i + 1, later objects on top."""
    import fiftyone as fo

    seg = np.zeros(hw, np.uint16)
    for i, m in enumerate(masks):
        seg[m] = i + 1
    return fo.Segmentation(mask=seg)


def write_masks(dets: list[Any], folder: str | Path, stem: str) -> None:
    """Write each detection's mask to ``folder/stem-<i>.png`` and keep only ``mask_path``.

    Names are deterministic, so a rerun overwrites its own files instead of adding new ones.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, det in enumerate(dets):
        if det.mask is not None:
            det.export_mask(str(folder / f"{stem}-{i}.png"), update=True, overwrite_path=True)
