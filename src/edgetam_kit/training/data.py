"""Training data for ``ek.finetune``: images with instance masks, from any of the sources users have.

Every reader returns the same thing — ``TrainImage`` records (an image and its objects' masks) —
so one dataset gives the same tensors whichever form it was stored in:

- a folder with ``images/`` and ``labels/`` (the same file stems; label images of integer instance
  ids, 0 = background). A label stack (Z, H, W) beside an image stack (Z, H, W[, C]) gives one
  record per plane (z or time slices);
- a COCO json (``training/coco_data.py``: RLE or polygon segmentations);
- a FiftyOne dataset or view with a Detections-with-masks field (``training/fiftyone_data.py``);
- in memory: ``CellImages`` from ``ek.testing.cells``, or a pair ``(images, labels)`` of sequences.

Records are sorted by name, and the objects of an image by the raster position of their first
pixel (then area), so the order does not depend on the source's ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LABEL_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class TrainImage:
    """One training image. image: (H, W) or (H, W, C), any dtype ``ek.ImagePredictor`` takes;
    masks: (N, H, W) bool, one per object, in canonical order."""

    name: str
    image: np.ndarray
    masks: np.ndarray

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class TrainingData:
    """The records of a dataset and a description of where they came from."""

    images: list[TrainImage]
    source: str = "memory"
    skipped: list[str] = field(default_factory=list)  # names of images without objects

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_objects(self) -> int:
        return sum(len(r.masks) for r in self.images)


def canonical_order(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> the same masks sorted by first pixel in raster order, then area."""
    if len(masks) == 0:
        return masks
    flat = masks.reshape(len(masks), -1)
    keys = sorted(range(len(masks)), key=lambda i: (int(flat[i].argmax()), int(flat[i].sum())))
    return masks[keys]


def masks_from_labels(labels: np.ndarray, name: str, min_area: int) -> np.ndarray:
    """(H, W) integer instance ids -> (N, H, W) bool masks of the ids with >= ``min_area`` pixels."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"data: labels of {name} must be integer instance ids (0 = background), "
                         f"got dtype {labels.dtype}")
    if labels.ndim != 2:
        raise ValueError(f"data: labels of {name} must be 2-D (H, W), got shape {labels.shape}")
    ids, counts = np.unique(labels, return_counts=True)
    keep = [int(i) for i, c in zip(ids, counts) if i != 0 and c >= min_area]
    if not keep:
        return np.zeros((0, *labels.shape), bool)
    return canonical_order(np.stack([labels == i for i in keep]))


def make_record(name: str, image: Any, labels: Any, min_area: int) -> TrainImage:
    """A record from an image and its label image, checking that their sizes agree."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"data: image {name} must be (H, W) or (H, W, C), got shape {image.shape}")
    if labels.shape[:2] != image.shape[:2]:
        raise ValueError(f"data: labels of {name} have shape {labels.shape[:2]}, the image {image.shape[:2]}; "
                         "they must be the same size")
    return TrainImage(name, image, masks_from_labels(labels, name, min_area))


def _read_array(path: Path) -> np.ndarray:
    from ..io.sources import TIFF_SUFFIXES

    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        import skimage.io

        return np.asarray(skimage.io.imread(path))
    except Exception as exc:  # noqa: BLE001 - a reader's failure names the file
        raise ValueError(f"data: cannot read {path} ({type(exc).__name__}: {exc})") from exc


def _stack_records(stem: str, image: np.ndarray, labels: np.ndarray, min_area: int) -> list[TrainImage]:
    """A (Z, H, W) label stack beside a (Z, H, W[, C]) image stack: one record per plane."""
    if image.shape[0] != labels.shape[0] or image.shape[1:3] != labels.shape[1:3]:
        raise ValueError(f"data: label stack {stem} has shape {labels.shape}, its image {image.shape}; "
                         "a stack needs one label plane per image plane")
    return [make_record(f"{stem}[{z}]", image[z], labels[z], min_area) for z in range(labels.shape[0])]


