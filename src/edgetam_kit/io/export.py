"""Writing results for other software: label images (TIFF), COCO instances JSON with RLE
masks, and OME-Zarr (NGFF 0.4) images with a labels group.

Every writer takes a list of ``MaskSet`` (one per image) and an output path, and returns
the paths it wrote. ``export_masks(items, out, format)`` picks the writer by name among the
exporters that plugins register through the ``edgetam_kit_exporters`` hook (the three here
are registered that way too), so a plugin can add a format without touching this module.

Label images are uint32, 0 = background, object i (1-based, in the order of the
annotations: largest first for ``AutoMaskGenerator`` output) = i. Where masks overlap the
later (smaller) one wins, so small objects stay visible on top of large ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import report
from .atomic import atomic_output

OME_NGFF_VERSION = "0.4"
LABEL_NAME = "masks"


@dataclass
class MaskSet:
    """The masks of one image.

    name: the image's name (file name for COCO, stem for per-image files);
    size: (H, W); annotations: ``AutoMaskGenerator`` records (``segmentation`` bool HxW or
    COCO RLE; ``predicted_iou`` etc. carried into COCO when present), or plain bool masks;
    image: the pixels (HxW or HxWxC), written by formats that store them (OME-Zarr);
    stem: the file stem per-image formats write (``<stem>.tif``); None: from ``name`` by
    ``file_stems`` (the name's stem, or the whole name where two stems would clash).
    random_weights: the random checkpoint (``random:tiny``, ...) that made the masks, or None for
    real weights; the built-in formats then write ``random_note`` into their metadata.
    """

    name: str
    size: tuple[int, int]
    annotations: Sequence[Any]
    image: np.ndarray | None = None
    stem: str | None = None
    random_weights: str | None = None


WEIGHTS_KEY = "edgetam_weights"  # the metadata key (TIFF description, zarr attrs, COCO info) of the note


def random_note(label: str) -> str:
    """The label written on every output made with random weights (``label``: e.g. ``random:tiny``)."""
    return f"RANDOM weights ({label}): outputs are not meaningful"


def _note(items: Sequence[MaskSet]) -> str | None:
    labels = sorted({i.random_weights for i in items if i.random_weights})
    return random_note(", ".join(labels)) if labels else None


def file_stems(names: Sequence[str]) -> list[str]:
    """Unique output file stems for image ``names``: each name's stem (``a.png`` -> ``a``), except
    where stems clash (compared case-insensitively, as macOS and Windows do): those keep their
    suffix (``a.png`` -> ``a.png``, ``a.jpg`` -> ``a.jpg``), so no image overwrites another's file.
    ValueError naming the clash when names are empty or still ambiguous."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or Path(name).stem in ("", ".", ".."):
            raise ValueError(f"items[{i}].name must be a non-empty file name (e.g. 'cells.png'), got {name!r}")
    stems = [Path(n).stem for n in names]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    stems = [Path(n).name if counts[s.casefold()] > 1 else s for n, s in zip(names, stems)]
    return _unique(stems, names)


def _unique(stems: list[str], names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    for i, s in enumerate(stems):
        if not isinstance(s, str) or s in ("", ".", "..") or "/" in s or os.sep in s:
            raise ValueError(f"items[{i}].stem must be a file name without folders, got {s!r}")
        if s.casefold() in seen:
            j = seen[s.casefold()]
            raise ValueError(f"items: {names[j]!r} and {names[i]!r} would both be written as {s!r} (file names "
                             "are compared case-insensitively); rename one, or give each MaskSet a distinct stem")
        seen[s.casefold()] = i
    return stems


def _mask_of(ann: Any, size: tuple[int, int], where: str) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation") if isinstance(ann, dict) else ann
    if isinstance(seg, dict):
        m = _decode_rle(seg, size, where)
    else:
        m = np.asarray(seg)
        if m.dtype != bool:
            m = m > 0
    if m.shape != tuple(size):
        raise ValueError(f"{where}: mask shape {m.shape} does not match the image size {tuple(size)} (H, W)")
    return m


def _decode_rle(rle: dict[str, Any], size: tuple[int, int], where: str) -> np.ndarray:
    """A COCO RLE (counts a list of run lengths or a compressed string) as a bool (H, W) mask;
    ValueError naming ``where`` when it is not a valid RLE of ``size``."""
    from pycocotools import mask as mask_utils

    counts, rle_size = rle.get("counts"), rle.get("size")
    form = f"{where}: segmentation must be a COCO RLE {{'size': [H, W], 'counts': ...}} of the image's size"
    try:
        h, w = (int(v) for v in rle_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{form}; got size {rle_size!r}") from None
    if (h, w) != tuple(size):
        raise ValueError(f"{form} {tuple(size)}; got size {[h, w]}")
    if isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in counts) \
                or sum(int(c) for c in counts) != h * w:
            raise ValueError(f"{form}: run lengths (non-negative ints) must add up to H * W = {h * w}, got "
                             f"{sum(int(c) for c in counts if isinstance(c, (int, np.integer)))}")
        enc = mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
    elif isinstance(counts, (str, bytes)):
        raw = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
        runs = _string_runs(raw)
        if runs is None or min(runs, default=0) < 0 or sum(runs) != h * w:
            raise ValueError(f"{form}: compressed counts {counts[:40]!r} do not describe an {h}x{w} mask")
        enc = {"size": [h, w], "counts": raw}
    else:
        raise ValueError(f"{form}: counts must be a list of run lengths or a compressed string, got "
                         f"{type(counts).__name__}")
    try:
        m = mask_utils.decode(enc).astype(bool)
    except Exception as exc:  # pycocotools: "Invalid RLE mask representation"
        raise ValueError(f"{form}: {exc}") from None
    return m


def _string_runs(s: bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), or None when
    it is malformed (pycocotools itself decodes some garbage into out-of-range masks)."""
    runs: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s) or not 48 <= s[p] < 48 + 64:
                return None
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays (e.g. float32 scores) as plain Python for json."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _rle_of(ann: Any, mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation") if isinstance(ann, dict) else None
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        return {"size": list(seg["size"]), "counts": seg["counts"]}
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _check_items(items: Any) -> list[MaskSet]:
    if isinstance(items, MaskSet):
        return [items]
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not all(isinstance(i, MaskSet) for i in items):
        raise TypeError("items must be a MaskSet or a list of MaskSet (name, size, annotations[, image])")
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise ValueError(f"items: image names must be unique (they name the output files), got {names}")
    auto = file_stems(names)
    stems = _unique([auto[k] if i.stem is None else i.stem for k, i in enumerate(items)], names)
    return [i if i.stem == s else replace(i, stem=s) for i, s in zip(items, stems)]


def labels_from_annotations(annotations: Sequence[Any], size: tuple[int, int]) -> np.ndarray:
    """uint32 (H, W) label image: annotation i -> label i + 1, later ones painted on top."""
    labels = np.zeros(tuple(size), np.uint32)
    for i, ann in enumerate(annotations):
        labels[_mask_of(ann, size, f"annotations[{i}]")] = i + 1
    return labels


def _out_files(items: list[MaskSet], out: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """One file per image: ``out`` itself for one image when it has the suffix, else out/<name><suffix>."""
    if len(items) == 1 and out.suffix.lower() in suffixes:
        return [out]
    if out.suffix.lower() in suffixes:
        raise ValueError(f"out: {out} names one file but there are {len(items)} images; give a folder")
    return [out / f"{i.stem}{suffixes[0]}" for i in items]


# ----------------------------------------------------------------------------- TIFF
def write_label_tiff(items: Any, out: str | os.PathLike, progress: Any = None) -> list[Path]:
    """uint32 label image per image, zlib-compressed TIFF (``out`` = file.tif or a folder)."""
    import tifffile

    items = _check_items(items)
    files = _out_files(items, Path(out), (".tif", ".tiff"))
    for k, (item, path) in enumerate(zip(items, files)):
        labels = labels_from_annotations(item.annotations, item.size)
        meta = {"axes": "YX", **({WEIGHTS_KEY: random_note(item.random_weights)} if item.random_weights else {})}
        with atomic_output(path) as tmp:
            tifffile.imwrite(tmp, labels, compression="zlib", metadata=meta)
        report(progress, k + 1, len(items))
    return files


# ----------------------------------------------------------------------------- COCO
def coco_dict(items: Any, category: str = "object") -> dict[str, Any]:
    """COCO instances dict: images, annotations (RLE segmentation, COCO bbox, area) and one category."""
    from pycocotools import mask as mask_utils

    items = _check_items(items)
    images, anns = [], []
    for image_id, item in enumerate(items, start=1):
        h, w = (int(v) for v in item.size)
        images.append({"id": image_id, "file_name": item.name, "height": h, "width": w})
        for i, ann in enumerate(item.annotations):
            mask = _mask_of(ann, (h, w), f"{item.name}: annotations[{i}]")
            rle = _rle_of(ann, mask)
            enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            record: dict[str, Any] = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle,
                "area": float(mask_utils.area(enc)),
                "bbox": [float(v) for v in mask_utils.toBbox(enc)],
                "iscrowd": 0,
            }
            if isinstance(ann, dict):
                if "predicted_iou" in ann:
                    record["score"] = float(ann["predicted_iou"])
                for key in ("predicted_iou", "stability_score", "point_coords"):
                    if key in ann:
                        record[key] = _jsonable(ann[key])
            anns.append(record)
    note = _note(items)
    info = {"description": f"EdgeTAM masks from {note}" if note else "EdgeTAM masks", "version": "1.0",
            **({WEIGHTS_KEY: note} if note else {})}
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }


def write_coco(items: Any, out: str | os.PathLike, progress: Any = None) -> list[Path]:
    """One COCO instances JSON for all images (``out`` = file.json, or a folder for
    out/annotations.json)."""
    out = Path(out)
    path = out if out.suffix.lower() == ".json" else out / "annotations.json"
    data = coco_dict(items)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data))
    report(progress, 1, 1)
    return [path]


# ----------------------------------------------------------------------------- OME-Zarr
def _pyramid(arr: np.ndarray, min_side: int = 64, max_levels: int = 6) -> list[np.ndarray]:
    """Level 0 and 2x nearest-neighbour downsamplings (labels stay labels) while the
    smaller side stays >= ``min_side``."""
    levels = [arr]
    while len(levels) < max_levels and min(levels[-1].shape[-2:]) // 2 >= min_side:
        levels.append(levels[-1][..., ::2, ::2])
    return levels


def _multiscales(name: str, axes: list[dict[str, str]], n_levels: int, spatial_dims: int) -> list[dict[str, Any]]:
    lead = [1.0] * (len(axes) - spatial_dims)
    return [{
        "version": OME_NGFF_VERSION,
        "name": name,
        "axes": axes,
        "datasets": [
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": lead + [float(2**i)] * spatial_dims}]}
            for i in range(n_levels)
        ],
        "type": "nearest",
    }]


def _write_levels(group: Any, levels: list[np.ndarray], chunk: int = 512) -> None:
    for i, level in enumerate(levels):
        chunks = tuple(min(s, chunk) if d >= level.ndim - 2 else 1 for d, s in enumerate(level.shape))
        arr = group.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=chunks,
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
        arr[...] = level


def _write_zarr_item(tmp: Path, item: MaskSet, labels: np.ndarray) -> None:
    """One image's OME-Zarr group at ``tmp`` (renamed into place by the caller)."""
    import zarr

    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    yx = [{"name": "y", "type": "space", "unit": "pixel"}, {"name": "x", "type": "space", "unit": "pixel"}]
    if item.image is not None:
        img = np.asarray(item.image)
        if img.shape[:2] != tuple(item.size):
            raise ValueError(f"{item.name}: image shape {img.shape} does not match size {tuple(item.size)}")
        axes = yx if img.ndim == 2 else [{"name": "c", "type": "channel"}] + yx
        data = img if img.ndim == 2 else np.moveaxis(img, -1, 0)
        levels = _pyramid(np.ascontiguousarray(data))
        _write_levels(root, levels)
        root.attrs["multiscales"] = _multiscales(item.name, axes, len(levels), 2)
        label_axes = yx if img.ndim == 2 else axes
        label_data = labels if img.ndim == 2 else labels[None]
    else:
        label_axes, label_data = yx, labels
    if item.random_weights:
        root.attrs[WEIGHTS_KEY] = random_note(item.random_weights)
    labels_group = root.require_group("labels")
    labels_group.attrs["labels"] = [LABEL_NAME]
    lg = labels_group.require_group(LABEL_NAME)
    levels = _pyramid(label_data)
    _write_levels(lg, levels)
    lg.attrs["multiscales"] = _multiscales(LABEL_NAME, label_axes, len(levels), 2)
    lg.attrs["image-label"] = {
        "version": OME_NGFF_VERSION,
        "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}],
        "source": {"image": "../../"},
    }


def write_ome_zarr(items: Any, out: str | os.PathLike, progress: Any = None) -> list[Path]:
    """OME-Zarr (NGFF 0.4, zarr v2 format) per image: the image as a multiscale pyramid when
    given (axes c, y, x or y, x) and ``labels/masks`` as a multiscale uint32 label image with
    ``image-label`` metadata. ``out`` = image.zarr (one image) or a folder."""
    items = _check_items(items)
    files = _out_files(items, Path(out), (".zarr", ".ome.zarr"))
    for k, (item, path) in enumerate(zip(items, files)):
        labels = labels_from_annotations(item.annotations, item.size)
        with atomic_output(path) as tmp:
            _write_zarr_item(tmp, item, labels)
        report(progress, k + 1, len(items))
    return files


# ----------------------------------------------------------------------------- by name
def exporters() -> dict[str, Any]:
    """Exporters by name, from every plugin (built-ins included)."""
    from ..plugins.manager import get_plugin_manager

    return get_plugin_manager().exporters()


def export_masks(items: Any, out: str | os.PathLike, format: str = "coco", progress: Any = None) -> list[Path]:
    """Write ``items`` (MaskSet or list) to ``out`` with the exporter named ``format``."""
    from .plugin_guard import write_masks  # a failing plugin exporter: reported, the built-in writes

    if not isinstance(format, str):
        raise TypeError(f"format must be an exporter name (str), e.g. 'coco', got {format!r}")
    return write_masks(format, _check_items(items), Path(out), progress=progress)
