"""One tiny export shared by the ONNX test modules of a session (exporting takes a minute or two)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek


def exported_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint folder, exported folder) of the seeded random tiny video model, with int8 files."""
    base = tmp_path_factory.getbasetemp() / "onnx-tiny"
    ckpt, out = base / "ckpt", base / "onnx"
    if not (out / "manifest.json").is_file():
        model = ek.build_random_model("tiny", seed=0)
        ek.save_model(model, ckpt)
        ek.export_onnx(model, out, quantize="int8")
    return ckpt, out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def sample_image(side: int = 256) -> np.ndarray:
    """A side x side uint8 RGB image: noise with a red rectangle and a green disk."""
    rng = np.random.default_rng(0)
    img = (rng.random((side, side, 3)) * 90).astype(np.uint8)
    s = side / 256
    img[int(50 * s):int(150 * s), int(80 * s):int(200 * s)] = [230, 60, 60]
    yy, xx = np.mgrid[:side, :side]
    img[(xx - 60 * s) ** 2 + (yy - 200 * s) ** 2 < (30 * s) ** 2] = [60, 230, 60]
    return img
