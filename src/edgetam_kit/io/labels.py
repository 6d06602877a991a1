"""Label images: masks painted into a uint32 (H, W) image where 0 is background and each object's
pixels carry its id. The one helper every face and exporter uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_LABEL = 2**32 - 1  # label images are uint32: object ids are in [1, MAX_LABEL]


def paint_labels(masks: np.ndarray | Sequence[np.ndarray], ids: Sequence[int] | np.ndarray,
                 out: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Paint ``masks`` (N, H, W) bool with ``ids`` (N,) into ``out`` (H, W) uint32 (a new zero image
    when None; ``shape`` gives its (H, W) when there are no masks). Where objects overlap, the
    larger id wins, whatever the order given. Returns ``out``."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != len(masks):
        raise ValueError(f"ids must hold one id per mask ({len(masks)}), got shape {ids.shape}")
    if len(ids) and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() > MAX_LABEL):
        raise ValueError(f"ids must be ints in [0, {MAX_LABEL}] (label images are uint32), got {ids.tolist()}")
    if out is None:
        if len(masks):
            shape = tuple(np.asarray(masks[0]).shape)
        if shape is None:
            raise ValueError("shape (H, W) is needed to paint no masks")
        out = np.zeros(shape, np.uint32)
    for k in np.argsort(ids, kind="stable"):
        out[np.asarray(masks[k], bool)] = ids[k]
    return out
