"""Bad input gives a clear error that names the argument and the accepted form."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetam_kit as ek


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ek.save_model(ek.build_random_model("tiny"), tmp_path_factory.mktemp("bad") / "ckpt")


@pytest.fixture(scope="module")
def pred(tiny_folder: Path) -> ek.ImagePredictor:
    p = ek.ImagePredictor(ek.load_model(tiny_folder))
    p.set_image(np.zeros((60, 80, 3), np.uint8))  # H=60, W=80
    return p


@pytest.fixture(scope="module")
def broken(tiny_refs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints damaged in the ways users meet: a tensor missing or mis-shaped, a
    truncated download, a foreign config, a file that is no checkpoint at all."""
    tmp = tmp_path_factory.mktemp("broken")
    refs = tiny_refs
    out = {}
    sd = torch.load(refs.pt_path, weights_only=True)["model"]
    missing = dict(sd)
    missing.pop("sam_mask_decoder.iou_token.weight")
    torch.save({"model": missing}, tmp / "missing.pt")
    out["missing"] = tmp / "missing.pt"
    wrong = dict(sd)
    wrong["sam_mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save({"model": wrong}, tmp / "wrong.pt")
    out["wrong"] = tmp / "wrong.pt"
    trunc = tmp / "truncated"
    trunc.mkdir()
    (trunc / "config.json").write_text((refs.hf_folder / "config.json").read_text())
    data = (refs.hf_folder / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 3])
    out["truncated"] = trunc
    badtype = tmp / "badtype"
    badtype.mkdir()
    (badtype / "config.json").write_text('{"model_type": "sam2"}')
    out["badtype"] = badtype
    out["good_tiny_folder"] = refs.hf_folder
    (tmp / "notackpt.pt").write_bytes(b"this is not a checkpoint")
    out["garbage"] = tmp / "notackpt.pt"
    return out


