"""ONNX export and the onnx backend (issue 20), image path: the exported graphs and manifest, parity of
ImagePredictor on onnxruntime against our torch engine at identical weights (tiny; the real shape is
marked ``real_shape``), a click reproduced by onnxruntime + numpy in a process where torch cannot be
imported, and bad input. Tolerances: mask IoU >= 0.999, |predicted IoU delta| <= 1e-4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.runtime import runtime_of
from onnx_helpers import exported_tiny, iou, sample_image

pytest.importorskip("onnxruntime")

PROMPTS = {
    "point": dict(points=[(100, 50)], labels=[1]),
    "two points, single mask": dict(points=[(100, 50), (40, 200)], labels=[1, 0], multimask=False),
    "box": dict(box=(20, 30, 150, 120)),
    "box + negative point": dict(box=(20, 30, 150, 120), points=[(60, 60)], labels=[0]),
    "point, best only": dict(points=[(60, 200)], labels=[1], best_only=True),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return exported_tiny(tmp_path_factory)


def _same(a: ek.Prediction, b: ek.Prediction, where: str) -> None:
    assert a.masks.shape == b.masks.shape, where
    for k in range(len(a.masks)):
        assert 0 < a.masks[k].mean() < 1, f"{where}: trivial reference mask {k}"
        assert iou(a.masks[k], b.masks[k]) >= 0.999, f"{where}: mask {k} IoU {iou(a.masks[k], b.masks[k]):.5f}"
    assert np.abs(a.scores - b.scores).max() <= 1e-4, f"{where}: scores {a.scores} vs {b.scores}"


def test_export_writes_graphs_and_manifest(tiny) -> None:
    _, out = tiny
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "edgetam-kit-onnx" and m["edgetam_kit_version"] == ek.__version__
    assert m["opset"] == 18 and m["video"] is True and m["image_size"] == 256
    assert m["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert m["config"]["image_size"] == 256
    assert set(m["files"]) == {"image_encoder", "mask_decoder", "memory_attention", "memory_encoder"}
    assert set(m["variants"]["int8"]) == {"image_encoder", "mask_decoder"}
    enc = m["files"]["image_encoder"]
    assert enc["inputs"] == [{"name": "pixels", "shape": ["batch", 3, 256, 256], "dtype": "float32"}]
    dec = {i["name"]: i["shape"] for i in m["files"]["mask_decoder"]["inputs"]}
    assert dec["point_coords"] == ["prompts", "points", 2] and dec["mask_input"] == ["prompts", 1, 64, 64]
    att = {i["name"]: i["shape"] for i in m["files"]["memory_attention"]["inputs"]}
    assert att["frame_memory"] == ["batch", "frames", 512, 64] and att["pointers"] == ["batch", "pointer_tokens", 64]
    import hashlib
    import onnx

    for e in [*m["files"].values(), *m["variants"]["int8"].values()]:
        data = (out / e["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
        onnx.checker.check_model(str(out / e["path"]))


def test_encoder_batch_is_dynamic(tiny) -> None:
    import onnxruntime as ort
    import torch

    _, out = tiny
    ref = ek.load_model(out, backend="none")
    sess = ort.InferenceSession(str(out / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        px = torch.randn(b, 3, 256, 256)
        embed, s0, s1 = sess.run(None, {"pixels": px.numpy()})
        with torch.no_grad():
            feats = ref.encode_image(px, add_no_memory=False)
        assert embed.shape == (b, 256, 16, 16)
        np.testing.assert_allclose(embed, feats.embed.numpy(), atol=1e-4)
        np.testing.assert_allclose(s0, feats.high_res[0].numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", list(PROMPTS))
def test_image_parity_with_torch(tiny, kind: str) -> None:
    ckpt, out = tiny
    ours, onnx_model = ek.load_model(ckpt), ek.load_model(out)  # an exported folder runs on onnx
    assert runtime_of(onnx_model).backend == "onnx" and runtime_of(ours).backend == "eager"
    img = sample_image()
    pt, po = ek.ImagePredictor(ours), ek.ImagePredictor(onnx_model)
    pt.set_image(img)
    po.set_image(img)
    a, b = pt.predict(**PROMPTS[kind]), po.predict(**PROMPTS[kind])
    _same(a, b, kind)
    again = dict(PROMPTS[kind], mask_input=a.logits[a.best])  # the previous mask as a prompt
    _same(pt.predict(**again), po.predict(**again), kind + " + mask input")


def test_mask_only_and_batched_prompts(tiny) -> None:
    ckpt, out = tiny
    pt, po = ek.ImagePredictor(ek.load_model(ckpt)), ek.ImagePredictor(ek.load_model(out))
    img = sample_image()
    pt.set_image(img)
    po.set_image(img)
    logits = pt.predict(points=[(100, 50)]).logits[0]
    _same(pt.predict(mask_input=logits), po.predict(mask_input=logits), "mask only")
    kw = dict(points=[[(100, 50)], [(60, 200), (150, 100)], None], labels=[[1], [1, 0], None],
              boxes=[None, None, (10, 10, 100, 100)])
    for k, (a, b) in enumerate(zip(pt.predict_batch(**kw), po.predict_batch(**kw))):
        _same(a, b, f"batched object {k}")


def test_load_checkpoint_with_onnx_backend_uses_the_cache(tiny, tmp_path, monkeypatch) -> None:
    """load_model(ckpt, backend="onnx") exports into the cache once, keyed by the weights' digest;
    here the cache already holds this export (a copy of the shared folder), so nothing is exported."""
    from edgetam_kit.io.onnx_export import all_weights_digest

    ckpt, out = tiny
    model = ek.load_model(ckpt, backend="none")
    monkeypatch.setenv("EDGETAM_KIT_ONNX_CACHE", str(tmp_path))
    shutil.copytree(out, tmp_path / all_weights_digest(model)[:32])
    ek.optimize(model, backend="onnx")
    rt = runtime_of(model)
    assert rt.backend == "onnx" and str(tmp_path) in rt.notes[0]
    p = ek.ImagePredictor(model)
    p.set_image(sample_image())
    assert p.predict(points=[(100, 50)]).masks.shape == (3, 256, 256)


NUMPY_ONLY = textwrap.dedent('''
    import sys
    sys.modules["torch"] = None  # any import of torch now fails
    import json, numpy as np, onnxruntime as ort
    folder, image_path, x, y = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    m = json.load(open(folder + "/manifest.json"))
    s = m["image_size"]
    img = np.load(image_path)                       # s x s x 3 uint8 (other sizes: resize to s x s first)
    mean, std = np.array(m["normalisation"]["mean"]), np.array(m["normalisation"]["std"])
    px = ((img / 255.0 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    enc = ort.InferenceSession(folder + "/image_encoder.onnx", providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(folder + "/mask_decoder.onnx", providers=["CPUExecutionProvider"])
    embed, s0, s1 = enc.run(None, {"pixels": px})
    embed = embed + np.load(image_path + ".no_memory.npy").reshape(1, -1, 1, 1)
    e4 = s // 4
    out = dict(zip([o.name for o in dec.get_outputs()], dec.run(None, {
        "image_embed": embed, "high_res_0": s0, "high_res_1": s1, "image_index": np.zeros(1, np.int64),
        "point_coords": np.array([[[x, y], [0, 0]]], np.float32),     # the click + the padding point
        "point_labels": np.array([[1, -1]], np.int64),
        "mask_input": np.zeros((1, 1, e4, e4), np.float32), "has_mask_input": np.zeros(1, np.float32)})))
    low = out["masks"][0, 1:]                       # multimask: candidates 1..3
    best = int(out["iou_predictions"][0, 1:].argmax())

    def resize(a, n):                               # bilinear, half-pixel centres, along axis 0
        c = np.clip((np.arange(n) + 0.5) * a.shape[0] / n - 0.5, 0, a.shape[0] - 1)
        i0 = np.floor(c).astype(int); i1 = np.minimum(i0 + 1, a.shape[0] - 1); w = (c - i0)[:, None]
        return a[i0] * (1 - w) + a[i1] * w

    mask = resize(resize(low[best], s).T, s).T > 0
    np.save(image_path + ".mask.npy", mask)
    print("torch" in sys.modules and sys.modules["torch"] is None, best)
''')


def test_click_with_onnxruntime_and_numpy_only(tiny, tmp_path) -> None:
    ckpt, out = tiny
    model = ek.load_model(ckpt)
    img = sample_image()
    np.save(tmp_path / "img.npy", img)
    # the one model tensor the graphs leave to the caller for a single image: the no-memory embedding
    np.save(tmp_path / "img.npy.no_memory.npy", model.no_memory_embedding.detach().numpy().reshape(-1))
    script = tmp_path / "click.py"
    script.write_text(NUMPY_ONLY)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "img.npy"), "100", "50"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "True"
    p = ek.ImagePredictor(model)
    p.set_image(img)
    ref = p.predict(points=[(100, 50)], labels=[1])
    assert int(r.stdout.split()[1]) == ref.best
    mask = np.load(tmp_path / "img.npy.mask.npy")
    assert 0 < mask.mean() < 1 and iou(mask, ref.masks[ref.best]) >= 0.999


def test_automask_on_onnx_matches_torch(tiny) -> None:
    ckpt, out = tiny
    opts = dict(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    img = sample_image()
    ref = ek.AutoMaskGenerator(ek.load_model(ckpt), **opts).generate(img)
    got = ek.AutoMaskGenerator(ek.load_model(out), **opts).generate(img)
    assert len(ref) == len(got) > 0
    for a, b in zip(ref, got):
        assert iou(a["segmentation"], b["segmentation"]) >= 0.999
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-4


@pytest.mark.real_shape
def test_image_parity_real_shape(tmp_path) -> None:
    model = ek.build_random_model("edgetam", seed=1, video=False)
    ek.save_model(model, tmp_path / "ckpt")
    out = ek.export_onnx(model, tmp_path / "onnx")
    pt, po = ek.ImagePredictor(ek.load_model(tmp_path / "ckpt")), ek.ImagePredictor(ek.load_model(out))
    img = sample_image(1024)
    pt.set_image(img)
    po.set_image(img)
    for kind in ("point", "two points, single mask", "box"):
        prompt = {k: (tuple(np.asarray(v) * 4) if k == "box" else [tuple(np.asarray(p) * 4) for p in v])
                  if k in ("points", "box") else v for k, v in PROMPTS[kind].items()}
        _same(pt.predict(**prompt), po.predict(**prompt), f"real shape, {kind}")
