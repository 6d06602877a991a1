"""Inference runtimes (issue 5): the `edgetam_kit_backends` hook, the default eager backend
(folded RepViT, channels-last, composed FPN projections), opt-in bf16 and torch.compile,
the per-image decoder context, and `edgetam bench`'s table writer. Speed itself is measured
by benchmarks/run_all.py, never here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.plugins import get_plugin_manager
from edgetam_kit.runtime import Backend, FoldedEncoder, Runtime, prepare_eager, runtime_of


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-runtime")
    ek.save_model(ek.build_random_model("tiny", seed=3, video=True), folder)
    return folder


def _features(model: ek.EdgeTam, image: np.ndarray):
    from edgetam_kit.transforms import to_model_input, to_unit_rgb

    rt = runtime_of(model)
    with rt.inference():
        return rt.encode_image(to_model_input(to_unit_rgb(image), model.config.image_size, model.device, model.dtype))


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


def test_builtin_backends_come_through_the_hook() -> None:
    found = get_plugin_manager().backends()
    assert {"eager", "compiled"} <= set(found)
    assert all(isinstance(b, Backend) for b in found.values())
    pairs = get_plugin_manager().call("edgetam_kit_backends")
    assert ("builtin", found["eager"]) in pairs  # registered by the built-in plugin, not hard-wired


def test_load_model_uses_eager_backend_by_default(tiny_folder: Path) -> None:
    model = ek.load_model(tiny_folder)
    assert isinstance(runtime_of(model), Runtime) and runtime_of(model).backend == "eager"
    assert isinstance(runtime_of(model).encoder, FoldedEncoder)
    plain = ek.load_model(tiny_folder, backend="none")
    assert runtime_of(plain).backend == "none" and runtime_of(plain).encoder is None


def test_fused_pointwise_kernels_and_their_fallbacks() -> None:
    """cpu_fusion's fused conv+GELU and conv+residual equal the plain ops, on the oneDNN path
    (float32 CPU) and on the fallback (float64, autocast)."""
    from edgetam_kit.runtime.cpu_fusion import conv_add, conv_gelu

    torch.manual_seed(0)
    c1, c2 = torch.nn.Conv2d(8, 16, 1), torch.nn.Conv2d(16, 8, 1)
    x = torch.randn(2, 8, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = x + c2(torch.nn.functional.gelu(c1(x)))
        got = conv_add(conv_gelu(x, c1), c2, x)
        assert _close(got, want, 1e-5)
        c1d, c2d = c1.double(), c2.double()
        assert _close(conv_add(conv_gelu(x.double(), c1d), c2d, x.double()), want.double(), 1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_bf16 = conv_add(conv_gelu(x.float(), c1.float()), c2.float(), x.float())
        assert _close(got_bf16.float(), want, 5e-2)


def test_softmax_over_few_tokens_equals_torch_softmax() -> None:
    """The decoder's short-row softmax equals torch's, for large logits too (no overflow), and
    keeps the autograd graph when a gradient is recorded."""
    from edgetam_kit.runtime.fast_decoder import softmax_few

    torch.manual_seed(0)
    x = torch.randn(2, 300, 8, 9) * torch.tensor([1.0, 50.0, 500.0]).repeat_interleave(100).view(1, 300, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(softmax_few(x.clone()), x.softmax(-1), atol=1e-6)
    leaf = x[:1, :5].clone().requires_grad_(True)
    (softmax_few(leaf) * torch.arange(9.0)).sum().backward()
    ref = leaf.detach().clone().requires_grad_(True)
    (ref.softmax(-1) * torch.arange(9.0)).sum().backward()
    assert torch.allclose(leaf.grad, ref.grad, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", pytest.param("edgetam", marks=pytest.mark.real_shape)])
def test_folded_encoder_matches_plain_modules(preset: str, images: dict[str, np.ndarray]) -> None:
    model = ek.build_random_model(preset, seed=5, video=False)
    plain = _features(model, images["astronaut"])
    ek.optimize(model)
    fast = _features(model, images["astronaut"])
    assert runtime_of(model).encoder.compose  # EdgeTAM: levels 0/1 have no top-down path
    assert runtime_of(model).encoder.fused_blocks > 0  # GELU/residual fused into the convs (cpu_fusion)
    assert _close(fast.embed, plain.embed) and _close(fast.high_res[0], plain.high_res[0])
    assert _close(fast.high_res[1], plain.high_res[1])
    assert fast.embed.is_contiguous() and fast.high_res[0].is_contiguous()


def test_optimize_keeps_state_dict_and_follows_to(tiny_folder: Path, tmp_path: Path,
                                                  images: dict[str, np.ndarray]) -> None:
    model = ek.load_model(tiny_folder)
    plain = ek.load_model(tiny_folder, backend="none")
    assert model.state_dict().keys() == plain.state_dict().keys()  # the folded copy is not registered
    ek.save_model(model, tmp_path / "again")
    again = ek.load_model(tmp_path / "again", backend="none")
    for k, v in plain.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    model.to(torch.float64)
    assert next(runtime_of(model).encoder.parameters()).dtype == torch.float64
    f = _features(model, images["astronaut"])
    assert f.embed.dtype == torch.float64


def test_a_plugin_backend_is_used(tiny_folder: Path, images: dict[str, np.ndarray]) -> None:
    calls = []

    def prepare(model, precision):
        rt = prepare_eager(model, precision)
        inner = rt.encoder

        def encoder(pixels):
            calls.append(tuple(pixels.shape))
            return inner(pixels)

        rt.encoder, rt.backend = encoder, "counting"
        return rt

    class CountingPlugin:
        @ek.hookimpl
        def edgetam_kit_backends(self):
            return [Backend("counting", prepare, "test backend")]

    pm = get_plugin_manager()
    plugin = CountingPlugin()
    pm.register(plugin, name="counting-plugin")
    try:
        assert "counting" in ek.backends()
        model = ek.load_model(tiny_folder, backend="counting")
        pred = ek.ImagePredictor(model)
        pred.set_image(images["astronaut"])
        assert calls == [(1, 3, 256, 256)]
        ref = ek.ImagePredictor(ek.load_model(tiny_folder, backend="none"))
        ref.set_image(images["astronaut"])
        a = pred.predict(points=[[300, 200]], labels=[1])
        b = ref.predict(points=[[300, 200]], labels=[1])
        assert np.abs(a.logits - b.logits).max() < 1e-3
    finally:
        pm.pm.unregister(plugin)
    assert "counting" not in ek.backends()


def test_bad_runtime_arguments(tiny_folder: Path) -> None:
    model = ek.load_model(tiny_folder)
    with pytest.raises(ValueError, match="backend must be one of.*eager"):
        ek.optimize(model, backend="onnx-missing")
    with pytest.raises(ValueError, match="precision must be one of"):
        ek.optimize(model, precision="int3")
    with pytest.raises(ValueError, match="precision must be one of"):
        ek.load_model(tiny_folder, precision="half-ish")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        ek.optimize(model, threads=0)
    with pytest.raises(TypeError, match="model must be an EdgeTam"):
        ek.optimize("edgetam")
    assert runtime_of(model).backend == "eager"  # rejected calls change nothing


def test_threads_setting(tiny_folder: Path) -> None:
    before = torch.get_num_threads()
    try:
        ek.optimize(ek.load_model(tiny_folder), threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_decoder_context_gives_identical_masks(tiny_folder: Path, images: dict[str, np.ndarray]) -> None:
    """The per-image decoder context (image tokens, first-layer keys/values/queries) changes
    nothing: decode with and without it, one object and three on two images."""
    model = ek.load_model(tiny_folder)
    pred = ek.ImagePredictor(model)
    pred.set_images([images["astronaut"], images["wide"]])
    feats = pred.features
    coords = torch.tensor([[[100.0, 80.0]], [[30.0, 200.0]], [[128.0, 128.0]]])
    labels = torch.ones(3, 1, dtype=torch.long)
    index = torch.tensor([0, 1, 1])
    rt = runtime_of(model)
    with torch.inference_mode():
        sel = feats.select(index)
        plain = rt.decode(sel, coords, labels, None, True)
        ctx = rt.image_context(feats).select(index)
        fast = rt.decode(sel, coords, labels, None, True, context=ctx)
    assert torch.equal(plain.low_res_logits, fast.low_res_logits)
    assert torch.equal(plain.iou, fast.iou)


def test_bf16_tracking_stays_close_to_fp32(tiny_folder: Path, images: dict[str, np.ndarray]) -> None:
    """bf16 autocast everywhere but the mask decoder, which runs in float32 (autocast off, float32
    inputs): tracked masks and image masks stay within the issue's IoU >= 0.98 of fp32."""
    from edgetam_kit.testing.synthetic import SyntheticSource

    src = SyntheticSource(4, 120, 160, seed=0)
    frames = np.stack([src.frame(i) for i in range(4)])
    model = ek.load_model(tiny_folder)
    seen: list[tuple[torch.dtype, bool]] = []
    hook = model.mask_decoder.pred_obj_score_head.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].dtype, torch.is_autocast_enabled("cpu"))))
    runs, image_masks = {}, {}
    for precision in ("fp32", "bf16"):
        ek.optimize(model, precision=precision)
        assert runtime_of(model).precision == precision
        s = ek.VideoTracker(model).start(frames)
        s.add_prompt(0, 1, points=[src.center(0)])
        runs[precision] = [m[0] for _, _, m in s.propagate()]
        pred = ek.ImagePredictor(model)
        pred.set_image(images["astronaut"])
        image_masks[precision] = pred.predict(points=[[300, 200]]).masks
    hook.remove()
    assert seen and set(seen) == {(torch.float32, False)}  # the decoder never ran in bf16
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert 0 < a.sum() < a.size  # a real mask, not empty or full
        assert (a & b).sum() / (a | b).sum() >= 0.98
    for a, b in zip(image_masks["fp32"], image_masks["bf16"]):
        assert 0 < a.sum() < a.size
        assert (a & b).sum() / (a | b).sum() >= 0.98