# (id, callable(pred, ckpts), exception type, regex the message must match)
CASES = [
    ("point_outside", lambda p, c: p.predict(points=[[81, 10]]), ValueError, r"points.*outside.*80x60.*\(x, y\)"),
    ("point_negative", lambda p, c: p.predict(points=[[-1, 10]]), ValueError, r"points.*outside"),
    ("points_wrong_nesting", lambda p, c: p.predict(points=[[[10, 10]]]), ValueError, r"points.*\(P, 2\)"),
    ("points_not_numbers", lambda p, c: p.predict(points=[["a", "b"]]), ValueError, r"points.*numbers"),
    ("points_nan", lambda p, c: p.predict(points=[[np.nan, 3]]), ValueError, r"points.*NaN"),
    ("labels_length", lambda p, c: p.predict(points=[[1, 1], [2, 2]], labels=[1]), ValueError, r"labels.*one entry per point"),
    ("labels_values", lambda p, c: p.predict(points=[[1, 1]], labels=[2]), ValueError, r"labels.*1 \(positive\) or 0"),
    ("labels_without_points", lambda p, c: p.predict(labels=[1], box=[1, 1, 5, 5]), ValueError, r"labels.*without points"),
    ("box_flipped", lambda p, c: p.predict(box=[50, 10, 20, 40]), ValueError, r"box.*x1 >= x0"),
    ("box_length", lambda p, c: p.predict(box=[1, 2, 3]), ValueError, r"box.*4 numbers.*x0, y0, x1, y1"),
    ("mask_input_shape", lambda p, c: p.predict(points=[[5, 5]], mask_input=np.zeros((256, 256))), ValueError,
     r"mask_input.*\(64, 64\)"),
    ("empty_prompt", lambda p, c: p.predict(), ValueError, r"prompt.*points, a box or a mask_input"),
    ("multimask_type", lambda p, c: p.predict(points=[[5, 5]], multimask="yes"), TypeError, r"multimask.*True or False"),
    ("image_index_range", lambda p, c: p.predict(points=[[5, 5]], image_index=3), ValueError, r"image_index.*\[0, 0\]"),
    ("best_only_type", lambda p, c: p.predict(points=[[5, 5]], best_only=1), TypeError, r"best_only.*True or False"),
    ("batch_length_mismatch", lambda p, c: p.predict_batch(points=[[[1, 1]], [[2, 2]]], labels=[[1]]), ValueError,
     r"labels has 1 entries.*one per object"),
    ("batch_not_list", lambda p, c: p.predict_batch(points=5), TypeError, r"points must be a list"),
    ("image_nan", lambda p, c: p.set_image(np.full((8, 8), np.nan, np.float32)), ValueError, r"image.*NaN"),
    ("image_empty", lambda p, c: p.set_image(np.zeros((0, 10), np.uint8)), ValueError, r"image is empty.*HxW"),
    ("image_4d", lambda p, c: p.set_image(np.zeros((2, 8, 8, 3), np.uint8)), ValueError, r"image must be 2-D \(HxW\) or 3-D"),
    ("image_channels", lambda p, c: p.set_image(np.zeros((8, 8, 5), np.uint8)), ValueError, r"5 channels.*channels="),
    ("image_channels_first", lambda p, c: p.set_image(np.zeros((3, 64, 64), np.uint8)), ValueError, r"channels-first.*HxWxC"),
    ("image_type", lambda p, c: p.set_image("cat.png"), TypeError, r"image must be a numpy array"),
    ("images_not_list", lambda p, c: p.set_images(np.zeros((2, 8, 8), np.uint8)), TypeError, r"images must be a non-empty list"),
    ("predict_before_set_image", lambda p, c: ek.ImagePredictor(p.model).predict(points=[[1, 1]]), ValueError,
     r"no image set.*set_image"),
    ("predictor_model_type", lambda p, c: ek.ImagePredictor("edgetam"), TypeError, r"model must be an EdgeTam"),
    ("missing_checkpoint_path", lambda p, c: ek.load_model("/nonexistent/edgetam.pt"), FileNotFoundError,
     r"source.*not an existing path.*HF folder.*edgetam.pt"),
    ("unknown_checkpoint_name", lambda p, c: ek.load_model("edgetam-nope"), FileNotFoundError,
     r"source.*registered checkpoint name"),
    ("truncated_safetensors", lambda p, c: ek.load_model(c["truncated"]), ek.CheckpointError, r"source.*truncated"),
    ("pt_missing_tensor", lambda p, c: ek.load_model(c["missing"], config="tiny"), ek.CheckpointError,
     r"missing: mask_decoder\.iou_token\.weight"),
    ("pt_wrong_shape", lambda p, c: ek.load_model(c["wrong"], config="tiny"), ek.CheckpointError,
     r"wrong shape: mask_decoder\.iou_token\.weight: checkpoint \(2, 256\)"),
    ("pt_garbage", lambda p, c: ek.load_model(c["garbage"]), ek.CheckpointError, r"source.*cannot read"),
    ("config_model_type", lambda p, c: ek.load_model(c["badtype"]), ek.CheckpointError, r"model_type.*'edgetam'"),
    ("config_contradicts_folder", lambda p, c: ek.load_model(c["good_tiny_folder"], config="edgetam"), ValueError,
     r"config:.*carries its own config.json.*config=None"),
    ("device_string", lambda p, c: ek.load_model(c["good_tiny_folder"], device="gpu0"), ValueError,
     r"device must be a torch device string"),
    ("source_type", lambda p, c: ek.load_model(42), TypeError, r"source must be a path, hub id or checkpoint name"),
    ("dtype_string", lambda p, c: ek.load_model(c["truncated"], dtype="float8"), ValueError, r"dtype must be.*bfloat16"),
    ("config_preset", lambda p, c: ek.load_model(c["missing"], config="huge"), ValueError, r"unknown preset.*edgetam"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, pred: ek.ImagePredictor, broken: dict[str, Path]) -> None:
    _, call, exc_type, pattern = case
    with pytest.raises(exc_type) as info:
        call(pred, broken)
    assert re.search(pattern, str(info.value), re.S), f"message {str(info.value)!r} does not match {pattern!r}"


def test_predictor_survives_bad_input(pred: ek.ImagePredictor) -> None:
    """A rejected call changes nothing: the image stays set and results stay the same."""
    before = pred.predict(points=[[40, 30]])
    with pytest.raises(ValueError):
        pred.predict(points=[[400, 30]])
    with pytest.raises(ValueError):
        pred.set_images([np.zeros((60, 80, 3), np.uint8), np.full((5, 5), np.nan)])
    assert pred.image_sizes == [(60, 80)]
    after = pred.predict(points=[[40, 30]])
    np.testing.assert_array_equal(before.masks, after.masks)
