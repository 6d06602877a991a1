"""GPU parity (issue 19), pytest marker ``gpu``: the engine on a CUDA device against our CPU and
against the original EdgeTAM code on the same device, at identical random weights loaded from
disk. Skipped without CUDA; ``bash scripts/gpu_check.sh`` runs these and the GPU benchmark table
on a machine with a GPU. ``EDGETAM_GPU_TEST_DEVICE=cpu`` runs the same code on the CPU (a smoke
check of the tests themselves, not a GPU result).

Tolerances: masks IoU >= 0.99 (CUDA convolutions use TF32 by default, so logits differ from the
CPU's in the third decimal; the issue measured >= 0.997 vs our CPU and >= 0.992 vs the original).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from reference_runners import OriginalRunner

DEVICE = os.environ.get("EDGETAM_GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason="needs CUDA (scripts/gpu_check.sh runs the gpu tests on a GPU machine)"),
]
MIN_IOU = 0.99
PROMPTS = [dict(points=[[300, 200]], labels=[1]), dict(points=[[300, 200], [470, 330]], labels=[1, 0]),
           dict(box=[150, 80, 450, 400])]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


@pytest.fixture(scope="module", params=["tiny", pytest.param("real", marks=pytest.mark.real_shape)])
def refs(request: pytest.FixtureRequest):
    return request.getfixturevalue("tiny_refs" if request.param == "tiny" else "real_refs")


def test_image_masks_on_the_device_match_our_cpu_and_the_original(refs, images) -> None:
    imgs = [images[n] for n in sorted(images)][:2]
    on_device = ek.ImagePredictor(ek.load_model(refs.hf_folder, device=DEVICE))
    on_cpu = ek.ImagePredictor(ek.load_model(refs.hf_folder, device="cpu"))
    assert on_device.model.device.type == torch.device(DEVICE).type
    original = OriginalRunner(copy.deepcopy(refs.original).to(DEVICE))  # the same weights on the same device
    original.set_images(imgs)
    for k, img in enumerate(imgs):
        on_device.set_image(img)
        on_cpu.set_image(img)
        for kw in PROMPTS:
            dev = on_device.predict(**kw, multimask=False)
            cpu = on_cpu.predict(**kw, multimask=False)
            orig = original.run(k, **kw, multimask=False)
            assert dev.masks.shape == cpu.masks.shape == orig.masks.shape
            assert _iou(dev.masks[0], cpu.masks[0]) >= MIN_IOU, f"image {k} {kw}: device vs our CPU"
            assert _iou(dev.masks[0], orig.masks[0]) >= MIN_IOU, f"image {k} {kw}: ours vs the original on {DEVICE}"


def test_batched_encoding_on_the_device_equals_one_by_one(tiny_refs, images) -> None:
    imgs = [images[n] for n in sorted(images)]
    model = ek.load_model(tiny_refs.hf_folder, device=DEVICE)
    batched = ek.ImagePredictor(model)
    batched.set_images(imgs, batch_size=len(imgs))
    rs = batched.predict_batch(points=[[[100, 80]]] * len(imgs), image_index=list(range(len(imgs))), multimask=False)
    streamed = dict(ek.ImagePredictor(model).encode_many(iter(imgs), batch_size=2))
    assert sorted(streamed) == list(range(len(imgs)))
    for i, img in enumerate(imgs):
        alone = ek.ImagePredictor(model)
        alone.set_image(img)
        r = alone.predict(points=[[100, 80]], multimask=False)
        assert _iou(r.masks[0], rs[i].masks[0]) >= MIN_IOU


def test_tracking_on_the_device_matches_our_cpu(tmp_path) -> None:
    from edgetam_kit.testing.synthetic import SyntheticSource

    folder = ek.save_model(ek.build_random_model("tiny", seed=2, video=True), tmp_path / "tiny")
    src = SyntheticSource(10, 96, 128, seed=1)
    masks = {}
    for device in (DEVICE, "cpu"):
        session = ek.VideoTracker(ek.load_model(folder, device=device)).start(src)
        session.add_prompt(0, 1, points=[list(src.center(0))])
        session.add_prompt(0, 2, box=[5, 5, 40, 30])
        masks[device] = [(frame, ids, m) for frame, ids, m in session.propagate("forward")]
    assert len(masks[DEVICE]) == len(masks["cpu"]) == 10
    for (f1, ids1, m1), (f2, ids2, m2) in zip(masks[DEVICE], masks["cpu"]):
        assert f1 == f2 and list(ids1) == list(ids2)
        for a, b in zip(m1, m2):
            assert _iou(np.asarray(a), np.asarray(b)) >= MIN_IOU, f"frame {f1}"


def test_automatic_masks_on_the_device_match_our_cpu(tiny_refs, images) -> None:
    img = images[sorted(images)[0]]
    settings = dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.2, stability_score_offset=0.005,
                    mask_threshold=0.1)
    dev = ek.AutoMaskGenerator(ek.load_model(tiny_refs.hf_folder, device=DEVICE), **settings).generate(img)
    cpu = ek.AutoMaskGenerator(ek.load_model(tiny_refs.hf_folder, device="cpu"), **settings).generate(img)
    assert cpu, "the CPU made no masks: the comparison would prove nothing"
    assert abs(len(dev) - len(cpu)) <= max(1, len(cpu) // 20)
    best = [max(_iou(a["segmentation"], b["segmentation"]) for b in dev) for a in cpu]
    assert np.mean(np.array(best) >= MIN_IOU) >= 0.9, sorted(best)[:5]