@pytest.mark.skipif(importlib.util.find_spec("torch._inductor") is None, reason="no inductor")
def test_compiled_backend_matches_eager(tiny_folder: Path, images: dict[str, np.ndarray]) -> None:
    if not ek.backends()["compiled"].available():
        pytest.skip("no C compiler for torch.compile on this machine")
    eager = _features(ek.load_model(tiny_folder), images["astronaut"])
    model = ek.load_model(tiny_folder, backend="compiled")
    assert runtime_of(model).backend == "compiled"
    compiled = _features(model, images["astronaut"])
    assert _close(compiled.embed, eager.embed, 1e-3)
    # tracking two objects: the compiled memory attention gets the frame's shared prefix
    from edgetam_kit.testing.synthetic import SyntheticSource

    src = SyntheticSource(3, 120, 160, seed=1)
    frames = np.stack([src.frame(i) for i in range(3)])
    runs = []
    for m in (ek.load_model(tiny_folder), model):
        s = ek.VideoTracker(m).start(frames)
        s.add_prompt(0, 1, points=[src.center(0)])
        s.add_prompt(0, 2, points=[[20, 20]])
        runs.append([masks for _, _, masks in s.propagate()])
    for a, b in zip(*runs):
        assert a.shape == b.shape == (2, 120, 160)
        for k in range(2):
            union = (a[k] | b[k]).sum()
            assert union == 0 or (a[k] & b[k]).sum() / union >= 0.99


