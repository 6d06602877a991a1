"""Each fast path of the runtime layer against the plain network of ``modeling/`` at identical
weights: the folded encoder, the rewritten mask decoder (contexts, shared images, ``min_iou``,
``best_only``, mask inputs, single-mask stability pick), the memory attention with a shared
frame prefix, and the fused CPU kernels against their public-op fallback. Plus the two bugs the
layout fixed: a model loaded under ``torch.inference_mode()``, and the embedding cache after an
in-place weight change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.modeling import ImageFeatures
from edgetam_kit.runtime import runtime_of
from edgetam_kit.runtime import cpu_fusion
from edgetam_kit.transforms import to_model_input, to_unit_rgb


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * max(float(b.abs().max()), 1e-6)


@pytest.fixture(scope="module")
def model() -> ek.EdgeTam:
    m = ek.build_random_model("tiny", seed=11, video=True)
    return ek.optimize(m)


@pytest.fixture(scope="module")
def features(model: ek.EdgeTam) -> ImageFeatures:
    rng = np.random.default_rng(0)
    images = [(rng.random((90, 120, 3)) * 255).astype(np.uint8) for _ in range(2)]
    pixels = torch.cat([to_model_input(to_unit_rgb(im), model.config.image_size, model.device, model.dtype)
                        for im in images])
    with torch.inference_mode():
        return model.encode_image(pixels)


def _prompts(n: int, size: int, points: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, points, 2, generator=g) * size
    labels = torch.randint(0, 2, (n, points), generator=g)
    labels[:, 0] = 1
    return coords, labels


def test_folded_encoder_equals_plain_encoder(model: ek.EdgeTam) -> None:
    rt = runtime_of(model)
    pixels = torch.randn(2, 3, model.config.image_size, model.config.image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain, fast = model.encode_image(pixels), rt.encode_image(pixels)
    assert _close(fast.embed, plain.embed) and all(_close(a, b) for a, b in zip(fast.high_res, plain.high_res))


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_fast_decoder_equals_plain_decoder(model: ek.EdgeTam, features: ImageFeatures, multimask: bool,
                                           shared: bool) -> None:
    rt = runtime_of(model)
    n = 4
    coords, labels = _prompts(n, model.config.image_size)
    feats = features.select(torch.zeros(1, dtype=torch.long)) if shared else features.select(torch.tensor([0, 1, 1, 0]))
    with torch.inference_mode():
        plain = model.decode(feats, coords, labels, None, multimask)
        context = rt.image_context(feats)
        fast = rt.decode(feats, coords, labels, None, multimask, context=context)
    assert fast.low_res_logits.shape == plain.low_res_logits.shape
    assert _close(fast.low_res_logits, plain.low_res_logits, 1e-4)
    assert _close(fast.iou, plain.iou, 1e-4) and _close(fast.object_score, plain.object_score, 1e-4)
    assert _close(fast.mask_tokens, plain.mask_tokens, 1e-4)


def test_fast_decoder_best_only_min_iou_and_mask_input(model: ek.EdgeTam, features: ImageFeatures) -> None:
    rt = runtime_of(model)
    n = 5
    coords, labels = _prompts(n, model.config.image_size, seed=3)
    one = features.select(torch.zeros(1, dtype=torch.long))
    with torch.inference_mode():
        plain = model.decode(one, coords, labels, None, True)
        best = rt.decode(one, coords, labels, None, True, best_only=True, context=rt.image_context(one))
        pick = plain.iou.argmax(-1)
        rows = torch.arange(n)
        assert _close(best.low_res_logits[:, 0], plain.low_res_logits[rows, pick], 1e-4)
        threshold = float(plain.iou.amax(-1).median())
        part = rt.decode(one, coords, labels, None, True, context=rt.image_context(one), min_iou=threshold)
        keep = (plain.iou.amax(-1) > threshold).nonzero().squeeze(1)
        assert torch.equal(part.rows, keep) and 0 < len(keep) < n
        assert _close(part.low_res_logits, plain.low_res_logits[keep], 1e-4)
        masks = plain.low_res_logits[:, :1]
        with_mask_plain = model.decode(one, coords, labels, masks, False)
        with_mask_fast = rt.decode(one, coords, labels, masks, False)
    assert _close(with_mask_fast.low_res_logits, with_mask_plain.low_res_logits, 1e-4)
    assert _close(with_mask_fast.iou, with_mask_plain.iou, 1e-4)


def test_fast_memory_attention_and_shared_prefix_equal_plain(model: ek.EdgeTam) -> None:
    rt = runtime_of(model)
    e, c = model.config.embedding_size, model.config.mask_decoder.dim
    mem_dim = model.config.memory.mem_dim
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(1, c, e, e, generator=g)
    b, frames, pointers = 3, 2, 8
    tokens = model.spatial_perceiver.grid ** 2 + model.config.memory.perceiver_num_latents
    memory = torch.randn(b, frames * tokens + pointers, mem_dim, generator=g)
    memory_pos = torch.randn(b, frames * tokens + pointers, mem_dim, generator=g)
    with torch.inference_mode():
        plain = model.condition(raw.expand(b, -1, -1, -1), memory, memory_pos, frames, pointers)
        fast = rt.condition(raw.expand(b, -1, -1, -1), memory, memory_pos, frames, pointers)
        shared = rt.condition(raw.expand(b, -1, -1, -1), memory, memory_pos, frames, pointers,
                              prefix=rt.condition_prefix(raw))
    assert _close(fast, plain, 1e-4) and _close(shared, plain, 1e-4)


def test_fused_kernels_against_forced_fallback(model: ek.EdgeTam) -> None:
    """The private oneDNN kernels are used only after a check; forcing the public ops gives the
    same encoder features and memory attention (up to float rounding)."""
    assert isinstance(cpu_fusion.kernels_ok(), bool)
    rt = runtime_of(model)
    pixels = torch.randn(1, 3, model.config.image_size, model.config.image_size,
                         generator=torch.Generator().manual_seed(4))
    lin = torch.nn.Linear(16, 32)
    x = torch.randn(5, 16)
    with torch.inference_mode():
        fused = rt.encode_image(pixels)
        relu = cpu_fusion.linear_relu(x, lin)
        cpu_fusion.use_fused_kernels(False)
        try:
            public = rt.encode_image(pixels)
            relu_public = cpu_fusion.linear_relu(x, lin)
        finally:
            cpu_fusion.use_fused_kernels(True)
    assert _close(fused.embed, public.embed, 1e-5) and _close(relu, relu_public, 1e-5)
    assert torch.equal(relu_public, torch.relu(lin(x)))


def test_model_loaded_under_inference_mode_clicks_and_tracks(tmp_path) -> None:
    folder = tmp_path / "tiny"
    ek.save_model(ek.build_random_model("tiny", seed=5, video=True), folder)
    with torch.inference_mode():
        m = ek.load_model(folder)
        also = ek.build_random_model("tiny", seed=5, video=True)
    image = (np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)
    for model in (m, ek.optimize(also)):
        pred = ek.ImagePredictor(model)
        pred.set_image(image)
        r = pred.predict(points=[[40, 30]])
        assert r.masks.shape == (3, 64, 80)
        session = ek.VideoTracker(model).start(np.stack([image] * 3))
        session.add_prompt(0, 1, points=[[40, 30]])
        session.add_prompt(1, 2, box=[10, 10, 50, 40])
        assert [f for f, _, _ in session.propagate()] == [0, 1, 2]


def test_cache_never_serves_or_stores_features_of_other_weights(tmp_path) -> None:
    model = ek.optimize(ek.build_random_model("tiny", seed=8))
    image = (np.random.default_rng(2).random((64, 80, 3)) * 255).astype(np.uint8)
    cache = ek.EmbeddingCache(tmp_path / "cache")
    pred = ek.ImagePredictor(model, cache=cache)
    pred.set_image(image)
    before = pred.features.embed.clone()
    assert len(cache) == 1
    with torch.no_grad():  # an in-place change of encoder weights, as fine-tuning makes
        for p in model.vision_encoder.parameters():
            p.mul_(1.5)
    with pytest.raises(ValueError, match="weights changed since set_image"):
        pred.predict(points=[[40, 30]])
    pred.set_image(image)
    assert len(cache) == 2  # a new entry under the new weights, not a hit on the old one
    fresh = ek.ImagePredictor(ek.optimize(ek.build_random_model("tiny", seed=8)))
    with torch.no_grad():
        for p in fresh.model.vision_encoder.parameters():
            p.mul_(1.5)
    fresh.set_image(image)
    assert not torch.allclose(before, pred.features.embed)
    assert torch.allclose(pred.features.embed, fresh.features.embed, atol=1e-5)
    again = ek.ImagePredictor(model, cache=cache)
    again.set_image(image)  # served from the cache: the new weights' entry
    assert torch.allclose(again.features.embed, fresh.features.embed, atol=1e-5)
