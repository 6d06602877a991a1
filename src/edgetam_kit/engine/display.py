"""Looking at results: mask overlays, montages of stacks and tracks, matplotlib display.

Colours: object id ``i`` (>= 1) gets napari's default Labels colour for ``i`` (the 49-colour
low-discrepancy cycle of ``napari.utils.colormaps.label_colormap(49, seed=0.5)``; a test checks
the table against napari), so an object has the same colour in every frame, in the notebook and
in the napari viewer. Images are normalised the way the engine normalises them
(``transforms.to_unit_rgb``: uint8 / 255, 16-bit and float by percentiles, HxW and HxWx1 as grey).
No matplotlib or napari is imported except by ``show``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..transforms import DEFAULT_PERCENTILES, _as_array, to_unit_rgb
from .masks import decode_rle

# napari's Labels colours for ids 1..49 (then cyclic), RGB uint8; id 0 is background.
NAPARI_LABEL_COLORS = np.array([
    [120, 37, 6], [91, 213, 248], [146, 137, 232], [108, 2, 193], [71, 58, 159], [171, 236, 138],
    [143, 173, 178], [134, 144, 154], [254, 247, 28], [247, 68, 59], [3, 78, 57], [113, 178, 96],
    [105, 149, 74], [60, 27, 135], [46, 71, 16], [92, 183, 222], [71, 157, 118], [71, 66, 88],
    [239, 86, 101], [184, 80, 123], [166, 42, 100], [241, 180, 236], [75, 30, 32], [180, 197, 62],
    [156, 96, 47], [138, 67, 27], [216, 190, 154], [180, 125, 189], [166, 94, 164], [96, 122, 52],
    [193, 227, 87], [215, 149, 85], [158, 135, 111], [0, 44, 235], [202, 230, 224], [225, 139, 30],
    [120, 240, 1], [123, 142, 15], [229, 221, 178], [171, 236, 138], [66, 216, 166], [70, 186, 142],
    [254, 247, 28], [247, 68, 59], [175, 75, 242], [176, 12, 63], [105, 149, 74], [246, 135, 167],
    [203, 50, 199]], dtype=np.uint8)
POSITIVE, NEGATIVE, BOX = (0, 230, 64), (255, 40, 40), (255, 215, 0)


def label_colors(ids: Any) -> np.ndarray:
    """RGB uint8 colours (N, 3) of object ids (N,): napari's Labels colours; id 0 is black."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if (ids < 0).any():
        raise ValueError(f"ids must be >= 0 (0 = background), got {ids[ids < 0][:5].tolist()}")
    out = NAPARI_LABEL_COLORS[(ids - 1) % len(NAPARI_LABEL_COLORS)]
    out[ids == 0] = 0
    return out


