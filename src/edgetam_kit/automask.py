"""AutoMaskGenerator: "segment everything" with a grid of point prompts.

The algorithm and every default are those of the original SAM 2 / EdgeTAM
``SAM2AutomaticMaskGenerator`` (the test-suite compares the two at identical weights):

1. Crops: the whole image, plus for ``crop_n_layers`` = n > 0 layers of 2^i x 2^i
   overlapping crops (``crop_overlap_ratio``); each crop is encoded on its own.
2. Points: a ``points_per_side`` x ``points_per_side`` grid over each crop (layer i uses
   ``points_per_side / crop_n_points_downscale_factor**i``), decoded ``points_per_batch``
   single-point prompts per decoder call, 3 masks per point (``multimask_output``).
3. Filters: predicted IoU > ``pred_iou_thresh``; stability score (IoU of the mask
   thresholded at ``mask_threshold`` +- ``stability_score_offset``, on logits upsampled to
   the crop's size) >= ``stability_score_thresh``; masks whose box is within 20 px of a
   crop edge that is not an image edge are dropped.
4. Duplicates: box NMS inside each crop (``box_nms_thresh``, by predicted IoU), then across
   crops (``crop_nms_thresh``, smaller crops preferred).
5. ``min_mask_region_area`` > 0: holes and islands smaller than that (pixels, 8-connected)
   are removed, changed masks lose ties in a last NMS (as segment-anything does).

Images above the tiling threshold (see ``tiling.py``) are processed tile by tile and the
pieces of objects cut by tile borders are merged (``tiling.merge_tile_masks``).

Each result is a dict: ``segmentation`` (bool HxW, or a COCO RLE dict with ``output_mode=
"coco_rle"``), ``area`` (pixels), ``bbox`` (x, y, w, h as the original gives it: w = x1 - x0
of the inclusive pixel bounds), ``predicted_iou``, ``stability_score``, ``point_coords``
([[x, y]]), ``crop_box`` (x, y, w, h). Results are sorted by area, largest first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import torch

from .modeling import EdgeTam, ImageFeatures
from .predictor import ImagePredictor
from .progress import Cancelled, is_cancelled, report
from .transforms import DEFAULT_PERCENTILES, _as_array, to_unit_rgb, upscale_logits
from .runtime import inference

OUTPUT_MODES = ("binary_mask", "coco_rle", "uncompressed_rle")
EDGE_TOLERANCE = 20.0  # pixels: a box this close to a crop edge counts as cut by it
_UPSCALE_CHUNK = 32  # masks upsampled at once (bounds memory: chunk x crop pixels x 4 bytes)
# Prompts per decoder call on CPU, inside a points_per_batch batch: each prompt carries ~40 MB
# of 4096x256 / 16384x128 maps through the decoder; a few at a time stay in cache (measured
# ~20% less time per prompt than 64 at once on the 2-core AVX2 machine; benchmarks/automask.py).
_CPU_DECODE_CHUNK = 4

Decoder = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, np.ndarray]]


# ----------------------------------------------------------------------------- grids and crops
def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) in [0, 1], cell centres of an n x n grid, rows of x first."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (x0, y0, x1, y1) and their layer: the image, then (2^(i+1))^2 crops per layer."""
    h, w = hw
    boxes, layers = [[0, 0, w, h]], [0]
    short = min(h, w)
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + w) / n))
        ch = int(math.ceil((overlap * (n - 1) + h) / n))
        for x0, y0 in product([int((cw - overlap) * k) for k in range(n)], [int((ch - overlap) * k) for k in range(n)]):
            boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
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
    c = torch.as_tensor(crop, dtype=torch.float32)[None]
    i = torch.as_tensor(image, dtype=torch.float32)[None]
    near_crop = torch.isclose(b, c, atol=atol, rtol=0)
    near_image = torch.isclose(b, i, atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def encode_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) bool -> pycocotools compressed RLEs (counts as bytes)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


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


