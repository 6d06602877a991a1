"""Large images as overlapping tiles: the grid, prompt routing and mask stitching.

An image whose longer side exceeds ``Tiling.threshold`` pixels is embedded as square tiles
of ``Tiling.size`` image pixels (default 1024, EdgeTAM's input size, so tile pixels are not
resampled), neighbouring tiles overlapping by ``Tiling.overlap`` pixels (the halo). Tiles
are spread evenly so the last one ends on the image border.

Prompts (``ImagePredictor.predict``): an object whose prompt (points and box) fits in a
tile is decoded in the tile where it sits most centrally, so it sees at least half the
overlap as context on every inner side; its mask is pasted into a full-size canvas. A
prompt larger than a tile (a big box, or points far apart) is decoded in every tile it
touches (the box clipped to the tile, the points inside it) and the pieces are stitched:
each pixel comes from the tile whose centre is nearest (the tiles' cores).

Automatic masks (``AutoMaskGenerator``) run per tile; ``merge_tile_masks`` joins the
pieces of objects cut by tile borders (see its docstring).

Coordinates: boxes are (x0, y0, x1, y1) in image pixels with x1, y1 exclusive for tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .masks import MaskRecords, encode_rles, masks_to_boxes
from .prediction import Prediction

if TYPE_CHECKING:
    from .prompts import Prompt

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tiling:
    """When and how to tile. ``size`` and ``overlap`` in image pixels; an image is tiled
    when its longer side is larger than ``threshold``."""

    size: int
    overlap: int
    threshold: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 32:
            raise ValueError(f"tile_size must be an int >= 32 (pixels), got {self.size!r}")
        if not isinstance(self.overlap, int) or not (0 <= self.overlap < self.size // 2 + 1):
            raise ValueError(f"tile_overlap must be an int in [0, tile_size / 2] (pixels), got {self.overlap!r}")
        if not isinstance(self.threshold, int) or self.threshold < 1:
            raise ValueError(f"tile_threshold must be a positive int (pixels of the longer side), got {self.threshold!r}")

    def applies(self, hw: tuple[int, int]) -> bool:
        return max(hw) > self.threshold

    def as_dict(self) -> dict[str, int]:
        return {"size": self.size, "overlap": self.overlap}


def _starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis: first at 0, last ending at ``length``."""
    if length <= size:
        return [0]
    stride = size - overlap
    n = math.ceil((length - size) / stride) + 1
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one image: ``boxes[i]`` = (x0, y0, x1, y1), x1/y1 exclusive."""

    image_hw: tuple[int, int]
    boxes: tuple[Box, ...]

    @classmethod
    def build(cls, hw: tuple[int, int], size: int, overlap: int) -> "TileGrid":
        h, w = int(hw[0]), int(hw[1])
        boxes = tuple(
            (x0, y0, min(x0 + size, w), min(y0 + size, h))
            for y0 in _starts(h, size, overlap)
            for x0 in _starts(w, size, overlap)
        )
        return cls((h, w), boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    def tile_hw(self, i: int) -> tuple[int, int]:
        x0, y0, x1, y1 = self.boxes[i]
        return (y1 - y0, x1 - x0)

    def inner_sides(self, i: int) -> tuple[bool, bool, bool, bool]:
        """(left, top, right, bottom): True where that side of tile i lies inside the image."""
        x0, y0, x1, y1 = self.boxes[i]
        h, w = self.image_hw
        return (x0 > 0, y0 > 0, x1 < w, y1 < h)

    def margin(self, i: int, extent: Sequence[float]) -> float:
        """Smallest distance from ``extent`` (x0, y0, x1, y1) to an inner side of tile i
        (negative when the extent sticks out); sides on the image border do not count."""
        x0, y0, x1, y1 = self.boxes[i]
        ex0, ey0, ex1, ey1 = extent
        sides = self.inner_sides(i)
        gaps = (ex0 - x0, ey0 - y0, x1 - ex1, y1 - ey1)
        if min(gaps) < 0:
            return min(gaps)
        inner = [g for g, s in zip(gaps, sides) if s]
        return min(inner) if inner else math.inf

    def route(self, extent: Sequence[float]) -> int | None:
        """The tile that holds ``extent`` with the largest margin, or None if none holds it."""
        best, best_margin = None, -math.inf
        for i in range(len(self.boxes)):
            m = self.margin(i, extent)
            if m >= 0 and m > best_margin:
                best, best_margin = i, m
        return best

    def touching(self, extent: Sequence[float]) -> list[int]:
        """Tiles whose area intersects ``extent`` (x0, y0, x1, y1, inclusive pixel coords)."""
        ex0, ey0, ex1, ey1 = extent
        return [i for i, (x0, y0, x1, y1) in enumerate(self.boxes) if ex0 < x1 and ex1 >= x0 and ey0 < y1 and ey1 >= y0]

    def owners(self, tiles: Sequence[int], region: Box) -> np.ndarray:
        """For each pixel of ``region`` (x0, y0, x1, y1), the position in ``tiles`` of the
        tile whose centre is nearest (Chebyshev distance, normalised by the tile's half
        size) among those containing the pixel; -1 where none does."""
        rx0, ry0, rx1, ry1 = region
        ys = np.arange(ry0, ry1, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(rx0, rx1, dtype=np.float32)[None, :] + 0.5
        best = np.full((ry1 - ry0, rx1 - rx0), np.inf, np.float32)
        owner = np.full(best.shape, -1, np.int32)
        for k, t in enumerate(tiles):
            x0, y0, x1, y1 = self.boxes[t]
            cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            d = np.maximum(np.abs(xs - cx) / hx, np.abs(ys - cy) / hy)
            d = np.where((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1), d, np.inf)
            better = d < best
            best = np.where(better, d, best)
            owner[better] = k
        return owner


# ----------------------------------------------------------------------------- prompts
def _extent(points: np.ndarray | None, box: np.ndarray | None) -> tuple[float, float, float, float]:
    xy = [a.reshape(-1, 2) for a in (points, box) if a is not None]
    allxy = np.concatenate(xy, 0)
    return (float(allxy[:, 0].min()), float(allxy[:, 1].min()), float(allxy[:, 0].max()), float(allxy[:, 1].max()))


def tiled_predict(grid: TileGrid, objects: list[dict[str, Any]], multimask: bool, wheres: list[str],
                  parse: Callable[..., "Prompt"], run: Callable[[list["Prompt"], bool], list[Prediction]],
                  ) -> list[Prediction]:
    """Decode ``objects`` (dicts of points, labels, box, mask_input in image pixels) on a
    tiled image: route each to a tile (or several, stitched) and paste into full size.

    parse(points, labels, box, mask_input, tile, where=, hw=None) -> Prompt: the predictor's
    parser for a tile (or, with ``hw``, for the whole image); run(prompts, multimask): decodes
    prompts on the tiles they name and returns one ``Prediction`` each."""
    h, w = grid.image_hw
    subs: list[tuple[int, int]] = []  # (object, tile) per decoded prompt
    prompts = []
    plans: list[tuple[list[int], int]] = []  # per object: tiles used, primary tile
    for i, obj in enumerate(objects):
        where = wheres[i]
        if obj["points"] is None and obj["box"] is None and obj["mask_input"] is not None:
            raise ValueError(f"prompt{where}: on a tiled image a mask_input needs points or a box to place it")
        # validate in the image's own frame (named errors, the whole image as the bound)
        parse(obj["points"], obj["labels"], obj["box"], None, 0, where=where, hw=(h, w))
        pts = None if obj["points"] is None else np.asarray(obj["points"], np.float32).reshape(-1, 2)
        labs = None if pts is None else (np.ones(len(pts), np.int64) if obj["labels"] is None
                                         else np.asarray(obj["labels"]).reshape(-1).astype(np.int64))
        box = None if obj["box"] is None else np.asarray(obj["box"], np.float32).reshape(4)
        extent = _extent(pts, box)
        tile = grid.route(extent)
        tiles = [tile] if tile is not None else grid.touching(extent)
        primary = tile if tile is not None else _nearest_tile(grid, extent, tiles)
        used = []
        for t in tiles if len(tiles) > 1 else []:
            x0, y0, x1, y1 = grid.boxes[t]
            off = np.array([x0, y0], np.float32)
            tp = tl = tb = None
            if pts is not None:
                inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
                if inside.any():
                    tp, tl = pts[inside] - off, labs[inside]
            if box is not None:
                bx = np.array([max(box[0], x0), max(box[1], y0), min(box[2], x1), min(box[3], y1)], np.float32)
                if bx[2] > bx[0] and bx[3] > bx[1]:
                    tb = bx - np.concatenate([off, off])
            if tb is None and (tl is None or not (tl == 1).any()):
                continue  # no box and no positive click of this object lands in this tile
            prompts.append(parse(tp, tl, tb, obj["mask_input"] if t == primary else None, t, where=where))
            subs.append((i, t))
            used.append(t)
        if not used:  # one tile holds the prompt (or only negatives are spread out): decode it there
            x0, y0, x1, y1 = grid.boxes[primary]
            off = np.array([x0, y0], np.float32)
            tp = None if pts is None else np.clip(pts - off, 0, [x1 - x0, y1 - y0])
            tb = None if box is None else np.clip(box - np.concatenate([off, off]), 0, [x1 - x0, y1 - y0] * 2)
            prompts.append(parse(tp, labs, tb, obj["mask_input"], primary, where=where))
            subs.append((i, primary))
            used.append(primary)
        elif primary not in used:
            primary = used[0]
        plans.append((used, primary))
    results = run(prompts, multimask)
    by_object: dict[int, dict[int, "Prediction"]] = {}
    for (i, t), r in zip(subs, results):
        by_object.setdefault(i, {})[t] = r
    out = []
    for i, (used, primary) in enumerate(plans):
        parts = by_object[i]
        k = parts[primary].masks.shape[0]
        masks = np.zeros((k, h, w), bool)
        if len(used) == 1:
            x0, y0, x1, y1 = grid.boxes[used[0]]
            masks[:, y0:y1, x0:x1] = parts[used[0]].masks
        else:
            region = (min(grid.boxes[t][0] for t in used), min(grid.boxes[t][1] for t in used),
                      max(grid.boxes[t][2] for t in used), max(grid.boxes[t][3] for t in used))
            owner = grid.owners(used, region)
            for pos, t in enumerate(used):
                x0, y0, x1, y1 = grid.boxes[t]
                own = owner[y0 - region[1]:y1 - region[1], x0 - region[0]:x1 - region[0]] == pos
                view = masks[:, y0:y1, x0:x1]
                view[:, own] = parts[t].masks[:, own]
        scores = np.mean([parts[t].scores for t in used], axis=0).astype(np.float32)
        out.append(Prediction(masks=masks, scores=scores, logits=parts[primary].logits,
                              object_score=max(parts[t].object_score for t in used)))
    return out


def _nearest_tile(grid: TileGrid, extent: Sequence[float], tiles: list[int]) -> int:
    cx, cy = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2

    def dist(t: int) -> float:
        x0, y0, x1, y1 = grid.boxes[t]
        return max(abs(cx - (x0 + x1) / 2), abs(cy - (y0 + y1) / 2))

    return min(tiles, key=dist)


# ----------------------------------------------------------------------------- automatic masks
def merge_tile_masks(records: Any, grid: TileGrid, nms_thresh: float, match_iou: float = 0.5) -> Any:
    """Join the automatic masks of a tiled image into one set.

    ``records`` (``automask.MaskRecords``) hold each tile's masks over the tile, with ``cut``
    set where a mask's box lies within 20 px of an inner tile side. Two masks from
    different tiles are the same object when, inside the two tiles' overlap, they agree
    (IoU >= ``match_iou``). For each group of such masks: if one of them is not cut it
    holds the whole object, and the best of those (predicted IoU) is kept; otherwise the
    object is larger than the overlap and the union of the pieces is kept. A last box NMS
    (``nms_thresh``) removes what is left of duplicates.
    """
    import torch


    n = len(records)
    if n == 0:
        return records
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = records.boxes.long().numpy()  # inclusive, image frame
    by_tile = {t: np.flatnonzero(records.tile == t) for t in range(len(grid))}
    for a in range(len(grid)):
        for b in range(a + 1, len(grid)):
            ax0, ay0, ax1, ay1 = grid.boxes[a]
            bx0, by0, bx1, by1 = grid.boxes[b]
            r = (max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1))
            if r[0] >= r[2] or r[1] >= r[3]:
                continue

            def in_overlap(i: int) -> bool:
                x0, y0, x1, y1 = boxes[i]
                return x0 < r[2] and x1 >= r[0] and y0 < r[3] and y1 >= r[1]

            ia = [i for i in by_tile[a] if in_overlap(i)]
            ib = [j for j in by_tile[b] if in_overlap(j)]
            if not ia or not ib:
                continue
            crops = {i: _crop_to(records, i, r) for i in ia + ib}
            for i in ia:
                for j in ib:
                    ci, cj = crops[i], crops[j]
                    inter = np.logical_and(ci, cj).sum()
                    if inter and inter / np.logical_or(ci, cj).sum() >= match_iou:
                        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    keep, merged = [], []
    iou = records.iou.numpy()
    for members in groups.values():
        whole = [i for i in members if not records.cut[i]]
        if len(members) == 1 or whole:
            keep.append(max(whole or members, key=lambda i: iou[i]))
            continue
        regs = records.regions[members]
        x0, y0 = int(regs[:, 0].min()), int(regs[:, 1].min())
        x1, y1 = int(regs[:, 2].max()), int(regs[:, 3].max())
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        for i in members:
            rx0, ry0, rx1, ry1 = (int(v) for v in records.regions[i])
            mask[ry0 - y0:ry1 - y0, rx0 - x0:rx1 - x0] |= records.mask(i)
        best = max(members, key=lambda i: iou[i])
        merged.append(MaskRecords(
            rles=encode_rles(mask[None]), regions=np.array([[x0, y0, x1, y1]], np.int64),
            boxes=masks_to_boxes(torch.from_numpy(mask)[None]) + torch.tensor([[x0, y0, x0, y0]]),
            iou=records.iou[members].mean().reshape(1), stability=records.stability[members].min().reshape(1),
            points=records.points[best][None], crop_boxes=np.array([[x0, y0, x1, y1]], np.int64),
            cut=np.zeros(1, bool), tile=np.full(1, -1, np.int64)))
    kept = records.select(torch.tensor(sorted(keep), dtype=torch.long))
    kept.boxes = kept.boxes.long()
    out = MaskRecords.cat([kept, *merged])
    return out.nms(out.iou, nms_thresh)


def _crop_to(records: Any, i: int, r: Box) -> np.ndarray:
    """Mask i (over its region) cut to the image-frame box ``r`` (x1, y1 exclusive)."""
    rx0, ry0, _, _ = (int(v) for v in records.regions[i])
    m = records.mask(i)
    return m[r[1] - ry0:r[3] - ry0, r[0] - rx0:r[2] - rx0]