def sample_indices(n: int, size: int | None) -> np.ndarray:
    """Nearest-neighbour indices that shrink an axis of ``n`` pixels to ``size`` (never enlarge)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.minimum(((np.arange(size) + 0.5) * n / size).astype(np.int64), n - 1)


def thumb_shape(hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(h, w) of ``hw`` shrunk so the longer side is at most ``max_side`` (aspect kept)."""
    h, w = hw
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def display_rgb(image: Any, channels: Any = None, max_side: int | None = None,
                percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """HxW / HxWxC image (uint8, 16-bit, float, bool) -> HxWx3 uint8 as the engine sees it.
    ``max_side``: shrink first (nearest neighbour; percentiles from the shrunk image)."""
    arr = _as_array(image, "image")
    if arr.ndim in (2, 3) and max_side is not None:
        th, tw = thumb_shape(arr.shape[:2], max_side)
        arr = arr[sample_indices(arr.shape[0], th)][:, sample_indices(arr.shape[1], tw)]
    rgb = to_unit_rgb(arr, channels=channels, percentiles=percentiles, name="image")
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def decode_segmentation(seg: Any) -> np.ndarray:
    """An automatic mask's ``segmentation`` (bool HxW, or RLE: counts list, bytes or str) -> bool HxW."""
    if isinstance(seg, dict):
        counts = seg.get("counts")
        if isinstance(counts, list):
            from pycocotools import mask as mask_utils

            seg = mask_utils.frPyObjects(seg, *seg["size"])
        elif isinstance(counts, str):
            seg = {"size": seg["size"], "counts": counts.encode("ascii")}
        return decode_rle(seg)
    return np.asarray(seg, dtype=bool)


def as_masks(masks: Any, ids: Any = None, name: str = "masks") -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Normalise any mask form to ``(stack (N, H, W) bool, label image (H, W) or None, ids (N,))``.

    Accepted: (H, W) bool; (N, H, W) bool; (H, W) integer label image (0 = background, ids are
    its values); a ``Prediction`` (its best mask); a prompt result with ``.mask``; a list of
    automatic-mask dicts (``segmentation`` as bool array or RLE); a list of (H, W) bool masks.
    """
    if masks is None:
        return None, None, np.zeros(0, np.int64)
    if hasattr(masks, "scores") and hasattr(masks, "masks") and hasattr(masks, "best"):  # Prediction
        masks = np.asarray(masks.masks)[masks.best][None]
    elif hasattr(masks, "mask") and not isinstance(masks, np.ndarray):  # tracking PromptResult
        masks = np.asarray(masks.mask)[None]
    elif isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            return None, None, np.zeros(0, np.int64)
        if all(isinstance(a, dict) and "segmentation" in a for a in masks):
            masks = [decode_segmentation(a["segmentation"]) for a in masks]
        masks = np.stack([np.asarray(m, dtype=bool) for m in masks])
    arr = _as_array(masks, name)
    if arr.ndim == 2 and arr.dtype.kind in "iu":
        if ids is not None:
            raise ValueError(f"ids is not used with a label image {name}: its values are the ids")
        return None, arr, np.unique(arr[arr > 0]).astype(np.int64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W) bool, (N, H, W) bool or an (H, W) integer label image, got shape {arr.shape}")
    arr = arr.astype(bool, copy=False)
    if ids is None:
        ids = np.arange(1, len(arr) + 1)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(arr):
        raise ValueError(f"ids must give one id per mask: {len(arr)} masks, {len(ids)} ids")
    return arr, None, ids


def _shrunk_list(masks: Sequence[Any], max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A list of masks (bool arrays or automatic-mask dicts, RLE or not) as an (N, h, w) stack of
    thumbnails, decoding one at a time (never N full-size masks at once); and their full (H, W)."""
    small, full = [], None
    for i, m in enumerate(masks):
        if isinstance(m, dict) and "segmentation" in m:
            m = m["segmentation"]
        m = decode_segmentation(m)
        if m.ndim != 2 or (full is not None and m.shape != full):
            raise ValueError(f"masks[{i}] has shape {m.shape}; every mask must be (H, W) of one size")
        full = m.shape
        th, tw = thumb_shape(full, max_side)
        small.append(m[sample_indices(full[0], th)][:, sample_indices(full[1], tw)])
    return np.stack(small), (int(full[0]), int(full[1]))


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool (H, W) mask (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _disc(out: np.ndarray, x: float, y: float, r: int, color: Sequence[int]) -> None:
    h, w = out.shape[:2]
    yy, xx = np.ogrid[max(0, int(y) - r - 1):min(h, int(y) + r + 2), max(0, int(x) - r - 1):min(w, int(x) + r + 2)]
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    region = out[yy.min():yy.max() + 1, xx.min():xx.max() + 1] if yy.size and xx.size else None
    if region is None:
        return
    region[d2 <= (r + 1) ** 2] = (255, 255, 255)
    region[d2 <= r ** 2] = color


def _rect(out: np.ndarray, box: Sequence[float], t: int, color: Sequence[int]) -> None:
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = sorted((min(max(x0, 0), w - 1), min(max(x1, 0), w - 1)))
    y0, y1 = sorted((min(max(y0, 0), h - 1), min(max(y1, 0), h - 1)))
    out[y0:y0 + t, x0:x1 + 1] = color
    out[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = color
    out[y0:y1 + 1, x0:x0 + t] = color
    out[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = color


def overlay(image: Any, masks: Any = None, points: Any = None, boxes: Any = None, ids: Any = None, *,
            point_labels: Any = None, alpha: float = 0.5, contours: bool = True, channels: Any = None,
            max_side: int | None = None) -> np.ndarray:
    """Masks (and prompts) drawn over ``image``; returns HxWx3 uint8.

    image: HxW or HxWxC (uint8, 16-bit, float), or None for a black background.
    masks: see ``as_masks`` ((H, W) / (N, H, W) bool, label image, Prediction, automatic masks).
    points: (P, 2) (x, y) pixels; point_labels (P,) 1 = positive (green), 0 = negative (red).
    boxes: (4,) or (B, 4) (x0, y0, x1, y1) pixels, drawn in yellow.
    ids: object id per mask (default 1..N); colours are napari's Labels colours of the ids.
    max_side: shrink to this longest side first (points and boxes are scaled along).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha!r}")
    full_hw = None
    if max_side is not None and isinstance(masks, (list, tuple)) and masks:  # shrink one mask at a time
        masks, full_hw = _shrunk_list(masks, max_side)
    stack, label, ids = as_masks(masks, ids)
    mhw = stack.shape[1:] if stack is not None else (label.shape if label is not None else None)
    if full_hw is not None:
        mhw = full_hw
    if image is None:
        if mhw is None:
            raise ValueError("overlay needs an image or masks to know the size; got neither")
        h, w = thumb_shape(mhw, max_side)
        rgb = np.zeros((h, w, 3), np.uint8)
    else:
        rgb = display_rgb(image, channels=channels, max_side=max_side)
        arr_hw = _as_array(image, "image").shape[:2]
        if mhw is not None and tuple(mhw) != tuple(arr_hw):
            raise ValueError(f"masks are {mhw[1]}x{mhw[0]} but image is {arr_hw[1]}x{arr_hw[0]}: give masks at the image's size")
        mhw = arr_hw
    h, w = rgb.shape[:2]
    if mhw is not None and (h, w) != tuple(mhw):  # shrink masks like the image
        ry, rx = sample_indices(mhw[0], h), sample_indices(mhw[1], w)
        if stack is not None and full_hw is None:
            stack = stack[:, ry][:, :, rx]
        label = None if label is None else label[ry][:, rx]
    sy, sx = (h / mhw[0], w / mhw[1]) if mhw is not None else (1.0, 1.0)
    out = rgb.astype(np.float32)
    if label is not None:
        fg = label > 0
        colors = label_colors(label[fg]).astype(np.float32)
        out[fg] = (1 - alpha) * out[fg] + alpha * colors
        if contours:
            edge = np.zeros_like(fg)
            edge[1:] |= label[1:] != label[:-1]
            edge[:-1] |= label[:-1] != label[1:]
            edge[:, 1:] |= label[:, 1:] != label[:, :-1]
            edge[:, :-1] |= label[:, :-1] != label[:, 1:]
            edge &= fg
            out[edge] = label_colors(label[edge])
    elif stack is not None:
        for m, color in zip(stack, label_colors(ids).astype(np.float32)):
            out[m] = (1 - alpha) * out[m] + alpha * color
            if contours:
                out[_edges(m)] = color
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    t = max(1, min(h, w) // 256)
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        for box in b:
            _rect(out, box * [sx, sy, sx, sy], t, BOX)
    if points is not None:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.ones(len(p), int) if point_labels is None else np.asarray(point_labels).reshape(-1)
        if len(lab) != len(p):
            raise ValueError(f"point_labels must give one label per point: {len(p)} points, {len(lab)} labels")
        for (x, y), lb in zip(p, lab):
            _disc(out, x * sx, y * sy, max(2, min(h, w) // 100), POSITIVE if lb else NEGATIVE)
    return out


def grid(tiles: Sequence[np.ndarray], columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tiles (each hxwx3 uint8, any sizes) in rows of ``columns``, on a white background."""
    if not tiles:
        raise ValueError("grid needs at least one tile")
    n = len(tiles)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    out = np.full((rows * th + (rows - 1) * gap, columns * tw + (columns - 1) * gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (th + gap):r * (th + gap) + t.shape[0], c * (tw + gap):c * (tw + gap) + t.shape[1]] = t
    return out


def montage(frames: Any, masks: Any = None, every: int = 1, *, ids: Any = None, columns: int | None = None,
            max_side: int | None = None, channels: Any = None, alpha: float = 0.5) -> np.ndarray:
    """Frames ``0, every, 2*every, ...`` of a stack or track, overlaid and laid out in a grid.

    frames: (T, H, W[, C]) array, a sequence of images, a ``FrameSource``, or None (black).
    masks: per frame, anything ``overlay`` takes: a (T, H, W) label stack, a (T, N, H, W) bool
    array, a list of per-frame masks, a ``TrackResult`` (its frames' masks and ids), or None.
    ids: object ids of the N masks of every frame (a TrackResult gives its own).
    max_side: longest side of each tile (thumbnails); columns: tiles per row (default: square).
    Returns one HxWx3 uint8 image.
    """
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    per_frame_ids = None
    if hasattr(masks, "frame_masks") and hasattr(masks, "frames"):  # TrackResult
        track = masks
        indices = list(track.frames)[::every]
        per_frame = [track.frame_masks(f) for f in indices]
        per_frame_ids, masks_list = [p[0] for p in per_frame], [p[1] for p in per_frame]
        if frames is None and getattr(track, "source", None) is not None:
            frames = track.source
    else:
        n = len(frames) if frames is not None else len(masks)
        indices = list(range(0, n, every))
        masks_list = [None if masks is None else masks[i] for i in indices]
    if not indices:
        raise ValueError("montage has no frames to show")
    tiles = []
    for k, f in enumerate(indices):
        image = None if frames is None else (frames.frame(f) if hasattr(frames, "frame") else frames[f])
        tile_ids = per_frame_ids[k] if per_frame_ids is not None else ids
        m = masks_list[k]
        if m is not None and not isinstance(m, (list, tuple)) and np.asarray(m).ndim == 2 \
                and np.asarray(m).dtype.kind in "iu":
            tile_ids = None  # a label image carries its ids
        tiles.append(overlay(image, m, ids=tile_ids, max_side=max_side, channels=channels, alpha=alpha))
    return grid(tiles, columns)


def show(image: Any = None, masks: Any = None, points: Any = None, boxes: Any = None, ids: Any = None, *,
         ax: Any = None, title: str | None = None, figsize: tuple[float, float] | None = None, **kwargs: Any) -> Any:
    """Draw with matplotlib: ``overlay(image, masks, points, boxes, ids, **kwargs)``, an HxWx3 array,
    or a result with ``render()`` (``TrackResult``, ``AutoMasks``, ``Predictions``). Returns the axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ek.show needs matplotlib: pip install matplotlib (or use ek.overlay for the array)") from e
    if hasattr(image, "render") and masks is None:
        rgb = image.render(**kwargs)
    elif masks is None and points is None and boxes is None and isinstance(image, np.ndarray) \
            and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        rgb = image
    else:
        rgb = overlay(image, masks, points, boxes, ids, **kwargs)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (6, 6 * rgb.shape[0] / max(rgb.shape[1], 1)))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
