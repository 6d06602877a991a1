"""Training records from a FiftyOne image dataset or view (``read_fiftyone``).

The objects are the detections of a ``Detections`` field whose detections carry instance masks
(``mask`` in the database or ``mask_path`` on disk). FiftyOne stores a detection's mask for its
box only; it is placed back in a full (H, W) canvas the way ``fiftyone/labels.py`` writes it
(``detection_from_mask``): the box's top-left pixel is ``round(x * W), round(y * H)``, and a mask
whose shape is not the box's pixel size (another tool's) is resized to it, nearest neighbour.
Images are read from ``sample.filepath`` as the folder reader reads them; records are named by
the file stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .coco_data import check_image, record_from_masks
from .data import TrainImage, _read_array


def _kind(field: Any) -> str:
    """'Detections', 'Segmentation', ... of a FiftyOne field (its document type, else its class)."""
    doc = getattr(field, "document_type", None)
    return doc.__name__ if doc is not None else type(field).__name__


def _masked_fields(view: Any) -> list[str]:
    """Names of the top-level Detections fields of ``view`` with at least one mask."""
    out = []
    for name, field in view.get_field_schema().items():
        if _kind(field) == "Detections" and _n_masks(view, name):
            out.append(name)
    return out


def _n_masks(view: Any, name: str) -> int:
    return int(view.count(f"{name}.detections.mask")) + int(view.count(f"{name}.detections.mask_path"))


def check_mask_field(view: Any, mask_field: str | None) -> str:
    """The Detections-with-masks field to read: ``mask_field``, or the only candidate when None.
    ValueError naming ``mask_field`` when it is missing, of another type, or holds no masks."""
    schema = view.get_field_schema()
    if mask_field is None:
        found = _masked_fields(view)
        if len(found) != 1:
            detections = [n for n, f in schema.items() if _kind(f) == "Detections"]
            raise ValueError(
                "mask_field: pass the Detections field that holds the instance masks; "
                + (f"several have masks: {', '.join(found)}" if found else
                   f"none has masks (Detections fields: {', '.join(detections) or 'none'})"))
        return found[0]
    if not isinstance(mask_field, str):
        raise TypeError(f"mask_field must be a field name (str), got {type(mask_field).__name__}")
    if mask_field not in schema:
        detections = [n for n, f in schema.items() if _kind(f) == "Detections"]
        raise ValueError(f"mask_field: {mask_field!r} is not a field of this dataset; its Detections fields: "
                         f"{', '.join(detections) or 'none'}")
    kind = _kind(schema[mask_field])
    if kind != "Detections":
        raise ValueError(f"mask_field: {mask_field!r} holds {kind}, not Detections with instance masks; "
                         + ("convert it first (e.g. Segmentation.to_detections)" if kind == "Segmentation" else
                            "fine-tuning needs a Detections field whose detections have masks"))
    if not _n_masks(view, mask_field):
        raise ValueError(f"mask_field: {mask_field!r} holds no detections with masks (mask or mask_path); "
                         "boxes alone cannot train segmentation")
    return mask_field


def paste_mask(det: Any, hw: tuple[int, int]) -> np.ndarray | None:
    """A detection's box-sized mask placed in an (H, W) bool canvas (clipped to it); None when the
    detection has no box or no mask."""
    if det.bounding_box is None or not det.has_mask:
        return None
    h, w = hw
    x, y, bw, bh = (float(v) for v in det.bounding_box)
    x0, y0 = int(round(x * w)), int(round(y * h))
    pw, ph = max(1, int(round(bw * w))), max(1, int(round(bh * h)))
    m = np.asarray(det.get_mask())
    if m.ndim == 3:  # an RGB mask image on disk
        m = m[..., 0]
    m = m > 0
    if m.shape != (ph, pw):  # not written by us: stretch to the box, nearest neighbour
        rows = np.minimum((np.arange(ph) + 0.5) * m.shape[0] / ph, m.shape[0] - 1).astype(int)
        cols = np.minimum((np.arange(pw) + 0.5) * m.shape[1] / pw, m.shape[1] - 1).astype(int)
        m = m[rows][:, cols]
    out = np.zeros((h, w), bool)
    ya, yb, xa, xb = max(0, y0), min(h, y0 + ph), max(0, x0), min(w, x0 + pw)
    if ya < yb and xa < xb:
        out[ya:yb, xa:xb] = m[ya - y0:yb - y0, xa - x0:xb - x0]
    return out


def read_fiftyone(view: Any, mask_field: str | None, min_area: int = 16) -> list[TrainImage]:
    """Records of a FiftyOne image Dataset or DatasetView: one per sample, its objects the masks of
    ``mask_field`` (see ``check_mask_field``) with >= ``min_area`` pixels, sorted by file stem."""
    import fiftyone.core.collections as foc

    from ..io.sources import _natural_key

    if not isinstance(view, foc.SampleCollection):
        raise TypeError(f"data must be a FiftyOne Dataset or DatasetView, got {type(view).__name__}")
    media = getattr(view, "media_type", None)
    if media not in ("image", None):
        raise ValueError(f"data: FiftyOne dataset {getattr(view, 'name', '')!r} holds {media} samples; "
                         "fine-tuning reads images with instance masks"
                         + (" (for videos, make a frames view with to_frames(sample_frames=True))"
                            if media == "video" else ""))
    field = check_mask_field(view, mask_field)
    records = []
    for sample in view.select_fields(field):
        path = Path(sample.filepath)
        image = _read_array(path)
        hw = check_image(str(path), image)
        label = sample[field]
        masks = [m for det in (label.detections if label is not None else []) or []
                 if (m := paste_mask(det, hw)) is not None]
        records.append(record_from_masks(path.stem, image, masks, min_area))
    records.sort(key=lambda r: _natural_key(r.name))
    return records