def test_bench_table_and_cli_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from edgetam_kit.cli import main

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    rows = [run_all.Row("image encode", "s", {"edgetam-kit": 0.5, "original": 1.1, "transformers": 1.0}, ">= 2x"),
            run_all.Row("click", "ms", {"edgetam-kit": 0.02, "original": 0.1}, "<= 25 ms", "note")]
    table = run_all.render(rows, "test machine", "2026-01-01")
    assert "| image encode | 0.50 s | 1.10 s | 1.00 s | 2.20x | 2.00x | >= 2x |" in table
    assert "| click | 20.0 ms | 100.0 ms | - | 5.00x | - | <= 25 ms | note |" in table
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    run_all.write_markdown(str(doc), table)
    run_all.write_markdown(str(doc), table.replace("0.50 s", "0.40 s"))  # replaced in place, not appended
    text = doc.read_text()
    assert text.count(run_all.BEGIN) == 1 and "0.40 s" in text and "0.50 s" not in text and "intro" in text

    monkeypatch.setenv("EDGETAM_BENCHMARKS_DIR", str(tmp_path / "nowhere"))
    assert main(["bench", "--quick"]) == 2
    assert "benchmarks/ folder" in capsys.readouterr().err


def test_a_model_used_and_dropped_is_freed(tiny_folder: Path, images: dict[str, np.ndarray]) -> None:
    """Loading, clicking, tracking and re-optimizing a model, then dropping it, frees it: no
    table of runtimes keeps models alive (a model switched in napari, a worker loading
    checkpoints in turn). Copies and pickles start without the original's runtime."""
    import copy
    import gc
    import io
    import pickle
    import weakref

    model = ek.load_model(tiny_folder)
    pred = ek.ImagePredictor(model)
    pred.set_image(images["astronaut"])
    pred.predict(points=[[100, 120]], labels=[1])
    ek.optimize(model, "eager", "bf16")
    session = ek.VideoTracker(model).start(np.stack([images["astronaut"]] * 2))
    session.add_prompt(0, 1, points=[[100, 120]], labels=[1])
    list(session.propagate())

    twin = copy.deepcopy(model)
    assert runtime_of(twin).backend == "none" and runtime_of(model).backend == "eager"
    assert runtime_of(twin).model is twin and runtime_of(model).model is model
    buf = io.BytesIO()
    torch.save(model, buf)  # the whole module pickles: the runtime's closures are not in it
    assert runtime_of(pickle.loads(pickle.dumps(copy.copy(model)))).backend == "none"

    ref = weakref.ref(model)
    tensors = [weakref.ref(p) for p in model.parameters()]
    del model, pred, session, twin
    gc.collect()
    assert ref() is None, "the model outlived every reference to it"
    assert all(t() is None for t in tensors)
