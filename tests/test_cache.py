"""Embedding cache: a second open is a hit with no encoder call; a changed image, model,
normalisation or tiling misses; a write killed midway leaves nothing a later run would use;
a tampered or foreign entry is ignored; `edgetam embed` fills a cache that `edgetam auto` uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.io.cache import EmbeddingCache, image_signature, signature_key
from edgetam_kit.transforms import DEFAULT_PERCENTILES


@pytest.fixture()
def model(tiny_refs, monkeypatch) -> ek.EdgeTam:
    """A tiny model whose encoder passes (through any runtime built for it) are counted in ``model.encodes``."""
    from edgetam_kit.runtime import Runtime

    m = ek.load_model(tiny_refs.hf_folder)
    m.encodes = 0
    real = Runtime.encode_image

    def counting(self, pixels, *args, **kwargs):
        if self.model is m:
            m.encodes += 1
        return real(self, pixels, *args, **kwargs)

    monkeypatch.setattr(Runtime, "encode_image", counting)
    return m


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    img[20:60, 30:90] = (250, 30, 30)
    return img


def test_second_open_is_a_hit_without_encoding(model, image, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    first = ek.ImagePredictor(model, cache=cache)
    first.set_image(image)
    assert model.encodes == 1 and cache.misses == 1 and len(cache) == 1
    second = ek.ImagePredictor(model, cache=str(tmp_path / "c"))  # a folder works too
    second.set_image(image)
    assert model.encodes == 1, "the cached embedding must be used"
    assert second.cache.hits == 1
    a = first.predict(points=[[60, 40]], labels=[1])
    b = second.predict(points=[[60, 40]], labels=[1])
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.logits, b.logits)
    assert torch.equal(first.features.embed, second.features.embed)


def test_changes_miss(model, image, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    pred = ek.ImagePredictor(model, cache=cache)
    pred.set_image(image)
    changed = image.copy()
    changed[0, 0, 0] ^= 1  # one bit of one pixel
    pred.set_image(changed)
    assert model.encodes == 2
    pred.set_image(image, channels=0)  # another normalisation of the same bytes
    assert model.encodes == 3
    ek.ImagePredictor(model, cache=cache, percentiles=(0.5, 99.5)).set_image(image.astype(np.uint16))
    ek.ImagePredictor(model, cache=cache, percentiles=(1.0, 99.0)).set_image(image.astype(np.uint16))
    assert model.encodes == 5
    ek.ImagePredictor(model, cache=cache, tiling=True, tile_size=96, tile_overlap=24).set_image(image)
    assert model.encodes == 5 + 2  # 2 tiles, a separate entry
    with torch.no_grad():  # same model object, encoder weights changed in place
        model.mask_decoder.conv_s0.bias.add_(1e-3)
    pred.set_image(image)
    assert model.encodes == 8
    pred.set_image(image)  # and the new weights' entry is then a hit
    assert model.encodes == 8
    assert len(cache) == 7


def test_same_weights_from_the_other_format_hit(tiny_refs, model, image, tmp_path) -> None:
    """The model's identity is its encoder's weights, not the file they came from (the .pt also
    holds the video modules, the HF image checkpoint does not)."""
    ek.ImagePredictor(model, cache=tmp_path).set_image(image)
    from_pt = ek.load_model(tiny_refs.pt_path, config=tiny_refs.config)
    cache = EmbeddingCache(tmp_path)
    ek.ImagePredictor(from_pt, cache=cache).set_image(image)
    assert cache.hits == 1


def test_tampered_or_foreign_entries_are_ignored(model, image, tmp_path) -> None:
    import zarr

    cache = EmbeddingCache(tmp_path)
    pred = ek.ImagePredictor(model, cache=cache)
    pred.set_image(image)
    sig = image_signature(image, model, pred.percentiles, None, None)
    entry = cache.entry_path(sig)
    group = zarr.open_group(str(entry), mode="r+")
    forged = json.loads(json.dumps(sig))
    forged["model"]["weights"] = "0" * 40
    group.attrs["signature"] = forged  # an entry under our key that is not ours
    assert sig not in cache and cache.get(sig) is None
    pred.set_image(image)
    assert model.encodes == 2 and sig in cache  # re-encoded and replaced
    group = zarr.open_group(str(entry), mode="r+")
    del group.attrs["complete"]
    assert cache.get(sig) is None
    (tmp_path / "junk").mkdir()  # unrelated folders are never read as entries
    assert cache.get(sig) is None


def test_readonly_cache_never_writes(model, image, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "ro", readonly=True)
    ek.ImagePredictor(model, cache=cache).set_image(image)
    assert not (tmp_path / "ro").exists()


def test_a_write_killed_midway_leaves_nothing_usable(tiny_refs, model, image, tmp_path) -> None:
    root = tmp_path / "cache"
    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    sig = image_signature(image, model, pred.percentiles, None, None)
    torch.save({"sig": sig, "features": (pred.features.embed, *pred.features.high_res)}, tmp_path / "job.pt")
    # a separate process writes the entry and dies (no cleanup, no rename) after the first array
    script = textwrap.dedent(f"""
        import os, torch, zarr
        from edgetam_kit.io.cache import EmbeddingCache
        from edgetam_kit.modeling import ImageFeatures
        job = torch.load({str(tmp_path / 'job.pt')!r})
        real = zarr.Array.__setitem__
        writes = []
        def setitem(self, key, value):
            writes.append(1)
            if len(writes) == 2:
                os._exit(9)
            return real(self, key, value)
        zarr.Array.__setitem__ = setitem
        e, s0, s1 = job["features"]
        EmbeddingCache({str(root)!r}).put(job["sig"], ImageFeatures(e, (s0, s1)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    leftovers = [p.name for p in root.iterdir() if p.is_dir()]
    assert leftovers and all(name.startswith(".tmp-") for name in leftovers)
    cache = EmbeddingCache(root)
    assert sig not in cache and cache.get(sig) is None and len(cache) == 0
    encodes = model.encodes
    ek.ImagePredictor(model, cache=cache).set_image(image)
    assert model.encodes == encodes + 1  # the half-written entry was not used
    ek.ImagePredictor(model, cache=cache).set_image(image)
    assert model.encodes == encodes + 1 and cache.hits == 1


def test_signature_is_stable_and_complete(model, image) -> None:
    a = image_signature(image, model, (1.0, 99.8), None, None)
    b = image_signature(image.copy(), model, (1.0, 99.8), None, None)
    assert a == b and signature_key(a) == signature_key(b)
    assert set(a) == {"format", "image", "normalisation", "model", "tiling"}
    assert a["image"]["shape"] == [96, 128, 3] and a["model"]["dtype"] == "torch.float32"


def test_bad_cache_arguments(model, tmp_path) -> None:
    with pytest.raises(TypeError, match="cache must be None, an EmbeddingCache or a folder path"):
        ek.ImagePredictor(model, cache=3)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        EmbeddingCache(f)


def test_cli_embed_then_auto_uses_the_cache(tiny_refs, image, tmp_path, capsys) -> None:
    import skimage.io
    import tifffile

    from edgetam_kit.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    skimage.io.imsave(folder / "a.png", image, check_contrast=False)
    skimage.io.imsave(folder / "b.png", image[::-1].copy(), check_contrast=False)
    cache = tmp_path / "cache"
    assert main(["embed", str(folder), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(cache), "--quiet"]) == 0
    assert "2 frame(s): 2 embedded, 0 already" in capsys.readouterr().out
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([image[..., 0], image[..., 1], image[..., 0]]), photometric="minisblack")
    assert main(["embed", str(stack), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(cache), "--quiet"]) == 0
    assert "3 frame(s): 2 embedded, 1 already" in capsys.readouterr().out  # frames 0 and 2 are equal
    assert len(EmbeddingCache(cache)) == 4
    out = tmp_path / "masks.json"
    assert main(["auto", str(folder), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(out), "--cache", str(cache),
                 "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet"]) == 0
    assert "cache 2 hit(s), 0 miss(es)" in capsys.readouterr().out
    assert json.loads(out.read_text())["images"][1]["file_name"] == "b.png"
    assert main(["embed", str(tmp_path / "nope"), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(cache)]) == 2
    assert "SOURCE" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fp16 storage
def _entry_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_fp16_cache_halves_the_bytes_and_keeps_the_masks(model, image, tmp_path) -> None:
    import zarr

    c32, c16 = EmbeddingCache(tmp_path / "c32"), EmbeddingCache(tmp_path / "c16", precision="fp16")
    ek.ImagePredictor(model, cache=c32).set_image(image)
    ek.ImagePredictor(model, cache=c16).set_image(image)
    sig = image_signature(image, model, DEFAULT_PERCENTILES, None, None)
    ratio = _entry_bytes(c16.entry_path(sig)) / _entry_bytes(c32.entry_path(sig))
    print(f"fp16/fp32 entry bytes: {ratio:.3f}")
    assert ratio < 0.6
    assert all(zarr.open_group(str(c16.entry_path(sig)), mode="r")[n].dtype == np.float16
               for n in ("embed", "high_res_0", "high_res_1"))
    encodes = model.encodes
    again = EmbeddingCache(tmp_path / "c16", precision="fp16")
    cached = ek.ImagePredictor(model, cache=again)
    cached.set_image(image)
    assert model.encodes == encodes and again.hits == 1, "the fp16 entry must be used without encoding"
    assert cached.features.embed.dtype == torch.float32  # upcast to the dtype asked for
    assert again.get(sig, dtype=torch.float64).embed.dtype == torch.float64
    exact = ek.ImagePredictor(model)  # no cache
    exact.set_image(image)
    ious, logit_diff, score_diff = [], 0.0, 0.0
    for pt in ([20, 15], [60, 40], [100, 70], [40, 80], [110, 10]):
        a, b = exact.predict(points=[pt], labels=[1]), cached.predict(points=[pt], labels=[1])
        ious += [_iou(a.masks[k], b.masks[k]) for k in range(len(a.masks))]
        logit_diff = max(logit_diff, float(np.abs(a.logits - b.logits).max()))
        score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
    print(f"fp16 entry vs exact: IoU min {min(ious):.5f}, max |logit diff| {logit_diff:.3g}, "
          f"max |pred-IoU diff| {score_diff:.3g}")
    assert min(ious) >= 0.99
    assert logit_diff < 5e-3 and score_diff < 1e-3


def test_fp32_and_fp16_caches_in_one_folder_do_not_share_entries(model, image, tmp_path) -> None:
    c32, c16 = EmbeddingCache(tmp_path), EmbeddingCache(tmp_path, precision="fp16")
    ek.ImagePredictor(model, cache=c32).set_image(image)
    ek.ImagePredictor(model, cache=c16).set_image(image)
    assert (c32.misses, c32.hits, c16.misses, c16.hits) == (1, 0, 1, 0) and model.encodes == 2
    assert len(c32) == 2
    sig = image_signature(image, model, DEFAULT_PERCENTILES, None, None)
    assert c32.entry_path(sig) != c16.entry_path(sig) and c32.entry_path(sig).name == signature_key(sig)
    assert c16.stored_signature(sig)["cache_precision"] == "fp16" and "cache_precision" not in sig
    ek.ImagePredictor(model, cache=c32).set_image(image)
    ek.ImagePredictor(model, cache=c16).set_image(image)
    assert (c32.hits, c16.hits) == (1, 1) and model.encodes == 2


def test_fp16_clips_out_of_range_values(tmp_path) -> None:
    from edgetam_kit.modeling import ImageFeatures

    embed = torch.zeros(1, 4, 2, 2)
    embed[0, 0, 0, 0], embed[0, 1, 0, 0] = 1e6, -1e9
    feats = ImageFeatures(embed, (torch.ones(1, 1, 8, 8), torch.ones(1, 2, 4, 4)))
    cache = EmbeddingCache(tmp_path, precision="fp16")
    sig = {"test": "clip"}
    cache.put(sig, feats)
    back = cache.get(sig)
    assert back is not None and torch.isfinite(back.embed).all()
    assert back.embed[0, 0, 0, 0] == 65504 and back.embed[0, 1, 0, 0] == -65504


def test_bad_precision_and_repr(tmp_path) -> None:
    for bad in ("bf16", "float16", None):
        with pytest.raises(ValueError, match="precision"):
            EmbeddingCache(tmp_path, precision=bad)
    assert "precision='fp16'" in repr(EmbeddingCache(tmp_path, precision="fp16"))
    assert "precision='fp32'" in repr(EmbeddingCache(tmp_path))
    assert ek.describe(EmbeddingCache(tmp_path, precision="fp16")).fields["precision"] == "fp16"


def test_cli_cache_precision_is_passed(image, tmp_path, capsys) -> None:
    import skimage.io

    from edgetam_kit.cli import main

    png = tmp_path / "a.png"
    skimage.io.imsave(png, image, check_contrast=False)
    cache = tmp_path / "cache"
    base = ["embed", str(png), "--checkpoint", "random:tiny", "-o", str(cache), "--quiet"]
    assert main(base + ["--cache-precision", "fp16"]) == 0
    assert "1 embedded, 0 already" in capsys.readouterr().out
    assert main(base) == 0  # fp32 (the default) does not see the fp16 entry
    assert "1 embedded, 0 already" in capsys.readouterr().out
    assert main(["auto", str(png), "--checkpoint", "random:tiny", "-o", str(tmp_path / "m.json"), "--cache", str(cache),
                 "--cache-precision", "fp16", "--points-per-side", "2", "--pred-iou-thresh", "0",
                 "--stability-score-thresh", "0", "--quiet"]) == 0
    assert "cache 1 hit(s), 0 miss(es)" in capsys.readouterr().out
    assert main(base + ["--cache-precision", "fp8"]) == 2
    assert "--cache-precision" in capsys.readouterr().err
