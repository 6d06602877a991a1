"""Training records from a COCO instance-segmentation json (``read_coco``).

Each image of ``images`` becomes one ``TrainImage`` named by its file stem (as the folder reader
names them), with one (H, W) bool mask per non-crowd annotation: RLE (compressed string counts or
uncompressed list counts) or polygons in pixel coordinates, decoded with ``pycocotools``. COCO
masks may overlap; each is kept whole. Images without annotations are kept with zero masks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .data import TrainImage, _read_array, canonical_order


def record_from_masks(name: str, image: np.ndarray, masks: list[np.ndarray], min_area: int) -> TrainImage:
    """A record from an image (H, W[, C]) and full-size (H, W) bool masks: masks with fewer than
    ``min_area`` pixels dropped, the rest in canonical order (N, H, W)."""
    h, w = check_image(name, image)
    kept = [m for m in masks if int(m.sum()) >= min_area]
    if not kept:
        return TrainImage(name, image, np.zeros((0, h, w), bool))
    return TrainImage(name, image, canonical_order(np.stack(kept)))


def check_image(name: str, image: np.ndarray) -> tuple[int, int]:
    """(H, W) of an (H, W) or (H, W, C) image; ValueError naming ``data`` otherwise."""
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"data: image {name} must be (H, W) or (H, W, C), got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"data: cannot read {path} as json ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise ValueError(f"data: {path} is not a COCO instance file (it needs the lists 'images' and 'annotations')")
    return doc


def _image_path(file_name: str, roots: list[Path], json_path: Path, default_roots: bool) -> Path:
    for root in roots:
        if (root / file_name).is_file():
            return root / file_name
    tried = ", ".join(str(r / file_name) for r in roots)
    hint = ("file names are read relative to the json's folder, then its images/ folder" if default_roots
            else "file names are read relative to image_root")
    raise ValueError(f"data: image file {file_name!r} of {json_path} not found (tried {tried}); {hint}")


def _check_size(size: Any, hw: tuple[int, int], where: str) -> None:
    if not isinstance(size, (list, tuple)) or len(size) != 2 or [int(v) for v in size] != list(hw):
        raise ValueError(f"data: {where} has an RLE of size {size!r} (height, width), "
                         f"but its image is {hw[0]} x {hw[1]}")


def decode_segmentation(seg: Any, hw: tuple[int, int], where: str) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict or list of polygons [x0, y0, x1, y1, ...] in pixels)
    -> (H, W) bool mask. ``where`` names the annotation in errors."""
    from pycocotools import mask as mask_utils

    h, w = hw
    if isinstance(seg, dict) and "counts" in seg:
        _check_size(seg.get("size"), hw, where)
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE: run lengths, column-major, starting with 0s
            if not all(isinstance(c, (int, np.integer)) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise ValueError(f"data: {where} has uncompressed RLE counts that do not sum to {h} x {w} pixels")
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"data: {where} has RLE counts of type {type(counts).__name__}; "
                             "expected a string (compressed) or a list of ints")
        try:
            decoded = mask_utils.decode(rle)
        except Exception as exc:  # noqa: BLE001 - pycocotools raises bare Exceptions for bad strings
            raise ValueError(f"data: {where} has an RLE that cannot be decoded ({exc})") from exc
        return np.ascontiguousarray(decoded, dtype=bool)
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        out = np.zeros((h, w), bool)
        for poly in seg:
            if len(poly) < 6 or len(poly) % 2 or not all(isinstance(v, (int, float)) for v in poly):
                raise ValueError(f"data: {where} has a polygon that is not [x0, y0, x1, y1, ...] with >= 3 points")
            rles = mask_utils.frPyObjects([[float(v) for v in poly]], h, w)
            out |= mask_utils.decode(rles)[..., 0].astype(bool)
        return out
    kind = type(seg).__name__ if not isinstance(seg, dict) else f"dict with keys {sorted(seg)}"
    raise ValueError(f"data: {where} has a segmentation of unknown form ({kind}); expected an RLE "
                     "{'size': [h, w], 'counts': ...} or a list of polygons")


def read_coco(path: str | os.PathLike, min_area: int = 16, image_root: str | os.PathLike | None = None
              ) -> list[TrainImage]:
    """Records of the COCO json ``path``. Images are ``image_root / file_name`` (default: the
    json's folder, then ``<json folder>/images/``); ``iscrowd`` annotations are skipped; masks
    with fewer than ``min_area`` pixels dropped. ValueError naming ``data`` for a missing image,
    an unknown image id, an unreadable segmentation or an RLE of the wrong size."""
    from ..io.sources import _natural_key

    json_path = Path(path).expanduser()
    doc = _load_json(json_path)
    roots = [Path(image_root).expanduser()] if image_root is not None else [json_path.parent,
                                                                            json_path.parent / "images"]
    infos: dict[Any, dict[str, Any]] = {}
    for info in doc["images"]:
        if not isinstance(info, dict) or "id" not in info or not isinstance(info.get("file_name"), str):
            raise ValueError(f"data: {json_path} has an image entry without 'id' and 'file_name': {info!r:.200}")
        infos[info["id"]] = info
    by_image: dict[Any, list[dict[str, Any]]] = {i: [] for i in infos}
    for ann in doc["annotations"]:
        if not isinstance(ann, dict):
            raise ValueError(f"data: {json_path} has an annotation that is not an object: {ann!r:.200}")
        if ann.get("image_id") not in infos:
            raise ValueError(f"data: annotation {ann.get('id')!r} of {json_path} refers to image id "
                             f"{ann.get('image_id')!r}, which is not in 'images'")
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    records = []
    for image_id, info in infos.items():
        file = _image_path(info["file_name"], roots, json_path, image_root is None)
        image = _read_array(file)
        hw = check_image(str(file), image)
        if ("height" in info and "width" in info) and (int(info["height"]), int(info["width"])) != hw:
            raise ValueError(f"data: image {info['file_name']!r} of {json_path} is {hw[0]} x {hw[1]} pixels, "
                             f"but the json says {info['height']} x {info['width']}")
        masks = [decode_segmentation(ann.get("segmentation"), hw,
                                     f"annotation {ann.get('id')!r} (image {info['file_name']!r}) of {json_path}")
                 for ann in by_image[image_id]]
        records.append(record_from_masks(Path(info["file_name"]).stem, image, masks, min_area))
    records.sort(key=lambda r: _natural_key(r.name))
    return records