# ----------------------------------------------------------------------------- the generator
def _check_number(name: str, value: Any, lo: float, hi: float, form: str, integer: bool = False) -> None:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
        raise ValueError(f"{name} must be {form}, got {value!r}")


class AutoMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts.

    Defaults are the original SAM 2 generator's: ``points_per_side=32``,
    ``points_per_batch=64``, ``pred_iou_thresh=0.8``, ``stability_score_thresh=0.95``,
    ``stability_score_offset=1.0``, ``mask_threshold=0.0``, ``box_nms_thresh=0.7``,
    ``crop_n_layers=0``, ``crop_nms_thresh=0.7``, ``crop_overlap_ratio=512/1500``,
    ``crop_n_points_downscale_factor=1``, ``min_mask_region_area=0``,
    ``output_mode="binary_mask"``, ``multimask_output=True``.

    ``point_grids``: explicit grids (one (N, 2) array in [0, 1] per crop layer) instead
    of ``points_per_side``. Tiling (images larger than ``tile_threshold``) and the
    embedding cache are those of ``ImagePredictor`` (same arguments).
    """

    def __init__(
        self,
        model: EdgeTam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        multimask_output: bool = True,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        tiling: bool | str = "auto",
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_threshold: int | None = None,
        cache: Any = None,
    ) -> None:
        if not isinstance(model, EdgeTam):
            raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side (an int >= 1) or point_grids (one (N, 2) array "
                             "of points in [0, 1] per crop layer)")
        _check_number("points_per_batch", points_per_batch, 1, 1e9, "an int >= 1", integer=True)
        _check_number("crop_n_layers", crop_n_layers, 0, 10, "an int in [0, 10]", integer=True)
        _check_number("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1, 1e9, "an int >= 1",
                      integer=True)
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            _check_number(name, value, 0.0, 1.0, "a number in [0, 1]")
        _check_number("crop_overlap_ratio", crop_overlap_ratio, 0.0, 0.999, "a number in [0, 1)")
        _check_number("stability_score_offset", stability_score_offset, 0.0, 1e9, "a number >= 0")
        _check_number("mask_threshold", mask_threshold, -1e9, 1e9, "a number (a logit)")
        _check_number("min_mask_region_area", min_mask_region_area, 0, 1e12, "an int >= 0 (pixels)", integer=True)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if not isinstance(multimask_output, bool):
            raise TypeError(f"multimask_output must be True or False, got {multimask_output!r}")
        if points_per_side is not None:
            _check_number("points_per_side", points_per_side, 1, 1e5, "an int >= 1", integer=True)
            grids = [point_grid(max(1, int(points_per_side / crop_n_points_downscale_factor**i)))
                     for i in range(crop_n_layers + 1)]
        else:
            grids = []
            for i, g in enumerate(point_grids or []):
                arr = np.asarray(g, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or arr.min() < 0 or arr.max() > 1:
                    raise ValueError(f"point_grids[{i}] must be an (N, 2) array of (x, y) in [0, 1], got shape "
                                     f"{arr.shape}")
                grids.append(arr)
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids must hold one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
        self.model = model
        self.point_grids = grids
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.output_mode = output_mode
        self.multimask_output = multimask_output
        self.predictor = ImagePredictor(model, percentiles=percentiles, tiling=tiling, tile_size=tile_size,
                                        tile_overlap=tile_overlap, tile_threshold=tile_threshold, cache=cache)

    # ------------------------------------------------------------------ public
    def generate(self, image: Any, channels: int | Sequence[int] | None = None, progress: Any = None,
                 cancel: Any = None) -> list[dict[str, Any]]:
        """Masks for ``image`` (HxW or HxWxC; uint8, uint16 or float), largest first.

        progress: ``f(done, total)`` or tqdm-like, told after each batch of points;
        cancel: callable or threading.Event checked between batches (raises ``Cancelled``).
        """
        records, hw = self.generate_records(image, channels=channels, progress=progress, cancel=cancel)
        return self.to_annotations(records, hw)

    def generate_records(self, image: Any, channels: int | Sequence[int] | None = None, progress: Any = None,
                         cancel: Any = None) -> tuple[MaskRecords, tuple[int, int]]:
        """The masks as ``MaskRecords`` (compact RLEs per crop/tile) and the image's (H, W)."""
        arr = _as_array(image, "image")
        if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
            to_unit_rgb(arr, channels=channels, name="image")  # raises the full explanation
        hw = (int(arr.shape[0]), int(arr.shape[1]))
        if self.predictor.tiling_for(hw) is not None:
            records = self._generate_tiled(arr, channels, hw, progress, cancel)
        else:
            # crops (layers >= 1) are cut from the normalised image, so all crops share its scaling
            rgb = (to_unit_rgb(arr, channels=channels, percentiles=self.predictor.percentiles, name="image")
                   if self.crop_n_layers else None)
            records = self._generate_crops(arr, rgb, channels, hw, progress, cancel)
        if self.min_mask_region_area > 0 and len(records):
            records = self._remove_small_regions(records, hw)
        return records, hw

    def to_annotations(self, records: MaskRecords, hw: tuple[int, int]) -> list[dict[str, Any]]:
        """Records -> the list of result dicts, largest area first."""
        from pycocotools import mask as mask_utils

        anns = []
        boxes = records.boxes.float().numpy()
        for i in range(len(records)):
            x0, y0, x1, y1 = (int(v) for v in records.regions[i])
            area = int(mask_utils.area(records.rles[i]))
            if self.output_mode == "binary_mask":
                seg: Any = np.zeros(hw, bool)
                seg[y0:y1, x0:x1] = records.mask(i)
            else:
                counts = rle_counts_in_image(records.mask(i), (x0, y0), hw)
                seg = {"size": [hw[0], hw[1]], "counts": counts}
                if self.output_mode == "coco_rle":
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

    # ------------------------------------------------------------------ crops (untiled)
    def _generate_crops(self, image: Any, rgb: np.ndarray | None, channels: Any, hw: tuple[int, int], progress: Any,
                        cancel: Any) -> MaskRecords:
        h, w = hw
        boxes, layers = crop_boxes(hw, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(math.ceil(len(self.point_grids[layer]) / self.points_per_batch) for layer in layers)
        counter = _Counter(progress, total)
        parts = []
        for box, layer in zip(boxes, layers):
            x0, y0, x1, y1 = box
            if is_cancelled(cancel):
                raise Cancelled(f"generate cancelled after {counter.done} of {total} batches")
            if layer == 0:  # the image itself: as given, so the embedding cache sees the same image
                self.predictor.set_image(image, channels=channels)
            else:
                assert rgb is not None
                self.predictor.set_image(rgb[y0:y1, x0:x1])
            region_hw = (y1 - y0, x1 - x0)
            decode = self._decoder_for(self.predictor.features, self.predictor._image_pe, box, region_hw)
            points = self.point_grids[layer] * np.array(region_hw)[None, ::-1]
            data = self._process_region(decode, points, box, box, [0, 0, w, h], counter, cancel)
            data = data.nms(data.iou, self.box_nms_thresh)
            parts.append(data)
        records = MaskRecords.cat(parts)
        if len(boxes) > 1 and len(records):
            c = torch.as_tensor(records.crop_boxes, dtype=torch.float32)
            records = records.nms(1.0 / ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])), self.crop_nms_thresh)
        return records

    # ------------------------------------------------------------------ tiles
    def _generate_tiled(self, image: Any, channels: Any, hw: tuple[int, int], progress: Any,
                        cancel: Any) -> MaskRecords:
        from .tiling import merge_tile_masks

        if self.crop_n_layers:
            raise ValueError("crop_n_layers must be 0 for a tiled image (each tile already acts as a crop); "
                             "pass tiling=False to use crop layers on a downscaled image")
        self.predictor.set_image(image, channels=channels, cancel=cancel)
        grid = self.predictor.tile_grid
        assert grid is not None
        grid_points = self.point_grids[0]
        total = len(grid) * math.ceil(len(grid_points) / self.points_per_batch)
        counter = _Counter(progress, total)
        parts = []
        for t, box in enumerate(grid.boxes):
            if is_cancelled(cancel):
                raise Cancelled(f"generate cancelled after {counter.done} of {total} batches")
            region_hw = grid.tile_hw(t)
            feats = self.predictor.features.select(torch.tensor([t], device=self.model.device))
            decode = self._decoder_for(feats, self.predictor._image_pe, list(box), region_hw)
            points = grid_points * np.array(region_hw)[None, ::-1]
            data = self._process_region(decode, points, list(box), list(box), list(box), counter, cancel)
            data = data.nms(data.iou, self.box_nms_thresh)
            data.cut = near_crop_edge(data.boxes, box, [0, 0, hw[1], hw[0]]).numpy()
            data.tile = np.full(len(data), t, np.int64)
            parts.append(data)
        return merge_tile_masks(MaskRecords.cat(parts), grid, self.crop_nms_thresh)

    # ------------------------------------------------------------------ the core
    def _decoder_for(self, features: ImageFeatures, image_pe: torch.Tensor | None, box: Sequence[int],
                     region_hw: tuple[int, int]) -> Decoder:
        """A function: points (B, 2) in region pixels -> (low-res logits (R, K, 4E, 4E), IoU
        (R, K), the R prompts' rows in the batch), all B single-point prompts in one decoder
        call. With a predicted-IoU filter and several masks per point, only the points with a
        mask above ``pred_iou_thresh`` get masks (R <= B): the others would be dropped by
        that filter, and the IoU head does not need the masks."""
        model = self.model
        size = model.config.image_size
        h, w = region_hw
        multimask = self.multimask_output
        min_iou = self.pred_iou_thresh if multimask and self.pred_iou_thresh > 0.0 else None
        with inference(model):  # image tokens and first-layer keys/values: once per region
            context = model.image_context(features, image_pe)

        def decode_chunk(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
            p = torch.as_tensor(points, dtype=torch.float32).clone()
            p[:, 0] = p[:, 0] / w
            p[:, 1] = p[:, 1] / h
            coords = (p * size).to(model.device, model.dtype)[:, None, :]
            labels = torch.ones(len(points), 1, dtype=torch.long, device=model.device)
            n = len(points)
            # one image for all n prompts: broadcast views instead of n copies of the features
            feats = ImageFeatures(features.embed.expand(n, -1, -1, -1),
                                  tuple(t.expand(n, -1, -1, -1) for t in features.high_res))
            with inference(model):
                out = model.decode(feats, coords, labels, None, multimask, image_pe=image_pe, context=context,
                                   min_iou=min_iou)
            rows = np.arange(n) if out.rows is None else out.rows.cpu().numpy()
            return out.low_res_logits.float().cpu(), out.iou[rows].float().cpu(), rows

        chunk = _CPU_DECODE_CHUNK if model.device.type == "cpu" else None

        def decode(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
            if chunk is None or len(points) <= chunk:
                return decode_chunk(points)
            parts = [decode_chunk(points[s:s + chunk]) for s in range(0, len(points), chunk)]
            return (torch.cat([q[0] for q in parts]), torch.cat([q[1] for q in parts]),
                    np.concatenate([q[2] + s for q, s in zip(parts, range(0, len(points), chunk))]))

        return decode

    def _process_region(self, decode: Decoder, points: np.ndarray, box: Sequence[int], crop: Sequence[int],
                        image_box: Sequence[int], counter: "_Counter", cancel: Any) -> MaskRecords:
        """Decode ``points`` (region pixels) in batches; filter; masks as RLEs over ``box``."""
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            if start and is_cancelled(cancel):
                raise Cancelled(f"generate cancelled after {counter.done} of {counter.total} batches")
            batch = points[start:start + self.points_per_batch]
            logits, iou, rows = decode(batch)
            parts.append(self._filter_batch(logits, iou, batch[rows], box, crop, image_box))
            counter.step()
        return MaskRecords.cat(parts)

    def _filter_batch(self, logits: torch.Tensor, iou: torch.Tensor, points: np.ndarray, box: Sequence[int],
                      crop: Sequence[int], image_box: Sequence[int]) -> MaskRecords:
        x0, y0, x1, y1 = (int(v) for v in box)
        region_hw = (y1 - y0, x1 - x0)
        k = logits.shape[1]
        logits = logits.flatten(0, 1)
        iou = iou.flatten(0, 1)
        pts = np.repeat(np.asarray(points, np.float32), k, axis=0)
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            logits, iou, pts = logits[keep], iou[keep], pts[keep.numpy()]
        masks, stab = [], []
        for s in range(0, len(logits), _UPSCALE_CHUNK):
            chunk = logits[s:s + _UPSCALE_CHUNK]
            up = chunk if tuple(chunk.shape[-2:]) == region_hw else upscale_logits(chunk[:, None], region_hw)[:, 0]
            stab.append(stability_score(up, self.mask_threshold, self.stability_score_offset))
            masks.append(up > self.mask_threshold)
        if not masks:
            return MaskRecords()
        m = torch.cat(masks)
        st = torch.cat(stab)
        if self.stability_score_thresh > 0.0:
            keep = st >= self.stability_score_thresh
            m, st, iou, pts = m[keep], st[keep], iou[keep], pts[keep.numpy()]
        boxes = masks_to_boxes(m) + torch.tensor([[x0, y0, x0, y0]])
        keep = ~near_crop_edge(boxes, crop, image_box)
        if not bool(keep.all()):
            m, st, iou, pts, boxes = m[keep], st[keep], iou[keep], pts[keep.numpy()], boxes[keep]
        n = len(m)
        return MaskRecords(
            rles=encode_rles(m.numpy()),
            regions=np.tile(np.array([[x0, y0, x1, y1]], np.int64), (n, 1)),
            boxes=boxes, iou=iou, stability=st,
            points=pts + np.array([[x0, y0]], np.float32),
            crop_boxes=np.tile(np.array([list(crop)], np.int64), (n, 1)),
            cut=np.zeros(n, bool), tile=np.zeros(n, np.int64),
        )

    def _remove_small_regions(self, records: MaskRecords, hw: tuple[int, int]) -> MaskRecords:
        """Fill small holes, drop small islands, then NMS preferring unchanged masks."""
        h, w = hw
        new_rles, new_boxes, scores = [], [], []
        for i in range(len(records)):
            x0, y0, x1, y1 = (int(v) for v in records.regions[i])
            # pad inner sides with background so holes/islands see the image's border, not the region's
            pad = ((int(y0 > 0), int(y1 < h)), (int(x0 > 0), int(x1 < w)))
            mask = np.pad(records.mask(i), pad)
            mask, changed_h = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, changed_i = remove_small_regions(mask, self.min_mask_region_area, "islands")
            mask = mask[pad[0][0]:mask.shape[0] - pad[0][1], pad[1][0]:mask.shape[1] - pad[1][1]]
            changed = changed_h or changed_i
            scores.append(0.0 if changed else 1.0)
            if changed:
                new_rles.append(encode_rles(mask[None])[0])
                new_boxes.append(masks_to_boxes(torch.from_numpy(mask)[None])[0] + torch.tensor([x0, y0, x0, y0]))
            else:
                new_rles.append(records.rles[i])
                new_boxes.append(records.boxes[i].long())
        records = MaskRecords(new_rles, records.regions, torch.stack(new_boxes), records.iou, records.stability,
                              records.points, records.crop_boxes, records.cut, records.tile)
        return records.nms(torch.tensor(scores), max(self.box_nms_thresh, self.crop_nms_thresh))


class _Counter:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        report(self.progress, self.done, self.total)

