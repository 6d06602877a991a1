"""Sample data made from scikit-image's bundled images (no downloads).

Each function returns napari LayerData tuples ``[(data, kwargs, "image")]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LayerData = list[tuple[np.ndarray, dict[str, Any], str]]

TIMELAPSE_SHIFT = (2, 3)  # (rows, cols) the time-lapse content moves per frame
TIMELAPSE_FRAMES = 12
ZSTACK_SLICES = 9


def _cell() -> np.ndarray:
    from skimage import data

    return data.cell()  # (660, 550) uint8, phase-contrast cells


def cells_2d() -> LayerData:
    """2D cells: scikit-image's ``cell`` image (660 x 550, uint8)."""
    return [(_cell(), {"name": "cells 2D"}, "image")]


def cells_zstack() -> LayerData:
    """A small 16-bit z-stack (9 x 256 x 256 uint16, z spacing 2): one crop of ``cell`` in focus
    at the middle slice, blurred and dimmed with distance from it, as a widefield stack looks."""
    from skimage.filters import gaussian

    crop = _cell()[200:456, 150:406].astype(np.float32) / 255.0
    mid = ZSTACK_SLICES // 2
    slices = []
    for z in range(ZSTACK_SLICES):
        d = abs(z - mid)
        plane = gaussian(crop, sigma=0.01 + 1.2 * d) * (1.0 - 0.06 * d)
        slices.append(plane)
    stack = np.round(np.stack(slices) * 40000 + 1000).astype(np.uint16)
    return [(stack, {"name": "cells z-stack", "scale": (2.0, 1.0, 1.0), "axis_labels": ("z", "y", "x")}, "image")]


def cells_timelapse() -> LayerData:
    """A time-lapse with known motion (12 x 256 x 256 uint8): a 256-pixel window over ``cell``
    whose content moves by ``TIMELAPSE_SHIFT`` = (2, 3) pixels (rows, cols) per frame."""
    cell = _cell()
    dy, dx = TIMELAPSE_SHIFT
    y0, x0 = 200 + dy * TIMELAPSE_FRAMES, 150 + dx * TIMELAPSE_FRAMES
    frames = [cell[y0 - dy * t:y0 - dy * t + 256, x0 - dx * t:x0 - dx * t + 256] for t in range(TIMELAPSE_FRAMES)]
    meta = {"shift_per_frame_rc": TIMELAPSE_SHIFT}
    return [(np.stack(frames), {"name": "cells time-lapse", "metadata": meta, "axis_labels": ("t", "y", "x")}, "image")]


def rgb_video() -> LayerData:
    """A short RGB video (24 x 200 x 112 x 3 uint8): scikit-image's bundled GIF
    ``no_time_for_that_tiny.gif`` (25 x 14 pixels) enlarged 8 times."""
    from PIL import Image, ImageSequence
    from skimage import data

    path = Path(data.__file__).parent / "no_time_for_that_tiny.gif"
    with Image.open(path) as gif:
        frames = [np.asarray(f.convert("RGB").resize((f.width * 8, f.height * 8), Image.BILINEAR))
                  for f in ImageSequence.Iterator(gif)]
    return [(np.stack(frames), {"name": "RGB video", "rgb": True, "axis_labels": ("t", "y", "x")}, "image")]
