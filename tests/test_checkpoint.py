"""Loading and saving through the real formats, the hub path, and named checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.testing.oracles import build_original
from edgetam_kit.plugins import PluginManager, reset_plugin_manager


def _outputs(model, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = ek.ImagePredictor(model)
    p.set_image(img)
    r = p.predict(points=[[40, 30]], labels=[1], box=[10, 5, 70, 55])
    return r.logits, r.scores


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((60, 80, 3)) * 255).astype(np.uint8)


def test_hf_round_trip_through_transformers(tiny_refs, tmp_path: Path, img: np.ndarray) -> None:
    """HF folder -> ours -> save_model -> transformers loads it -> same outputs."""
    from transformers import EdgeTamModel

    ours = ek.load_model(tiny_refs.hf_folder)
    out = ek.save_model(ours, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    reloaded_hf = EdgeTamModel.from_pretrained(out).eval()
    ref_sd, new_sd = tiny_refs.hf.state_dict(), reloaded_hf.state_dict()
    assert set(ref_sd) == set(new_sd)
    for k in ref_sd:
        torch.testing.assert_close(new_sd[k], ref_sd[k], rtol=0, atol=0, msg=k)
    assert reloaded_hf.config.prompt_encoder_config.image_size == 256
    px = torch.randn(1, 3, 256, 256)
    pts = torch.tensor([[[[100.0, 80.0]]]])
    lab = torch.tensor([[[1]]])
    with torch.inference_mode():
        a = tiny_refs.hf(pixel_values=px, input_points=pts, input_labels=lab)
        b = reloaded_hf(pixel_values=px, input_points=pts, input_labels=lab)
    # identical weights; from_pretrained may pick another attention kernel, so allow float rounding
    torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.iou_scores, b.iou_scores, rtol=0, atol=1e-6)
    # and ours reads its own output back identically
    np.testing.assert_array_equal(_outputs(ek.load_model(out), img)[0], _outputs(ours, img)[0])


def test_original_pt_to_hf_folder_and_back(tiny_refs, tmp_path: Path, img: np.ndarray) -> None:
    from_pt = ek.load_model(tiny_refs.pt_path, config="tiny")  # the original file holds the video model too
    from_hf = ek.load_model(tiny_refs.hf_folder)  # EdgeTamModel.save_pretrained: image model only
    assert from_pt.has_video and not from_hf.has_video
    pt_sd = from_pt.state_dict()
    for k, v in from_hf.state_dict().items():
        torch.testing.assert_close(pt_sd[k], v, rtol=0, atol=0, msg=k)
    again = ek.load_model(ek.save_model(from_pt, tmp_path / "converted"))
    assert again.has_video
    for k, v in again.state_dict().items():
        torch.testing.assert_close(pt_sd[k], v, rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(_outputs(again, img)[0], _outputs(from_pt, img)[0])


def test_video_checkpoints_load_with_video_modules(tiny_refs, tmp_path: Path) -> None:
    """A video checkpoint (original layout, and HF EdgeTamVideoModel layout) loads with the
    tracker's modules; an image-only checkpoint loads without them."""
    assert not ek.load_model(tiny_refs.hf_folder).has_video
    video = build_original(ek.get_config("tiny"), video=True)
    torch.save({"model": video.state_dict()}, tmp_path / "video.pt")
    m = ek.load_model(tmp_path / "video.pt", config="tiny")
    assert m.has_video
    sd, ref = m.state_dict(), video.state_dict()
    torch.testing.assert_close(sd["spatial_perceiver.latents_1d"], ref["spatial_perceiver.latents"])
    k, v = ref["spatial_perceiver.layers.1.attn.to_kv.weight"].chunk(2)
    torch.testing.assert_close(sd["spatial_perceiver.layers.1.cross_attention.k_proj.weight"], k)
    torch.testing.assert_close(sd["spatial_perceiver.layers.1.cross_attention.v_proj.weight"], v)
    torch.testing.assert_close(sd["memory_temporal_positional_encoding"], ref["maskmem_tpos_enc"])

    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel, EdgeTamVisionConfig, TimmWrapperConfig

    vc = EdgeTamVisionConfig(backbone_config=TimmWrapperConfig(
        architecture="repvit_m1", model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}))
    hf_video = EdgeTamVideoModel(EdgeTamVideoConfig(
        vision_config=vc, enable_temporal_pos_encoding_for_object_pointers=False))
    hf_video.save_pretrained(tmp_path / "hfvideo")
    m2 = ek.load_model(tmp_path / "hfvideo")
    assert m2.has_video and m2.occlusion_spatial_embedding_parameter is not None
    hf_sd = hf_video.state_dict()
    for key, value in m2.state_dict().items():
        torch.testing.assert_close(value, hf_sd[key], rtol=0, atol=0, msg=key)
    # written back with the image model; transformers' image model still loads the folder
    saved = ek.save_model(m2, tmp_path / "resaved")
    assert ek.load_model(saved).has_video
    from transformers import EdgeTamModel

    EdgeTamModel.from_pretrained(saved)


