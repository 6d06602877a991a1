"""Dataset-scale work on the CPU (issue 19's CPU part): images encoded in device batches (one
network call per batch, a spy), uint8 preprocessing on the model's device, a streaming
``encode_many``, and the objects of a frame tracked as one batch (one memory-attention call per
frame, a spy) with the masks they get when tracked one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.engine import encoding
from edgetam_kit.runtime import Runtime
from edgetam_kit.testing.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def model() -> ek.EdgeTam:
    m = ek.build_random_model("tiny", seed=3, video=True)
    with torch.no_grad():  # random weights often say "no object": keep objects present
        m.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return ek.optimize(m)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((80 + 9 * i, 110, 3)) * 255).astype(np.uint8) for i in range(5)]


def _spy(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """Batch sizes of every call of ``Runtime.<method>``."""
    calls: list[int] = []
    real = getattr(Runtime, method)

    def spy(self, first, *args, **kwargs):
        calls.append(first.shape[0])
        return real(self, first, *args, **kwargs)

    monkeypatch.setattr(Runtime, method, spy)
    return calls


def test_set_images_calls_the_network_once_per_device_batch(model, images, monkeypatch) -> None:
    calls = _spy(monkeypatch, "encode_image")
    pred = ek.ImagePredictor(model)
    pred.set_images(images, batch_size=2)
    assert calls == [2, 2, 1]
    batched = pred.predict_batch(points=[[[30, 40]]] * 5, image_index=list(range(5)))
    for image, r in zip(images, batched):  # each image as if set alone, up to float rounding
        alone = ek.ImagePredictor(model)
        alone.set_image(image)
        assert np.abs(alone.predict(points=[[30, 40]], multimask=False).logits - r.logits).max() < 1e-4


def test_uint8_is_normalised_on_the_device(model, images, monkeypatch) -> None:
    seen: list[np.dtype] = []
    real = encoding.to_model_input

    def spy(rgb, *args):
        seen.append(rgb.dtype)
        return real(rgb, *args)

    monkeypatch.setattr(encoding, "to_model_input", spy)
    pred = ek.ImagePredictor(model)
    u16 = (np.random.default_rng(1).random((60, 70)) * 4000).astype(np.uint16)
    pred.set_images([images[0], u16], batch_size=2)
    assert seen == [np.uint8, np.float32]  # uint8 uploaded as is; 16-bit normalised on the host
    f8 = pred.features.embed[:1].clone()
    ref = ek.ImagePredictor(model)
    with torch.inference_mode():  # the host /255 of before gives the same features
        from edgetam_kit.transforms import to_model_input, to_unit_rgb
        from edgetam_kit.runtime import runtime_of

        x = to_model_input(to_unit_rgb(images[0]), model.config.image_size, model.device, model.dtype)
        assert torch.allclose(runtime_of(model).encode_image(x).embed, f8, atol=1e-5)
    del ref


def test_encode_many_streams_in_order_and_feeds_predict(model, images, monkeypatch) -> None:
    calls = _spy(monkeypatch, "encode_image")
    pred = ek.ImagePredictor(model)
    out = list(pred.encode_many((im for im in images), batch_size=3))  # a generator: length unknown
    assert [i for i, _ in out] == [0, 1, 2, 3, 4] and calls == [3, 2]
    assert not pred.is_image_set  # the predictor's own image is untouched
    pred.set_features(out[2][1], images[2].shape[:2])
    r = pred.predict(points=[[30, 40]], multimask=False)
    alone = ek.ImagePredictor(model)
    alone.set_image(images[2])
    assert np.abs(alone.predict(points=[[30, 40]], multimask=False).logits - r.logits).max() < 1e-4
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        next(pred.encode_many(images, batch_size=0))
    with pytest.raises(TypeError, match="images must be an iterable"):
        next(pred.encode_many(3))


def test_objects_of_a_frame_share_one_memory_attention_call(model, monkeypatch) -> None:
    src = SyntheticSource(5, 120, 160, seed=0)
    frames = np.stack([src.frame(i) for i in range(5)])
    prompts = {1: src.center(0), 2: (20.0, 20.0), 3: (130.0, 90.0)}
    alone = {}
    for obj, point in prompts.items():
        s = ek.VideoTracker(model).start(frames)
        s.add_prompt(0, obj, points=[point])
        alone[obj] = [m[0] for _, _, m in s.propagate()]
    calls = _spy(monkeypatch, "condition")
    session = ek.VideoTracker(model).start(frames)
    for obj, point in prompts.items():
        session.add_prompt(0, obj, points=[point])
    calls.clear()  # add_prompt conditions without memory
    together = [m for _, _, m in session.propagate()]
    assert calls == [3] * 4  # frames 1-4: one call for the three objects
    for f, masks in enumerate(together):
        for k, obj in enumerate(prompts):
            a, b = masks[k], alone[obj][f]
            assert 0 < b.sum() < b.size
            assert (a & b).sum() / (a | b).sum() >= 0.999
