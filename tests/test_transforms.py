"""Image normalisation and coordinate rules (transforms.py) as a user meets them."""

from __future__ import annotations

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.transforms import scale_xy, to_unit_rgb


@pytest.fixture(scope="module")
def u8() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = (rng.random((50, 70, 3)) * 255).astype(np.uint8)
    img[0, 0] = 0
    img[-1, -1] = 255
    return img


def test_uint8_is_divided_by_255(u8: np.ndarray) -> None:
    np.testing.assert_allclose(to_unit_rgb(u8), u8 / 255.0, atol=1e-7)


def test_uint16_uses_percentiles(u8: np.ndarray) -> None:
    u16 = u8.astype(np.uint16) * 257  # full 16-bit range
    np.testing.assert_allclose(to_unit_rgb(u16, percentiles=(0, 100)), u8 / 255.0, atol=1e-6)
    dim = (u8.astype(np.uint16) * 4 + 1000)  # a dim 12-bit camera image
    out = to_unit_rgb(dim)
    lo, hi = np.percentile(dim.astype(np.float32), [1.0, 99.8])
    np.testing.assert_allclose(out, np.clip((dim - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_float_images(u8: np.ndarray) -> None:
    unit = u8 / 255.0
    np.testing.assert_allclose(to_unit_rgb(unit), unit, atol=1e-7)  # already in [0, 1]: unchanged
    wide = unit.astype(np.float32) * 3000 - 200  # e.g. a deconvolved image
    out = to_unit_rgb(wide)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0


def test_channels(u8: np.ndarray) -> None:
    grey = u8[..., 0]
    np.testing.assert_array_equal(to_unit_rgb(grey), to_unit_rgb(np.stack([grey] * 3, -1)))
    np.testing.assert_array_equal(to_unit_rgb(grey[..., None]), to_unit_rgb(grey))
    rgba = np.concatenate([u8, np.full(u8.shape[:2] + (1,), 255, np.uint8)], -1)
    np.testing.assert_array_equal(to_unit_rgb(rgba), to_unit_rgb(u8))
    five = np.concatenate([u8, u8[..., :2]], -1)
    np.testing.assert_array_equal(to_unit_rgb(five, channels=[2, 1, 0]), to_unit_rgb(u8[..., ::-1]))
    np.testing.assert_array_equal(to_unit_rgb(five, channels=4), to_unit_rgb(u8[..., 1]))
    assert to_unit_rgb(grey > 128).max() == 1.0


def test_flat_image_does_not_divide_by_zero() -> None:
    out = to_unit_rgb(np.full((10, 10), 700, np.uint16))
    assert np.isfinite(out).all()


def test_scale_xy_is_x_then_y() -> None:
    np.testing.assert_allclose(scale_xy(np.array([[80.0, 30.0]]), (60, 80), 1024), [[1024.0, 512.0]])


def test_predictor_16bit_equals_8bit(u8: np.ndarray) -> None:
    """A 16-bit image with the same content segments like its 8-bit version."""
    model = ek.build_random_model("tiny")
    a = ek.ImagePredictor(model)
    a.set_image(u8)
    b = ek.ImagePredictor(model, percentiles=(0, 100))
    b.set_image(u8.astype(np.uint16) * 257)
    ra, rb = a.predict(points=[[35, 25]]), b.predict(points=[[35, 25]])
    np.testing.assert_allclose(ra.logits, rb.logits, atol=1e-4)
    assert ra.masks.shape == (3, 50, 70)


def test_set_images_progress_and_cancel(u8: np.ndarray) -> None:
    import threading

    pred = ek.ImagePredictor(ek.build_random_model("tiny"))
    seen: list[tuple[int, int]] = []
    pred.set_images([u8, u8[:20]], progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)] and pred.image_sizes == [(50, 70), (20, 70)]
    before = pred.predict(points=[[10, 10]], image_index=1)
    stop = threading.Event()
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        stop.set()  # the user presses Cancel after the first image

    with pytest.raises(ek.Cancelled):
        pred.set_images([u8[:10], u8[:30], u8[:40]], progress=progress, cancel=stop)
    assert calls == [1]
    assert pred.image_sizes == [(50, 70), (20, 70)]  # nothing lost
    np.testing.assert_array_equal(pred.predict(points=[[10, 10]], image_index=1).masks, before.masks)


def test_pil_image_is_accepted(u8: np.ndarray) -> None:
    from PIL import Image

    np.testing.assert_array_equal(to_unit_rgb(Image.fromarray(u8)), to_unit_rgb(u8))
