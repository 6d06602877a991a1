"""Mask records and the operations on them that automatic masks and tiling share: point grids,
crop boxes, stability scores, boxes of masks, COCO RLE encoding, small-region removal and NMS.

Boxes are (x0, y0, x1, y1) in pixels; masks are bool (N, H, W); RLEs are pycocotools' compact form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import torch

EDGE_TOLERANCE = 20.0  # pixels: a box this close to a crop edge counts as cut by it


# ----------------------------------------------------------------------------- grids and crops
def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) in [0, 1], cell centres of an n x n grid, rows of x first."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (x0, y0, x1, y1) and their layer: the image, then up to (2^(i+1))^2 crops per layer.
    On images smaller than a layer's grid, crops that would be empty (past the image's edge) or
    repeat an earlier box are left out."""
    h, w = hw
    boxes, layers = [[0, 0, w, h]], [0]
    short = min(h, w)
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + w) / n))
        ch = int(math.ceil((overlap * (n - 1) + h) / n))
        for x0, y0 in product([int((cw - overlap) * k) for k in range(n)], [int((ch - overlap) * k) for k in range(n)]):
            box = [x0, y0, min(x0 + cw, w), min(y0 + ch, h)]
            if box[2] > box[0] and box[3] > box[1] and box not in boxes:
                boxes.append(box)
                layers.append(i + 1)
    return boxes, layers


# ----------------------------------------------------------------------------- mask helpers
def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks ``logits > threshold + offset`` and ``> threshold - offset``."""
    inter = (logits > threshold + offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    union = (logits > threshold - offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return inter / union


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 inclusive pixel bounds x0, y0, x1, y1; 0s when empty."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64)
    rows, cols = masks.any(-1), masks.any(-2)
    y0 = rows.int().argmax(-1)
    y1 = h - 1 - rows.flip(-1).int().argmax(-1)
    x0 = cols.int().argmax(-1)
    x1 = w - 1 - cols.flip(-1).int().argmax(-1)
    out = torch.stack([x0, y0, x1, y1], -1).long()
    return out * rows.any(-1, keepdim=True)


def near_crop_edge(boxes: torch.Tensor, crop: Sequence[float], image: Sequence[float],
                   atol: float = EDGE_TOLERANCE) -> torch.Tensor:
    """(N,) True where a box (image frame) is within ``atol`` of a side of ``crop`` that is
    not also a side of ``image``."""
    b = boxes.float()
    c = torch.as_tensor(crop, dtype=torch.float32, device=b.device)[None]
    i = torch.as_tensor(image, dtype=torch.float32, device=b.device)[None]
    near_crop = torch.isclose(b, c, atol=atol, rtol=0)
    near_image = torch.isclose(b, i, atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def encode_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) bool -> pycocotools compressed RLEs (counts as bytes)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def encode_rles_on_device(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(N, H, W) bool on any device -> the same RLEs as ``encode_rles``; only the positions
    where a mask changes value (column-major) are copied to the host, not the masks."""
    from pycocotools import mask as mask_utils

    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.transpose(1, 2).reshape(n, h * w)
    change = (flat[:, 1:] != flat[:, :-1]).nonzero().cpu().numpy()  # (K, 2): mask, position
    first = flat[:, 0].cpu().numpy()
    splits = np.searchsorted(change[:, 0], np.arange(1, n))
    rles = []
    for i, pos in enumerate(np.split(change[:, 1], splits)):
        bounds = np.concatenate([[0], pos + 1, [h * w]])
        counts = np.diff(bounds).tolist()
        if first[i]:  # RLE counts start with a run of zeros
            counts = [0] + counts
        rles.append({"size": [h, w], "counts": counts})
    return mask_utils.frPyObjects(rles, h, w)


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(rle).astype(bool)


def rle_counts_in_image(mask: np.ndarray, offset: tuple[int, int], image_hw: tuple[int, int]) -> list[int]:
    """Uncompressed (column-major) RLE counts of ``mask`` placed at ``offset`` (x0, y0) in an
    image of ``image_hw``, without building the full-size mask."""
    h, w = mask.shape
    hh, ww = image_hw
    x0, y0 = offset
    padded = np.zeros((w, h + 2), np.int8)  # columns, each with a False above and below
    padded[:, 1:-1] = mask.T
    d = np.diff(padded, axis=1)
    cols_s, rows_s = np.nonzero(d == 1)
    cols_e, rows_e = np.nonzero(d == -1)
    starts = (x0 + cols_s) * hh + y0 + rows_s
    ends = (x0 + cols_e) * hh + y0 + rows_e
    if len(starts) > 1:  # runs continuing from one full-height column into the next
        join = starts[1:] == ends[:-1]
        if join.any():
            starts = np.concatenate([starts[:1], starts[1:][~join]])
            ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    total = hh * ww
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0], bounds[-1] = 0, total
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    return np.diff(bounds).tolist()


