"""LoRA adapters (fine-tuning issue): the wrappers, merging, adapter folders, and loading an
adapter folder through ek.load_model (base + merged adapter, runtime built from merged weights)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgetam_kit as ek
from edgetam_kit.io.adapter import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter_folder, load_adapter,
                                    save_adapter)
from edgetam_kit.modeling.lora import (LoRAConfig, LoRAConv2d, LoRALinear, add_lora, lora_state_dict, merge_lora,
                                       merge_lora_weights)

CONFIG = LoRAConfig(rank=4, alpha=8.0)


def _perturb(model: nn.Module, seed: int = 0, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".lora_b"):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _outputs(model: ek.EdgeTam, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 3, 256, 256, generator=g)
    coords = torch.tensor([[[64.0, 80.0]], [[190.0, 120.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad():
        feats = model.encode_image(pixels)
        out = model.decode(feats, coords, labels)
    return [feats.embed, *feats.high_res, out.low_res_logits, out.iou, out.object_score]


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor], rel: float = 1e-5) -> None:
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


@pytest.fixture(scope="module")
def base() -> ek.EdgeTam:
    return ek.build_random_model("tiny", seed=1, video=False)


@pytest.fixture(scope="module")
def tuned(base: ek.EdgeTam) -> ek.EdgeTam:
    """``base`` with adapters whose B factors are random (so they change every output)."""
    model = copy.deepcopy(base)
    add_lora(model, CONFIG)
    _perturb(model)
    return model


@pytest.fixture(scope="module")
def base_folder(base: ek.EdgeTam, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ek.save_model(base, tmp_path_factory.mktemp("lora") / "base")


# ----------------------------------------------------------------------------- wrappers
def test_wrappers_start_as_identity_and_merge_exactly() -> None:
    torch.manual_seed(0)
    lin, conv = nn.Linear(6, 5), nn.Conv2d(6, 5, kernel_size=1, stride=2, padding=1)
    x, img = torch.randn(3, 6), torch.randn(2, 6, 7, 7)
    wl, wc = LoRALinear(copy.deepcopy(lin), rank=2, alpha=4.0), LoRAConv2d(copy.deepcopy(conv), rank=2, alpha=4.0)
    assert torch.equal(wl(x), lin(x)) and torch.equal(wc(img), conv(img))
    assert wl.scale == 2.0 and not wl.base.weight.requires_grad and wl.lora_a.requires_grad
    assert torch.count_nonzero(wl.lora_b) == 0 and torch.count_nonzero(wl.lora_a) > 0
    with torch.no_grad():
        wl.lora_b.normal_()
        wc.lora_b.normal_()
    yl, yc = wl(x), wc(img)
    assert not torch.allclose(yl, lin(x)) and not torch.allclose(yc, conv(img))
    torch.testing.assert_close(wl.merged()(x), yl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wc.merged()(img), yc, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="base"):
        LoRAConv2d(nn.Conv2d(4, 4, 3))
    with pytest.raises(TypeError, match="base"):
        LoRAConv2d(nn.Conv2d(4, 4, 1, groups=4))


def test_add_lora_is_identity_and_trains_only_the_factors(base: ek.EdgeTam) -> None:
    model = copy.deepcopy(base)
    names = add_lora(model, CONFIG)
    assert names == sorted(names)
    assert "mask_decoder.conv_s0" in names and "mask_decoder.conv_s1" in names
    assert any(n.startswith("vision_encoder.neck.convs.") for n in names)
    assert any(n.endswith("channel_mixer.conv1.c") for n in names)
    assert not any(n.endswith("token_mixer.conv.c") or n.startswith("prompt_encoder") for n in names)  # dw / k x k
    assert any(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{f}" for n in names for f in ("lora_a", "lora_b")}
    _assert_close(_outputs(model), _outputs(base), rel=0)
    assert set(lora_state_dict(model)) == trainable
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, CONFIG)


def test_decoder_only_targets(base: ek.EdgeTam) -> None:
    model = copy.deepcopy(base)
    names = add_lora(model, LoRAConfig(targets=("mask_decoder.transformer",)))
    assert names and all(n.startswith("mask_decoder.transformer.") for n in names)


def test_merge_equals_wrapped_and_keeps_keys(base: ek.EdgeTam, tuned: ek.EdgeTam) -> None:
    wrapped = _outputs(tuned)
    assert not torch.allclose(wrapped[3], _outputs(base)[3])  # the adapters change the masks
    merged = merge_lora(copy.deepcopy(tuned))
    assert list(merged.state_dict()) == list(base.state_dict())
    assert not any(isinstance(m, (LoRALinear, LoRAConv2d)) for m in merged.modules())
    _assert_close(_outputs(merged), wrapped)
    # the pure-tensor path gives the same weights
    plain = copy.deepcopy(base)
    merge_lora_weights(plain.state_dict(), lora_state_dict(tuned), CONFIG)
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[k], v, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- adapter folders
def test_saved_model_and_adapter_load_to_the_wrapped_outputs(tuned: ek.EdgeTam, base_folder: Path,
                                                             tmp_path: Path) -> None:
    want = _outputs(tuned)
    merged_dir = ek.save_model(merge_lora(copy.deepcopy(tuned)), tmp_path / "merged")
    adapter_dir = save_adapter(tuned, tmp_path / "adapter", str(base_folder), CONFIG)
    assert is_adapter_folder(adapter_dir) and not is_adapter_folder(merged_dir)
    assert sorted(p.name for p in adapter_dir.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]  # no temp files left
    meta = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    assert meta == {"format": "edgetam-kit-lora", "base": str(base_folder), "rank": 4, "alpha": 8.0,
                    "targets": ["mask_decoder", "vision_encoder"]}
    base_src, config, tensors = load_adapter(adapter_dir)
    assert base_src == str(base_folder) and config == CONFIG and set(tensors) == set(lora_state_dict(tuned))
    for src in (merged_dir, adapter_dir):
        _assert_close(_outputs(ek.load_model(src, backend="none")), want)
    # an adapter written beside full weights: the full weights are loaded (no base needed)
    save_adapter(tuned, merged_dir, "no-such-base", CONFIG)
    _assert_close(_outputs(ek.load_model(merged_dir, backend="none")), want)


def test_adapter_with_relative_and_named_bases(base_folder: Path, tmp_path: Path) -> None:
    # relative base: next to the adapter folder
    (tmp_path / "base").symlink_to(base_folder, target_is_directory=True)
    plain = ek.load_model(base_folder, backend="none")
    model = copy.deepcopy(plain)
    add_lora(model, CONFIG)
    _perturb(model, seed=2)
    save_adapter(model, tmp_path / "adapter", "../base", CONFIG)
    _assert_close(_outputs(ek.load_model(tmp_path / "adapter", backend="none")), _outputs(model))
    # a checkpoint name
    rnd = ek.load_model("random:tiny", backend="none")
    add_lora(rnd, LoRAConfig(rank=2, targets=("mask_decoder",)))
    _perturb(rnd, seed=3)
    save_adapter(rnd, tmp_path / "adapter-rnd", "random:tiny", LoRAConfig(rank=2, targets=("mask_decoder",)))
    loaded = ek.load_model(tmp_path / "adapter-rnd", backend="none")
    _assert_close(_outputs(loaded), _outputs(rnd))
    assert loaded.has_video and getattr(loaded, "random_weights", None) == "random:tiny"  # still labelled random


def test_adapter_folder_runs_on_the_eager_runtime(tuned: ek.EdgeTam, base_folder: Path, tmp_path: Path) -> None:
    """load_model(adapter) builds the fast paths (folded encoder, fast decoder) from merged weights."""
    from edgetam_kit.runtime import FoldedEncoder, runtime_of

    adapter_dir = save_adapter(tuned, tmp_path / "adapter", str(base_folder), CONFIG)
    fast = ek.load_model(adapter_dir)
    assert runtime_of(fast).backend == "eager" and isinstance(runtime_of(fast).encoder, FoldedEncoder)
    plain = ek.save_model(merge_lora(copy.deepcopy(tuned)), tmp_path / "merged")
    slow = ek.load_model(plain, backend="none")
    unadapted = ek.load_model(base_folder, backend="none")
    image = (np.random.default_rng(0).random((200, 240, 3)) * 255).astype(np.uint8)
    results = []
    for m in (fast, slow, unadapted):
        pred = ek.ImagePredictor(m)
        pred.set_image(image)
        results.append(pred.predict(points=[[60, 80]], labels=[1], multimask=True))
    r_fast, r_slow, r_base = results
    assert np.abs(r_fast.logits - r_slow.logits).max() <= 1e-3 * max(1.0, np.abs(r_slow.logits).max())
    assert (r_fast.masks != r_slow.masks).mean() < 1e-3
    np.testing.assert_allclose(r_fast.scores, r_slow.scores, rtol=1e-4, atol=1e-5)
    assert not np.allclose(r_slow.logits, r_base.logits)  # the adapter was applied


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rank": 0}, "rank"), ({"rank": 2.0}, "rank"), ({"rank": True}, "rank"), ({"alpha": 0}, "alpha"),
    ({"alpha": float("nan")}, "alpha"), ({"targets": ()}, "targets"), ({"targets": "mask_decoder"}, "targets"),
    ({"targets": ("",)}, "targets"), ({"dropout": 1.0}, "dropout"),
])
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LoRAConfig(**kwargs)


def test_no_target_matched(base: ek.EdgeTam) -> None:
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=r"targets: .*'decoder'"):
        add_lora(model, LoRAConfig(targets=("decoder",)))  # a prefix of a name component does not match
    assert not any(isinstance(m, (LoRALinear, LoRAConv2d)) for m in model.modules())
    with pytest.raises(ValueError, match="model: has no LoRA"):
        save_adapter(model, "unused", "random:tiny", CONFIG)


def test_bad_adapter_folders(tuned: ek.EdgeTam, base_folder: Path, tmp_path: Path) -> None:
    folder = save_adapter(tuned, tmp_path / "a", str(base_folder), CONFIG)
    with pytest.raises(ValueError, match="config: rank"):
        save_adapter(tuned, tmp_path / "b", str(base_folder), LoRAConfig(rank=8))
    cfg_text = (folder / ADAPTER_CONFIG).read_text()

    (folder / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(ek.CheckpointError, match=ADAPTER_CONFIG):
        ek.load_model(folder)
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**json.loads(cfg_text), "format": "peft"}))
    with pytest.raises(ek.CheckpointError, match=f"{ADAPTER_CONFIG}: format"):
        load_adapter(folder)
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**json.loads(cfg_text), "rank": 0}))
    with pytest.raises(ek.CheckpointError, match=f"{ADAPTER_CONFIG}: rank"):
        load_adapter(folder)
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**json.loads(cfg_text), "rank": 2}))
    with pytest.raises(ek.CheckpointError, match=f"{ADAPTER_WEIGHTS}: does not fit"):
        ek.load_model(folder)  # factors of rank 4 under a rank-2 config
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**json.loads(cfg_text), "base": "."}))
    with pytest.raises(ek.CheckpointError, match="itself an adapter"):
        ek.load_model(folder)
    (folder / ADAPTER_CONFIG).write_text(cfg_text)

    data = (folder / ADAPTER_WEIGHTS).read_bytes()
    (folder / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ek.CheckpointError, match=ADAPTER_WEIGHTS):
        ek.load_model(folder)
    (folder / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=ADAPTER_WEIGHTS):
        ek.load_model(folder)


def test_merge_lora_weights_rejects_mismatches(base: ek.EdgeTam) -> None:
    state = {"w.weight": torch.zeros(5, 6)}
    good = {"w.lora_a": torch.ones(2, 6), "w.lora_b": torch.ones(5, 2)}
    merge_lora_weights(state, good, LoRAConfig(rank=2, alpha=2.0))
    assert torch.equal(state["w.weight"], torch.full((5, 6), 2.0))
    with pytest.raises(ValueError, match="lora: .*needs both"):
        merge_lora_weights(state, {"w.lora_a": torch.ones(2, 6)}, LoRAConfig(rank=2))
    with pytest.raises(ValueError, match="lora: .*x.weight: not in the model"):
        merge_lora_weights(state, {"x.lora_a": torch.ones(2, 6), "x.lora_b": torch.ones(5, 2)}, LoRAConfig(rank=2))
    with pytest.raises(ValueError, match="lora: .*do not fit"):
        merge_lora_weights(state, {"w.lora_a": torch.ones(2, 7), "w.lora_b": torch.ones(5, 2)}, LoRAConfig(rank=2))
