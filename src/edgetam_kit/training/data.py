"""Training data for ``ek.finetune``: images with instance masks, from any of the sources users have.

Records (``TrainImage``) and the folder reader; ``dataset.load_data`` dispatches to it and to the
other readers. Every reader returns the same thing — ``TrainImage`` records (an image and its objects' masks) —
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