def to_coco_rle(counts: list[int], image_hw: tuple[int, int]) -> dict[str, Any]:
    """Uncompressed counts -> COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    h, w = image_hw
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def remove_small_regions(mask: np.ndarray, area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area``
    pixels, 8-connected. Returns (mask, changed); keeps the largest island if all are small."""
    from skimage.measure import label

    holes = mode == "holes"
    working = mask ^ holes
    lab = label(working, connectivity=2)
    sizes = np.bincount(lab.ravel())[1:]
    small = np.flatnonzero(sizes < area) + 1
    if len(small) == 0:
        return mask, False
    if holes:
        return mask | np.isin(lab, small), True
    keep = np.flatnonzero(sizes >= area) + 1
    if len(keep) == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(lab, keep), True


# ----------------------------------------------------------------------------- mask records
@dataclass
class MaskRecords:
    """Masks found so far. ``rles[i]`` covers ``regions[i]`` (x0, y0, x1, y1; exclusive end)
    of the image; ``boxes`` are inclusive pixel bounds in the image frame."""

    rles: list[dict[str, Any]] = field(default_factory=list)
    regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    iou: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    crop_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    cut: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # touches an inner tile side
    tile: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, keep: Any) -> "MaskRecords":
        idx = torch.as_tensor(keep)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).flatten()
        idx = idx.long()
        ni = idx.numpy()
        return MaskRecords([self.rles[i] for i in ni], self.regions[ni], self.boxes[idx], self.iou[idx],
                           self.stability[idx], self.points[ni], self.crop_boxes[ni], self.cut[ni], self.tile[ni])

    @staticmethod
    def cat(parts: Sequence["MaskRecords"]) -> "MaskRecords":
        parts = [p for p in parts if len(p)]
        if not parts:
            return MaskRecords()
        return MaskRecords(
            [r for p in parts for r in p.rles], np.concatenate([p.regions for p in parts]),
            torch.cat([p.boxes for p in parts]), torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]), np.concatenate([p.points for p in parts]),
            np.concatenate([p.crop_boxes for p in parts]), np.concatenate([p.cut for p in parts]),
            np.concatenate([p.tile for p in parts]),
        )

    def mask(self, i: int) -> np.ndarray:
        """Mask i over its region."""
        return decode_rle(self.rles[i])

    def nms(self, scores: torch.Tensor, thresh: float) -> "MaskRecords":
        from torchvision.ops import batched_nms

        if len(self) == 0:
            return self
        keep = batched_nms(self.boxes.float(), scores.float(), torch.zeros(len(self), dtype=torch.long), thresh)
        return self.select(keep)


def annotations(records: MaskRecords, hw: tuple[int, int], output_mode: str) -> list[dict[str, Any]]:
    """Records -> the generator's result dicts (segmentation as ``output_mode``), largest area first."""
    from pycocotools import mask as mask_utils

    anns = []
    boxes = records.boxes.float().numpy()
    for i in range(len(records)):
        x0, y0, x1, y1 = (int(v) for v in records.regions[i])
        area = int(mask_utils.area(records.rles[i]))
        if output_mode == "binary_mask":
            seg: Any = np.zeros(hw, bool)
            seg[y0:y1, x0:x1] = records.mask(i)
        else:
            counts = rle_counts_in_image(records.mask(i), (x0, y0), hw)
            seg = {"size": [hw[0], hw[1]], "counts": counts}
            if output_mode == "coco_rle":
                seg = to_coco_rle(counts, hw)
        b = boxes[i]
        c = records.crop_boxes[i]
        anns.append({
            "segmentation": seg,
            "area": area,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "predicted_iou": float(records.iou[i]),
            "point_coords": [[float(records.points[i][0]), float(records.points[i][1])]],
            "stability_score": float(records.stability[i]),
            "crop_box": [float(c[0]), float(c[1]), float(c[2] - c[0]), float(c[3] - c[1])],
        })
    order = sorted(range(len(anns)), key=lambda k: -anns[k]["area"])
    return [anns[k] for k in order]


def records_on_host(masks: torch.Tensor, boxes: torch.Tensor, iou: torch.Tensor, stability: torch.Tensor,
                     points: torch.Tensor, region: Sequence[int], crop: Sequence[int]) -> MaskRecords:
    """The final masks of one batch (N, H, W) bool and their boxes / scores / points (image
    pixels) -> host MaskRecords; masks leave the device as run lengths (encode_rles_on_device)."""
    n = len(masks)
    rles = encode_rles(masks.numpy()) if masks.device.type == "cpu" else encode_rles_on_device(masks)
    return MaskRecords(
        rles=rles,
        regions=np.tile(np.array([list(region)], np.int64), (n, 1)),
        boxes=boxes.cpu(), iou=iou.cpu(), stability=stability.cpu(),
        points=points.cpu().numpy(),
        crop_boxes=np.tile(np.array([list(crop)], np.int64), (n, 1)),
        cut=np.zeros(n, bool), tile=np.zeros(n, np.int64),
    )