def read_folder(folder: str | os.PathLike, min_area: int = 16) -> list[TrainImage]:
    """Records of ``folder/images/*`` with ``folder/labels/<same stem>.(tif|tiff|png)``."""
    from ..io.sources import IMAGE_SUFFIXES, _natural_key

    root = Path(folder).expanduser()
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise ValueError(f"data: folder {root} must hold images/ and labels/ (label images with the same file "
                         "names); or pass a COCO .json or a FiftyOne view")
    files = sorted((p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise ValueError(f"data: {images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    labels_by_stem = {p.stem: p for p in labels_dir.iterdir() if p.suffix.lower() in LABEL_SUFFIXES}
    missing = [p.name for p in files if p.stem not in labels_by_stem]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"data: {len(missing)} image(s) in {images_dir} have no label image in {labels_dir}: {shown}")
    records: list[TrainImage] = []
    for path in files:
        image, labels = _read_array(path), _read_array(labels_by_stem[path.stem])
        if labels.ndim == 3:
            records.extend(_stack_records(path.stem, image, labels, min_area))
        else:
            records.append(make_record(path.stem, image, labels, min_area))
    return records


def _from_pairs(images: Sequence[Any], labels: Sequence[Any], names: Sequence[str] | None,
                min_area: int) -> list[TrainImage]:
    if len(images) != len(labels):
        raise ValueError(f"data: {len(images)} images but {len(labels)} label images; pass one label image each")
    names = list(names) if names else [f"image_{i:05d}" for i in range(len(images))]
    return [make_record(n, im, lb, min_area) for n, im, lb in zip(names, images, labels)]


def _is_fiftyone(data: object) -> bool:
    return type(data).__module__.startswith("fiftyone.")


def load_data(data: Any, mask_field: str | None = None, min_area: int = 16) -> TrainingData:
    """Read ``data`` (a folder, a COCO .json, a FiftyOne dataset/view, ``CellImages`` or a pair
    ``(images, labels)``) into records. Images without objects are skipped and listed. ValueError
    naming ``data`` (or ``mask_field``) when nothing usable is found."""
    if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
        raise ValueError(f"min_area must be a positive int (pixels), got {min_area!r}")
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if path.is_dir():
            records, source = read_folder(path, min_area), f"folder {path}"
        elif path.suffix.lower() == ".json" and path.is_file():
            from .coco_data import read_coco

            records, source = read_coco(path, min_area=min_area), f"COCO {path}"
        else:
            raise ValueError(f"data: {str(data)!r} is neither a folder with images/ and labels/ nor a COCO .json file")
    elif _is_fiftyone(data):
        from .fiftyone_data import read_fiftyone

        records, source = read_fiftyone(data, mask_field, min_area=min_area), f"FiftyOne {getattr(data, 'name', '')}"
    elif hasattr(data, "images") and hasattr(data, "labels"):  # CellImages
        records, source = _from_pairs(data.images, data.labels, getattr(data, "names", None), min_area), "memory"
    elif isinstance(data, tuple) and len(data) == 2:
        records, source = _from_pairs(data[0], data[1], None, min_area), "memory"
    else:
        raise TypeError(f"data must be a folder (images/ + labels/), a COCO .json path, a FiftyOne dataset or view, "
                        f"CellImages or a pair (images, labels), got {type(data).__name__}")
    if mask_field is not None and not _is_fiftyone(data):
        raise ValueError("mask_field is only for FiftyOne data (the field with Detections with masks)")
    from ..io.sources import _natural_key

    records.sort(key=lambda r: _natural_key(r.name))
    kept = [r for r in records if len(r.masks)]
    skipped = [r.name for r in records if not len(r.masks)]
    if not kept:
        raise ValueError(f"data: {source} holds no objects ({len(records)} images, none with a labelled object of "
                         f">= {min_area} pixels); label some objects first")
    return TrainingData(kept, source, skipped)


def split(data: TrainingData, val_fraction: float, seed: int) -> tuple[list[TrainImage], list[TrainImage]]:
    """(train, validation) records: a seeded split by image. With one image, validation is empty."""
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = len(data.images)
    n_val = min(n - 1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    order = np.random.default_rng([seed, 7]).permutation(n)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [data.images[i] for i in train], [data.images[i] for i in val]
