"""A project folder: each image's committed labels, prompts and object metadata, written at once
and atomically on every change, and read back to resume. No napari import.

Layout (one pair of files per image, named after the image)::

    <folder>/<key>.labels.tif   uint32 labels, the image's full shape (planes x H x W)
    <folder>/<key>.json         {"version", "image", "shape", "next_id", "objects", "prompts"}

``objects``: id -> {"source": "click" | "propagate" | "automatic", "predicted_iou": float | null};
``prompts``: what each committed object was prompted with, per plane (points in (x, y) plane
pixels, labels 1/0, box x0 y0 x1 y1). Each file is written to a temporary name in the folder and
renamed over the old one, labels first, so a process killed at any moment leaves the previous or
the new version of each file, never a torn one.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .state import PromptRecords
from .work import ObjectPrompt

VERSION = 1
LABELS_SUFFIX = ".labels.tif"


@dataclass
class SavedImage:
    """One image's saved annotation."""

    labels: np.ndarray
    next_id: int
    prompts: PromptRecords = field(default_factory=dict)
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)


def image_key(name: str) -> str:
    """A file-name-safe key for an image name (the same name gives the same key)."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return key or "image"


def paths(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """(labels TIFF, JSON) of the image ``name`` in ``folder``."""
    key = image_key(name)
    return Path(folder) / f"{key}{LABELS_SUFFIX}", Path(folder) / f"{key}.json"


def replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def prompts_to_json(records: PromptRecords) -> list[dict[str, Any]]:
    out = []
    for obj, per in sorted(records.items()):
        for plane, p in sorted(per.items()):
            out.append({"id": int(obj), "plane": [int(i) for i in plane], "points": np.asarray(p.points).tolist(),
                        "labels": [int(v) for v in p.labels],
                        "box": None if p.box is None else [float(v) for v in p.box]})
    return out


def prompts_from_json(items: list[dict[str, Any]]) -> PromptRecords:
    out: PromptRecords = {}
    for it in items:
        pts = np.asarray(it["points"], np.float32).reshape(-1, 2)
        box = None if it.get("box") is None else np.asarray(it["box"], np.float32)
        p = ObjectPrompt(pts, np.asarray(it["labels"], np.int64).reshape(-1), box)
        out.setdefault(int(it["id"]), {})[tuple(int(i) for i in it["plane"])] = p
    return out


def save_image(folder: str | os.PathLike, name: str, labels: np.ndarray, next_id: int,
               prompts: PromptRecords, objects: dict[int, dict[str, Any]]) -> tuple[Path, Path]:
    """Write image ``name``'s labels (uint32, any shape) and its JSON into ``folder``; returns
    the two paths. Objects no longer in ``labels`` are dropped from the metadata."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tif, meta = paths(folder, name)
    data = np.ascontiguousarray(np.asarray(labels, dtype=np.uint32))
    present = {int(i) for i in np.unique(data) if i}
    replace_atomically(tif, lambda p: tifffile.imwrite(p, data, compression="zlib"))
    doc = {"version": VERSION, "image": name, "shape": list(data.shape), "next_id": int(next_id),
           "objects": {str(k): v for k, v in sorted(objects.items()) if k in present},
           "prompts": prompts_to_json(prompts)}
    replace_atomically(meta, lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    return tif, meta


def load_image(folder: str | os.PathLike, name: str, shape: tuple[int, ...] | None = None) -> SavedImage | None:
    """Image ``name``'s saved annotation, or None when there is none (or, with ``shape``, when
    its labels do not have that shape)."""
    import tifffile

    tif, meta = paths(folder, name)
    if not (tif.exists() and meta.exists()):
        return None
    doc = json.loads(meta.read_text())
    if doc.get("version") != VERSION:
        raise ValueError(f"{meta}: project version {doc.get('version')!r}, this edgetam-kit reads {VERSION}")
    labels = np.asarray(tifffile.imread(tif), dtype=np.uint32)
    if shape is not None and tuple(labels.shape) != tuple(shape):
        return None
    objects = {int(k): dict(v) for k, v in doc.get("objects", {}).items()}
    return SavedImage(labels, int(doc["next_id"]), prompts_from_json(doc.get("prompts", [])), objects)


def saved_names(folder: str | os.PathLike) -> list[str]:
    """The names of the images saved in ``folder`` (those with both files), in file order."""
    root = Path(folder)
    if not root.is_dir():
        return []
    names = []
    for meta in sorted(root.glob("*.json")):
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        name = doc.get("image") if isinstance(doc, dict) else None
        if isinstance(name, str) and all(p.exists() for p in paths(root, name)):
            names.append(name)
    return names