def test_dtype_and_device(tiny_refs, img: np.ndarray) -> None:
    m = ek.load_model(tiny_refs.hf_folder, dtype="bfloat16")
    assert m.dtype == torch.bfloat16 and m.device.type == "cpu"
    p = ek.ImagePredictor(m)
    p.set_image(img)
    r = p.predict(points=[[40, 30]])
    ref = ek.ImagePredictor(ek.load_model(tiny_refs.hf_folder))
    ref.set_image(img)
    assert r.masks.shape == ref.predict(points=[[40, 30]]).masks.shape == (3, 60, 80)


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The huggingface_hub cache layout: models--owner--name/{refs/main, snapshots/<rev>/...}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    rev = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


def test_hub_id_from_local_cache_and_offline_error(tiny_refs, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "someone/edgetam-tiny", {
        "config.json": (tiny_refs.hf_folder / "config.json").read_bytes(),
        "model.safetensors": (tiny_refs.hf_folder / "model.safetensors").read_bytes(),
    })
    _fake_hub_cache(cache, "someone/edgetam-orig", {"edgetam.pt": tiny_refs.pt_path.read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    m = ek.load_model("someone/edgetam-tiny")
    assert m.config.image_size == 256

    # a named checkpoint pointing at a hub file in the original layout
    class Plugin:
        @ek.hookimpl
        def edgetam_kit_checkpoints(self):
            return [ek.CheckpointSpec("tiny-orig", "someone/edgetam-orig", filename="edgetam.pt", config="tiny")]

    reset_plugin_manager()
    from edgetam_kit.plugins import manager as plugins

    plugins.get_plugin_manager().register(Plugin(), name="test-plugin")
    try:
        assert ek.load_model("tiny-orig").config.image_size == 256
        t0 = time.monotonic()
        with pytest.raises(FileNotFoundError, match=r"not in the local Hugging Face cache.*HF_HUB_OFFLINE.*local path"):
            ek.load_model("someone/not-cached")
        assert time.monotonic() - t0 < 10  # no network retries when offline
        with pytest.raises(FileNotFoundError, match="edgetam-original|facebook/EdgeTAM"):
            ek.load_model("edgetam-original")  # built-in name, not cached here
    finally:
        reset_plugin_manager()


def test_named_checkpoint_from_local_folder(tiny_refs) -> None:
    pm = PluginManager.create(autoload=False)

    class Local:
        @ek.hookimpl
        def edgetam_kit_checkpoints(self):
            return [ek.CheckpointSpec("lab-tiny", str(tiny_refs.hf_folder))]

    pm.register(Local(), name="lab")
    assert {"edgetam", "edgetam-original", "lab-tiny"} <= set(pm.checkpoints())
    from edgetam_kit.plugins import manager as plugins

    plugins._manager = pm
    try:
        assert ek.load_model("lab-tiny").config.image_size == 256
    finally:
        reset_plugin_manager()


def test_config_json_round_trip(tiny_refs) -> None:
    from edgetam_kit.io.checkpoint import config_from_hf, config_to_hf

    hf_cfg = json.loads((tiny_refs.hf_folder / "config.json").read_text())
    ours = config_from_hf(hf_cfg)
    again = config_from_hf(config_to_hf(ours))
    assert (again.image_size, again.image_encoder, again.prompt_encoder, again.mask_decoder) == (
        ours.image_size, ours.image_encoder, ours.prompt_encoder, ours.mask_decoder)
