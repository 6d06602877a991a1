"""Rich display in Jupyter: small HTML and PNG views of results, models and caches.

Every view is a ``Description`` (a title, named numbers, an optional thumbnail) built from
thumbnails only (longest side ``THUMB`` pixels; montage tiles ``TILE``), so it is small and fast
whatever the size of the result. ``describe(obj)`` works for a ``Prediction``, a list of them, an
``AutoMasks``/``TrackResult``/``Predictions`` (``engine.results``), a model (``EdgeTam``) and an
``EmbeddingCache``. Models and caches live below the engine and cannot import it: their HTML is
registered with IPython by ``register_formatters()`` (``%load_ext edgetam_kit.notebook`` calls it);
without it, ``ek.describe(model)`` shows the same view.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .display import grid, overlay, thumb_shape

THUMB = 256  # longest side of a result's thumbnail (pixels)
TILE = 128  # longest side of one montage tile
MAX_TILES = 8  # frames or predictions shown at most


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 array as PNG (8-bit RGB, no dependency beyond zlib)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3 uint8, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    rows = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0 (None) on each row
    rows[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def img_tag(rgb: np.ndarray, alt: str = "") -> str:
    """An <img> holding ``rgb`` as a base64 PNG, with its width and height."""
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{rgb.shape[1]}" height="{rgb.shape[0]}" '
            f'alt="{html.escape(alt)}" style="image-rendering:pixelated;max-width:none"/>')


def fmt(value: Any) -> str:
    """How numbers are written in every view: floats with 4 decimals, the rest as str."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


