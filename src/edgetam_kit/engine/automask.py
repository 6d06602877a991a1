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

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..modeling import EdgeTam, ImageFeatures
from ..progress import Cancelled, is_cancelled, report
from ..transforms import _as_array, to_unit_rgb, upscale_logits
from .masks import (MaskRecords, annotations, crop_boxes, encode_rles, masks_to_boxes, near_crop_edge, point_grid,
                    records_on_host, remove_small_regions, stability_score)
from .predictor import ImagePredictor

OUTPUT_MODES = ("binary_mask", "coco_rle", "uncompressed_rle")
MAX_POINTS_PER_SIDE = 1024  # 1M prompts per crop; the default is 32
_UPSCALE_CHUNK = 32  # masks upsampled at once (bounds memory: chunk x crop pixels x 4 bytes)
# Prompts per decoder call on CPU, inside a points_per_batch batch: each prompt carries ~40 MB
# of 4096x256 / 16384x128 maps through the decoder; a few at a time stay in cache (measured
# ~20% less time per prompt than 64 at once on the 2-core AVX2 machine; benchmarks/automask.py).
_CPU_DECODE_CHUNK = 4

Decoder = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, np.ndarray]]


# ----------------------------------------------------------------------------- the generator
def _check_number(name: str, value: Any, lo: float, hi: float, form: str, integer: bool = False) -> None:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
        raise ValueError(f"{name} must be {form}, got {value!r}")


