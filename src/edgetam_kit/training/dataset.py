"""``load_data``: any of the training-data forms into ``TrainingData``, and the train /
validation split. The readers live beside it: ``data`` (records, folders), ``coco_data``,
``fiftyone_data``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .coco_data import read_coco
from .data import TrainImage, TrainingData, make_record, read_folder
from .fiftyone_data import read_fiftyone


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
            records, source = read_coco(path, min_area=min_area), f"COCO {path}"
        else:
            raise ValueError(f"data: {str(data)!r} is neither a folder with images/ and labels/ nor a COCO .json file")
    elif _is_fiftyone(data):
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
