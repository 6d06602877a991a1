"""Write ``CellImages`` (``ek.testing.cells``) as a COCO instance-segmentation dataset (a public
test/demo helper): the same data ``CellImages.write_folder`` writes, in the form ``ek.finetune``
reads as a ``.json``. One annotation per instance id (category 1, "cell"), in increasing id order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .cells import CellImages


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """(H, W) bool -> COCO polygons [x0, y0, x1, y1, ...] in pixel-corner coordinates (pixel
    (x, y) covers [x, x + 1) x [y, y + 1)), one per outline of at least 3 points."""
    from skimage import measure

    contours = measure.find_contours(np.pad(mask.astype(np.uint8), 1), 0.5)
    polys = []
    for c in contours:
        if len(c) < 3:
            continue
        xy = c[:, ::-1] - 1 + 0.5  # (row, col) of the padded grid -> (x, y) corners
        polys.append([round(float(v), 3) for v in xy.ravel()])
    return polys


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, polygons: bool) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    seg: Any = mask_polygons(mask) if polygons else {"size": [int(v) for v in rle["size"]],
                                                     "counts": rle["counts"].decode("ascii")}
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": seg,
            "area": int(mask.sum()), "bbox": [x, y, w, h], "iscrowd": 0}


def write_coco(cells: CellImages, path: str | os.PathLike, images_dir: str | os.PathLike | None = None,
               polygons: bool = False) -> Path:
    """Write ``images_dir/<name>.tif`` (default: ``<json folder>/images``) and the COCO json
    ``path`` with one RLE (or, ``polygons=True``, polygon) annotation per instance of each label
    image. File names in the json are relative to the json's folder when the images are in it or
    in its ``images/``, else absolute. Returns the json path."""
    import tifffile

    path = Path(path)
    images_dir = Path(images_dir) if images_dir is not None else path.parent / "images"
    if len(cells.images) != len(cells.labels):
        raise ValueError(f"cells: {len(cells.images)} images but {len(cells.labels)} label images")
    names = list(cells.names) or [f"image_{i:05d}" for i in range(len(cells.images))]
    path.parent.mkdir(parents=True, exist_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    here = path.parent.resolve()
    short = images_dir.resolve() in (here, here / "images")
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    for image_id, (name, image, labels) in enumerate(zip(names, cells.images, cells.labels), start=1):
        file = images_dir / f"{name}.tif"
        tifffile.imwrite(file, image)
        h, w = labels.shape[:2]
        doc["images"].append({"id": image_id, "file_name": file.name if short else str(file.resolve()),
                              "height": int(h), "width": int(w)})
        for i in np.unique(labels):
            if i != 0:
                doc["annotations"].append(_annotation(labels == i, len(doc["annotations"]) + 1, image_id, polygons))
    path.write_text(json.dumps(doc))
    return path