@dataclass
class Description:
    """What a rich view shows: ``title``, ``fields`` (name -> number or text, shown as
    ``fmt`` writes them), ``table`` (header, rows) and an optional ``image`` (hxwx3 uint8 thumbnail)."""

    title: str
    fields: dict[str, Any] = field(default_factory=dict)
    table: tuple[list[str], list[list[Any]]] | None = None
    image: np.ndarray | None = None

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={fmt(v)}" for k, v in self.fields.items())
        return f"{self.title}({inner})"

    def _repr_png_(self) -> bytes | None:
        return None if self.image is None else png_bytes(self.image)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>{esc(fmt(v))}</td></tr>"
                       for k, v in self.fields.items())
        parts = [f"<div class='edgetam-kit'><b>{esc(self.title)}</b>",
                 "<div style='display:flex;gap:12px;align-items:flex-start'>"]
        if self.image is not None:
            parts.append(f"<div>{img_tag(self.image, self.title)}</div>")
        parts.append(f"<div><table>{rows}</table>")
        if self.table is not None:
            header, body = self.table
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
            lines = "".join("<tr>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in r) + "</tr>" for r in body)
            parts.append(f"<table><tr>{head}</tr>{lines}</table>")
        parts.append("</div></div></div>")
        return "".join(parts)


def _is_prediction(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("masks", "scores", "logits", "object_score"))


def describe_prediction(pred: Any, image: Any = None) -> Description:
    """Candidates side by side (the best one first in the table), scores and best index."""
    masks = np.asarray(pred.masks)
    k, h, w = masks.shape
    scores = [float(s) for s in np.asarray(pred.scores).reshape(-1)]
    best = int(np.argmax(scores)) if scores else -1
    side = THUMB if k <= 1 else max(TILE, THUMB // k)
    tiles = [overlay(image, masks[i], ids=[i + 1], max_side=side) for i in range(k)]
    return Description(
        "Prediction",
        {"masks": k, "size (w x h)": f"{w} x {h}", "best": best, "scores": scores,
         "object_score": float(pred.object_score), "present": bool(float(pred.object_score) > 0)},
        (["mask", "predicted IoU", "area (px)"], [[i, scores[i], int(masks[i].sum())] for i in range(k)]),
        grid(tiles, columns=k) if tiles else None)


def describe_predictions(preds: Any, image: Any = None) -> Description:
    """One row per prediction (its best mask), thumbnails of the first ``MAX_TILES``."""
    rows, tiles = [], []
    for i, p in enumerate(preds):
        b = p.best
        rows.append([i, b, float(p.scores[b]), float(p.object_score), int(np.asarray(p.masks[b]).sum())])
        if i < MAX_TILES:
            tiles.append(overlay(image, p.masks[b], ids=[i + 1], max_side=TILE))
    return Description(f"{len(rows)} predictions", {"predictions": len(rows)},
                       (["#", "best", "predicted IoU", "object score", "area (px)"], rows),
                       grid(tiles) if tiles else None)


def area_histogram(areas: Any, bins: int = 8) -> tuple[list[int], list[int]]:
    """(counts, edges) of mask areas in ``bins`` log-spaced bins (pixels)."""
    a = np.asarray(areas, dtype=np.float64)
    if a.size == 0:
        return [], []
    lo, hi = max(a.min(), 1.0), max(a.max(), 1.0)
    edges = np.unique(np.round(np.geomspace(lo, hi * 1.000001, bins + 1)).astype(np.int64))
    if len(edges) < 2:
        edges = np.array([int(lo), int(hi) + 1])
    counts, _ = np.histogram(a, bins=edges)
    return counts.astype(int).tolist(), edges.tolist()


def describe_automasks(anns: Any, image: Any = None) -> Description:
    """Overlay of every mask, count and the area histogram."""
    areas = [int(a["area"]) for a in anns]
    counts, edges = area_histogram(areas)
    rgb = None
    if len(anns):
        rgb = overlay(image, list(anns), max_side=THUMB)
    elif image is not None:
        rgb = overlay(image, None, max_side=THUMB)
    fields: dict[str, Any] = {"masks": len(anns)}
    if areas:
        fields.update({"area min": min(areas), "area median": float(np.median(areas)), "area max": max(areas)})
    table = (["area from (px)", "area to (px)", "masks"],
             [[edges[i], edges[i + 1], counts[i]] for i in range(len(counts))])
    return Description("Automatic masks", fields, table, rgb)


def describe_model(model: Any) -> Description:
    """Preset, image size, runtime backend, device, precision, video modules, parameter count."""
    rt = getattr(model, "runtime", None)
    autocast = getattr(rt, "autocast", None)
    dtype = str(model.dtype).replace("torch.", "")
    params = sum(int(p.numel()) for p in model.parameters())
    return Description("EdgeTam model", {
        "preset": getattr(model.config, "name", "?"), "image size": model.config.image_size,
        "runtime": getattr(rt, "backend", None) or "eager", "device": str(model.device),
        "precision": dtype if autocast is None else f"{dtype} (autocast {str(autocast).replace('torch.', '')})",
        "has video": bool(getattr(model, "has_video", False)), "parameters": params})


def describe_cache(cache: Any) -> Description:
    """Entries, size on disk (bytes, every file under the folder), path, storage precision,
    read-only, hits/misses."""
    size = sum(p.stat().st_size for p in cache.path.rglob("*") if p.is_file()) if cache.path.is_dir() else 0
    return Description("EmbeddingCache", {"path": str(cache.path), "entries": len(cache), "size on disk (bytes)": size,
                                          "size on disk": _human(size),
                                          "precision": getattr(cache, "precision", "fp32"), "readonly": cache.readonly,
                                          "hits": cache.hits, "misses": cache.misses})


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def describe(obj: Any, image: Any = None) -> Description:
    """The rich view of ``obj`` (renders as HTML/PNG in Jupyter, prints short text elsewhere).
    image: the image under a Prediction's or automatic masks' overlay (optional)."""
    if hasattr(obj, "_describe"):
        return obj._describe() if image is None else obj._describe(image=image)
    if _is_prediction(obj):
        return describe_prediction(obj, image)
    if isinstance(obj, (list, tuple)) and obj and all(_is_prediction(p) for p in obj):
        return describe_predictions(obj, image)
    if isinstance(obj, (list, tuple)) and all(isinstance(a, dict) and "segmentation" in a for a in obj):
        return describe_automasks(obj, image)
    from ..io.cache import EmbeddingCache
    from ..modeling import EdgeTam

    if isinstance(obj, EdgeTam):
        return describe_model(obj)
    if isinstance(obj, EmbeddingCache):
        return describe_cache(obj)
    raise TypeError(f"describe knows predictions, automatic masks, track results, models and embedding caches; "
                    f"got {type(obj).__name__}")


def register_formatters(ip: Any = None) -> bool:
    """Register HTML views of ``EdgeTam`` models and ``EmbeddingCache`` with IPython (the
    running shell, or ``ip``). Returns False outside IPython."""
    if ip is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        ip = get_ipython()
    if ip is None:
        return False
    from ..io.cache import EmbeddingCache
    from ..modeling import EdgeTam

    formatter = ip.display_formatter.formatters["text/html"]
    for kind in (EdgeTam, EmbeddingCache):
        formatter.for_type(kind, lambda obj: describe(obj)._repr_html_())
    return True


def thumbnail_shape(hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a single result's thumbnail for an image of ``hw``."""
    return thumb_shape(hw, THUMB)