@dataclass(frozen=True)
class AutoMaskConfig:
    """Settings of ``AutoMaskGenerator``; the defaults are the original SAM 2 generator's.

    point_grids: explicit grids (one (N, 2) array of (x, y) in [0, 1] per crop layer) instead of
    ``points_per_side`` (set that to None then). Pixels: ``min_mask_region_area``; logits:
    ``mask_threshold``. Validated on construction (``ValueError`` naming the field).
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: Sequence[Any] | None = None
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    multimask_output: bool = True

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("give exactly one of points_per_side (an int >= 1) or point_grids (one (N, 2) array "
                             "of points in [0, 1] per crop layer)")
        _check_number("points_per_batch", self.points_per_batch, 1, 1e9, "an int >= 1", integer=True)
        _check_number("crop_n_layers", self.crop_n_layers, 0, 10, "an int in [0, 10]", integer=True)
        _check_number("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor, 1, 1e9, "an int >= 1",
                      integer=True)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            _check_number(name, getattr(self, name), 0.0, 1.0, "a number in [0, 1]")
        _check_number("crop_overlap_ratio", self.crop_overlap_ratio, 0.0, 0.999, "a number in [0, 1)")
        _check_number("stability_score_offset", self.stability_score_offset, 0.0, 1e9, "a number >= 0")
        _check_number("mask_threshold", self.mask_threshold, -1e9, 1e9, "a number (a logit)")
        _check_number("min_mask_region_area", self.min_mask_region_area, 0, 1e12, "an int >= 0 (pixels)",
                      integer=True)
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {self.output_mode!r}")
        if not isinstance(self.multimask_output, bool):
            raise TypeError(f"multimask_output must be True or False, got {self.multimask_output!r}")
        if self.points_per_side is not None:
            _check_number("points_per_side", self.points_per_side, 1, MAX_POINTS_PER_SIDE,
                          f"an int in [1, {MAX_POINTS_PER_SIDE}]", integer=True)
        else:
            grids = []
            given = self.point_grids
            if isinstance(given, np.ndarray):  # (N, 2): one grid; (L, N, 2): one per layer
                given = [given] if given.ndim == 2 else list(given)
            elif isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
                raise TypeError(f"point_grids must be a list of (N, 2) arrays, one per crop layer, got "
                                f"{type(given).__name__}")
            for i, g in enumerate(given):
                try:
                    arr = np.asarray(g, dtype=np.float64)
                except (TypeError, ValueError):
                    arr = np.zeros((0,))
                if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or not np.isfinite(arr).all() \
                        or arr.min() < 0 or arr.max() > 1:
                    raise ValueError(f"point_grids[{i}] must be an (N, 2) array of finite (x, y) in [0, 1], got "
                                     f"shape {arr.shape}")
                grids.append(arr)
            if len(grids) != self.crop_n_layers + 1:
                raise ValueError(f"point_grids must hold one grid per crop layer ({self.crop_n_layers + 1}), "
                                 f"got {len(grids)}")
            object.__setattr__(self, "point_grids", tuple(grids))

    def grids(self) -> list[np.ndarray]:
        """The (N, 2) point grid in [0, 1] of each crop layer."""
        if self.point_grids is not None:
            return list(self.point_grids)
        return [point_grid(max(1, int(self.points_per_side / self.crop_n_points_downscale_factor**i)))
                for i in range(self.crop_n_layers + 1)]


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(AutoMaskConfig)}


class AutoMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts.

    Settings: an ``AutoMaskConfig`` (``config=``), or its fields as keyword arguments
    (``points_per_side=32``, ``pred_iou_thresh=0.8``, ...; the original SAM 2 generator's
    defaults). Every other keyword argument is an ``ImagePredictor`` option (``percentiles``,
    ``tiling``, ``tile_size``, ``tile_overlap``, ``tile_threshold``, ``cache``), passed to the
    predictor as given: tiling (images larger than ``tile_threshold``) and the embedding cache
    are the predictor's.
    """

    def __init__(self, model: EdgeTam, config: AutoMaskConfig | None = None, **options: Any) -> None:
        if not isinstance(model, EdgeTam):
            raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
        settings = {k: v for k, v in options.items() if k in _CONFIG_FIELDS}
        predictor_options = {k: v for k, v in options.items() if k not in _CONFIG_FIELDS}
        if config is None:
            config = AutoMaskConfig(**settings)
        elif not isinstance(config, AutoMaskConfig):
            raise TypeError(f"config must be an AutoMaskConfig, got {type(config).__name__}")
        elif settings:
            config = dataclasses.replace(config, **settings)
        self.model = model
        self.config = config
        self.point_grids = config.grids()
        try:
            self.predictor = ImagePredictor(model, **predictor_options)
        except TypeError as exc:
            known = sorted(_CONFIG_FIELDS | {"percentiles", "tiling", "tile_size", "tile_overlap", "tile_threshold",
                                             "cache"})
            raise TypeError(f"AutoMaskGenerator got an unknown argument ({exc}); accepted: {', '.join(known)}") \
                from None

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
                   if self.config.crop_n_layers else None)
            records = self._generate_crops(arr, rgb, channels, hw, progress, cancel)
        if self.config.min_mask_region_area > 0 and len(records):
            records = self._remove_small_regions(records, hw)
        return records, hw

    def to_annotations(self, records: MaskRecords, hw: tuple[int, int]) -> list[dict[str, Any]]:
        """Records -> the list of result dicts, largest area first."""
        return annotations(records, hw, self.config.output_mode)

    # ------------------------------------------------------------------ crops (untiled)
    def _generate_crops(self, image: Any, rgb: np.ndarray | None, channels: Any, hw: tuple[int, int], progress: Any,
                        cancel: Any) -> MaskRecords:
        h, w = hw
        boxes, layers = crop_boxes(hw, self.config.crop_n_layers, self.config.crop_overlap_ratio)
        total = sum(math.ceil(len(self.point_grids[layer]) / self.config.points_per_batch) for layer in layers)
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
            decode = self._decoder_for(self.predictor.features, box, region_hw)
            points = self.point_grids[layer] * np.array(region_hw)[None, ::-1]
            data = self._process_region(decode, points, box, box, [0, 0, w, h], counter, cancel)
            data = data.nms(data.iou, self.config.box_nms_thresh)
            parts.append(data)
        records = MaskRecords.cat(parts)
        if len(boxes) > 1 and len(records):
            c = torch.as_tensor(records.crop_boxes, dtype=torch.float32)
            records = records.nms(1.0 / ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])), self.config.crop_nms_thresh)
        return records

    # ------------------------------------------------------------------ tiles
    def _generate_tiled(self, image: Any, channels: Any, hw: tuple[int, int], progress: Any,
                        cancel: Any) -> MaskRecords:
        from .tiling import merge_tile_masks

        if self.config.crop_n_layers:
            raise ValueError("crop_n_layers must be 0 for a tiled image (each tile already acts as a crop); "
                             "pass tiling=False to use crop layers on a downscaled image")
        self.predictor.set_image(image, channels=channels, cancel=cancel)
        grid = self.predictor.tile_grid
        assert grid is not None
        grid_points = self.point_grids[0]
        total = len(grid) * math.ceil(len(grid_points) / self.config.points_per_batch)
        counter = _Counter(progress, total)
        parts = []
        for t, box in enumerate(grid.boxes):
            if is_cancelled(cancel):
                raise Cancelled(f"generate cancelled after {counter.done} of {total} batches")
            region_hw = grid.tile_hw(t)
            feats = self.predictor.features.select(torch.tensor([t], device=self.model.device))
            decode = self._decoder_for(feats, list(box), region_hw)
            points = grid_points * np.array(region_hw)[None, ::-1]
            data = self._process_region(decode, points, list(box), list(box), list(box), counter, cancel)
            data = data.nms(data.iou, self.config.box_nms_thresh)
            data.cut = near_crop_edge(data.boxes, box, [0, 0, hw[1], hw[0]]).numpy()
            data.tile = np.full(len(data), t, np.int64)
            parts.append(data)
        return merge_tile_masks(MaskRecords.cat(parts), grid, self.config.crop_nms_thresh)

    # ------------------------------------------------------------------ the core
    def _decoder_for(self, features: ImageFeatures, box: Sequence[int], region_hw: tuple[int, int]) -> Decoder:
        """A function: points (B, 2) in region pixels -> (low-res logits (R, K, 4E, 4E), IoU
        (R, K), the R prompts' rows in the batch), all B single-point prompts in one decoder
        call. With a predicted-IoU filter and several masks per point, only the points with a
        mask above ``pred_iou_thresh`` get masks (R <= B): the others would be dropped by
        that filter, and the IoU head does not need the masks."""
        model = self.model
        size = model.config.image_size
        h, w = region_hw
        multimask = self.config.multimask_output
        min_iou = self.config.pred_iou_thresh if multimask and self.config.pred_iou_thresh > 0.0 else None
        runtime = self.predictor.runtime()
        with runtime.inference():  # image tokens and first-layer keys/values: once per region
            context = runtime.image_context(features)

        def decode_chunk(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
            p = torch.as_tensor(points, dtype=torch.float32).clone()
            p[:, 0] = p[:, 0] / w
            p[:, 1] = p[:, 1] / h
            coords = (p * size).to(model.device, model.dtype)[:, None, :]
            labels = torch.ones(len(points), 1, dtype=torch.long, device=model.device)
            n = len(points)
            with runtime.inference():  # one image for all n prompts: the context's rows are shared
                out = runtime.decode(features, coords, labels, None, multimask, context=context, min_iou=min_iou)
            rows = np.arange(n) if out.rows is None else out.rows.cpu().numpy()
            return out.low_res_logits.float(), out.iou[rows].float(), rows  # on the model's device

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
        for start in range(0, len(points), self.config.points_per_batch):
            if start and is_cancelled(cancel):
                raise Cancelled(f"generate cancelled after {counter.done} of {counter.total} batches")
            batch = points[start:start + self.config.points_per_batch]
            logits, iou, rows = decode(batch)
            parts.append(self._filter_batch(logits, iou, batch[rows], box, crop, image_box))
            counter.step()
        return MaskRecords.cat(parts)

    def _filter_batch(self, logits: torch.Tensor, iou: torch.Tensor, points: np.ndarray, box: Sequence[int],
                      crop: Sequence[int], image_box: Sequence[int]) -> MaskRecords:
        """Low-res logits (R, K, h, w) and IoU (R, K) of R points -> the records that pass the
        filters. Upscaling, stability, boxes and the edge filter run on the logits' device;
        only the surviving masks (as run lengths), their boxes and scores come to the host."""
        x0, y0, x1, y1 = (int(v) for v in box)
        region_hw = (y1 - y0, x1 - x0)
        device = logits.device
        k = logits.shape[1]
        logits = logits.flatten(0, 1)
        iou = iou.flatten(0, 1)
        pts = torch.as_tensor(np.asarray(points, np.float32), device=device).repeat_interleave(k, 0)
        if self.config.pred_iou_thresh > 0.0:
            keep = iou > self.config.pred_iou_thresh
            logits, iou, pts = logits[keep], iou[keep], pts[keep]
        if len(logits) == 0:
            return MaskRecords()
        masks, stab = [], []
        for s in range(0, len(logits), _UPSCALE_CHUNK):
            chunk = logits[s:s + _UPSCALE_CHUNK]
            up = chunk if tuple(chunk.shape[-2:]) == region_hw else upscale_logits(chunk[:, None], region_hw)[:, 0]
            stab.append(stability_score(up, self.config.mask_threshold, self.config.stability_score_offset))
            masks.append(up > self.config.mask_threshold)
        m = torch.cat(masks)
        st = torch.cat(stab)
        if self.config.stability_score_thresh > 0.0:
            keep = st >= self.config.stability_score_thresh
            m, st, iou, pts = m[keep], st[keep], iou[keep], pts[keep]
        boxes = masks_to_boxes(m) + torch.tensor([[x0, y0, x0, y0]], device=device)
        keep = ~near_crop_edge(boxes, crop, image_box)
        m, st, iou, pts, boxes = m[keep], st[keep], iou[keep], pts[keep], boxes[keep]
        return records_on_host(m, boxes, iou, st, pts + torch.tensor([[x0, y0]], device=device), box, crop)

    def _remove_small_regions(self, records: MaskRecords, hw: tuple[int, int]) -> MaskRecords:
        """Fill small holes, drop small islands, then NMS preferring unchanged masks."""
        h, w = hw
        new_rles, new_boxes, scores = [], [], []
        for i in range(len(records)):
            x0, y0, x1, y1 = (int(v) for v in records.regions[i])
            # pad inner sides with background so holes/islands see the image's border, not the region's
            pad = ((int(y0 > 0), int(y1 < h)), (int(x0 > 0), int(x1 < w)))
            mask = np.pad(records.mask(i), pad)
            mask, changed_h = remove_small_regions(mask, self.config.min_mask_region_area, "holes")
            mask, changed_i = remove_small_regions(mask, self.config.min_mask_region_area, "islands")
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
        return records.nms(torch.tensor(scores), max(self.config.box_nms_thresh, self.config.crop_nms_thresh))


class _Counter:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        report(self.progress, self.done, self.total)

