"""Tables of results: one row per object, and shape measurements through scikit-image.

``to_table(results)`` columns: ``image`` (image results) or ``frame`` (tracks), ``id``, ``area``
(pixels), ``bbox`` (x, y, w, h) pixels with w = x1 - x0 of the inclusive bounds, as
``AutoMaskGenerator`` writes it; None for an empty mask), ``predicted_iou`` and ``object_score``
(None where the result has none: tracked frames), plus ``stability_score`` for automatic masks.
A pandas DataFrame when pandas is installed (``as_frame=None``), else a list of dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .display import decode_segmentation
from .results import AutoMasks, Predictions, TrackResult

COLUMNS = ("id", "area", "bbox", "predicted_iou", "object_score")
REGION_PROPERTIES = ("label", "area", "bbox", "centroid", "eccentricity", "solidity")


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of a bool (H, W) mask, w = x1 - x0 of the inclusive bounds; None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]), int(rows[-1] - rows[0])


def _is_prediction(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("masks", "scores", "logits", "object_score"))


def _prediction_row(pred: Any, obj_id: int) -> dict[str, Any]:
    b = pred.best
    m = np.asarray(pred.masks[b], dtype=bool)
    return {"id": obj_id, "area": int(m.sum()), "bbox": mask_bbox(m), "predicted_iou": float(pred.scores[b]),
            "object_score": float(pred.object_score)}


def _automask_row(ann: Mapping[str, Any], obj_id: int) -> dict[str, Any]:
    bbox = ann.get("bbox")
    if "area" in ann:
        area = int(ann["area"])
    else:
        area = int(decode_segmentation(ann["segmentation"]).sum())
    return {"id": obj_id, "area": area, "bbox": None if bbox is None else tuple(int(round(v)) for v in bbox),
            "predicted_iou": ann.get("predicted_iou"), "object_score": None,
            "stability_score": ann.get("stability_score")}


def _rows_of_image(result: Any) -> list[dict[str, Any]]:
    if _is_prediction(result):
        return [_prediction_row(result, 1)]
    if isinstance(result, (list, tuple)) and all(_is_prediction(p) for p in result) and result:
        return [_prediction_row(p, i + 1) for i, p in enumerate(result)]
    if isinstance(result, (list, tuple)) and all(isinstance(a, Mapping) and "segmentation" in a for a in result):
        return [_automask_row(a, i + 1) for i, a in enumerate(result)]
    raise TypeError("to_table takes a Prediction, a list of predictions, automatic masks, a TrackResult, "
                    f"or a list/dict of those (one per image); got {type(result).__name__}")


def _rows_of_track(track: TrackResult) -> list[dict[str, Any]]:
    rows = []
    for f in track.frames:
        ids, masks = track.frame_masks(f)
        for i, m in zip(ids, masks):
            rows.append({"frame": f, "id": i, "area": int(m.sum()), "bbox": mask_bbox(m), "predicted_iou": None,
                         "object_score": None})
    return rows


def _is_single(result: Any) -> bool:
    if _is_prediction(result) or isinstance(result, (AutoMasks, Predictions)):
        return True
    if isinstance(result, (list, tuple)):
        return all(_is_prediction(p) for p in result) or all(isinstance(a, Mapping) and "segmentation" in a
                                                                for a in result)
    return False


def to_rows(results: Any) -> list[dict[str, Any]]:
    """The rows of ``to_table`` as a list of dicts."""
    if isinstance(results, TrackResult):
        return _rows_of_track(results)
    if _is_single(results):
        return [{"image": 0, **r} for r in _rows_of_image(results)]
    if isinstance(results, Mapping):
        items: Sequence[tuple[Any, Any]] = list(results.items())
    elif isinstance(results, (list, tuple)):
        items = list(enumerate(results))
    else:
        raise TypeError("to_table takes a Prediction, a list of predictions, automatic masks, a TrackResult, "
                        f"or a list/dict of those (one per image); got {type(results).__name__}")
    rows = []
    for name, result in items:
        rows += [{"image": name, **r} for r in _rows_of_image(result)]
    return rows


def _as_frame(rows: list[dict[str, Any]], columns: list[str], as_frame: bool | None) -> Any:
    if as_frame is False:
        return rows
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise ImportError("as_frame=True needs pandas: pip install pandas") from None
        return rows
    return pd.DataFrame(rows, columns=columns)


def to_table(results: Any, as_frame: bool | None = None) -> Any:
    """One row per object (per image or per frame); see the module docstring for the columns.

    results: a ``Prediction``; a list of them (``predict_batch``); automatic masks (``generate``'s
    list or ``AutoMasks``); a ``TrackResult`` (``ek.collect(session.propagate())``); or a list or
    dict of image results (one per image; the ``image`` column holds the index or key).
    as_frame: True (pandas DataFrame), False (list of dicts), None (DataFrame if pandas imports).
    """
    rows = to_rows(results)
    first = "frame" if isinstance(results, TrackResult) else "image"
    columns = [first, *COLUMNS]
    if any("stability_score" in r for r in rows):
        columns.append("stability_score")
    return _as_frame(rows, columns, as_frame)


def _label_image(results: Any) -> np.ndarray:
    if isinstance(results, (TrackResult, AutoMasks)):
        return results.labels()
    if _is_prediction(results):
        return np.asarray(results.masks[results.best], dtype=np.uint32)
    if isinstance(results, (list, tuple)) and results and all(_is_prediction(p) for p in results):
        return _stack_labels(results)
    if isinstance(results, (list, tuple)) and all(isinstance(a, Mapping) and "segmentation" in a for a in results):
        return AutoMasks(results).labels()
    arr = np.asarray(results)
    if arr.dtype.kind not in "biu" or arr.ndim not in (2, 3):
        raise TypeError("regionprops_table takes a label image (H, W) / stack (T, H, W) of integers, or a result "
                        f"(Prediction, predictions, automatic masks, TrackResult); got {type(results).__name__} "
                        f"{getattr(arr, 'dtype', '')}")
    return arr.astype(np.uint32) if arr.dtype == bool else arr


def _stack_labels(preds: Sequence[Any]) -> np.ndarray:
    """Object i -> label i + 1 (best masks; later objects on top)."""
    out = np.zeros(np.asarray(preds[0].masks).shape[1:], np.uint32)
    for i, p in enumerate(preds):
        out[np.asarray(p.masks[p.best], dtype=bool)] = i + 1
    return out


def regionprops_table(results: Any, intensity_image: Any = None, properties: Sequence[str] = REGION_PROPERTIES,
                      spacing: Sequence[float] | None = None, as_frame: bool | None = None) -> Any:
    """``skimage.measure.regionprops_table`` of a label image or of a result's labels.

    results: (H, W) integer label image, a (T, H, W) stack (one table, a ``frame`` column), or a
    result (``Prediction``: label 1; predictions / automatic masks: object i -> i + 1, later ones
    on top where they overlap; ``TrackResult``: its label stack). intensity_image: (H, W[, C]) or
    (T, H, W[, C]) for intensity properties. spacing: pixel size per axis (e.g. microns).
    """
    from skimage.measure import regionprops_table as _rpt

    labels = _label_image(results)
    stack = labels.ndim == 3
    frames = labels if stack else labels[None]
    intens = None if intensity_image is None else np.asarray(intensity_image)
    if intens is not None and not stack:
        intens = intens[None]
    kw = {} if spacing is None else {"spacing": tuple(spacing)}
    rows: list[dict[str, Any]] = []
    columns: list[str] = ["frame"] if stack else []
    for t, lab in enumerate(frames):
        table = _rpt(lab, intensity_image=None if intens is None else intens[t], properties=tuple(properties), **kw)
        keys = list(table)
        if len(columns) <= int(stack):
            columns += keys
        for r in range(len(table[keys[0]]) if keys else 0):
            row = {"frame": t} if stack else {}
            row.update({k: table[k][r].item() if hasattr(table[k][r], "item") else table[k][r] for k in keys})
            rows.append(row)
    return _as_frame(rows, columns, as_frame)
