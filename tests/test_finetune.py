"""ek.finetune: the result loads everywhere, runs resume exactly, cancel keeps the best checkpoint,
the embedding cache follows the weights, bad input is named. The learning tests (the model must
really learn) are in test_finetune_learning.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.testing.cells import synthetic_cells
from edgetam_kit.training.state import load_state
from kill_helpers import kill, wait_line
from reference_runners import HFRunner, assert_match

REPO = Path(__file__).resolve().parents[1]
QUICK = dict(val_fraction=0.25, eval_every=2, patience=None)


@pytest.fixture(scope="module")
def cells():
    return synthetic_cells(8, size=128, seed=3)


@pytest.fixture(scope="module")
def base():
    return ek.build_random_model("tiny", video=False)


@pytest.fixture(scope="module")
def tuned_all(tmp_path_factory, cells, base) -> ek.FinetuneResult:
    """A short run of "all" (the image features change): 4 steps."""
    return ek.finetune(base, cells, tmp_path_factory.mktemp("ft") / "all", train="all", steps=4, **QUICK)


def test_result_folder_card_and_history(tuned_all) -> None:
    out = tuned_all.path
    assert {"config.json", "model.safetensors", "README.md", "training.json"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "training.json").read_text())
    assert info["settings"]["train"] == "all" and info["steps_done"] == 4
    assert [r["step"] for r in info["history"]] == [0, 2, 4]
    assert info["best_val_iou"] == tuned_all.best_iou == max(r["val_iou"] for r in info["history"])
    card = (out / "README.md").read_text()
    assert "Validation IoU" in card and "all" in card


def test_tuned_model_loads_in_transformers_with_equal_outputs(tuned_all) -> None:
    """transformers' EdgeTamModel reads the folder; its masks equal ours from the same folder."""
    from transformers import EdgeTamModel

    hf = EdgeTamModel.from_pretrained(tuned_all.path).eval()
    ours = ek.ImagePredictor(ek.load_model(tuned_all.path))
    img = synthetic_cells(1, size=(96, 128), seed=9).images[0]
    ours.set_image(img)
    runner = HFRunner(hf, 256)
    runner.set_images([np.repeat(img[..., None], 3, axis=2)])
    for kw in (dict(points=[[60, 40]], labels=[1]), dict(box=[20, 10, 90, 70])):
        assert_match(ours.predict(**kw), runner.run(0, **kw), f"hf/{sorted(kw)}")


def test_tuned_model_same_after_restart(tuned_all) -> None:
    """A new process loads the folder and gets the masks this process gets from the result."""
    img = synthetic_cells(1, size=(96, 128), seed=9).images[0]
    pred = ek.ImagePredictor(tuned_all.model)
    pred.set_image(img)
    here = pred.predict(points=[[60, 40]], labels=[1]).logits
    code = (f"import numpy as np, edgetam_kit as ek\n"
            f"from edgetam_kit.testing.cells import synthetic_cells\n"
            f"p = ek.ImagePredictor(ek.load_model({str(tuned_all.path)!r}))\n"
            f"p.set_image(synthetic_cells(1, size=(96, 128), seed=9).images[0])\n"
            f"np.save({str(tuned_all.path / 'there.npy')!r}, p.predict(points=[[60, 40]], labels=[1]).logits)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    there = np.load(tuned_all.path / "there.npy")
    np.testing.assert_allclose(there, here, atol=1e-4)


def test_cache_never_serves_embeddings_of_the_old_weights(tuned_all, base, tmp_path) -> None:
    img = synthetic_cells(1, size=128, seed=11).images[0]
    cache = ek.EmbeddingCache(tmp_path / "cache")
    ek.ImagePredictor(base, cache=cache).set_image(img)
    assert cache.misses == 1
    tuned = ek.ImagePredictor(tuned_all.model, cache=cache)
    tuned.set_image(img)
    assert cache.hits == 0 and cache.misses == 2, "the encoder changed: the base's entry must not be used"
    fresh = ek.ImagePredictor(tuned_all.model)
    fresh.set_image(img)
    torch.testing.assert_close(tuned.features.embed, fresh.features.embed, rtol=0, atol=0)
    base_pred = ek.ImagePredictor(base)
    base_pred.set_image(img)
    assert not torch.equal(tuned.features.embed, base_pred.features.embed)


def test_decoder_only_keeps_the_embedding_cache_valid(cells, base, tmp_path) -> None:
    """Decoder-only training leaves the image features alone: the base's cache entries are right
    for the tuned model (a hit), and its masks differ from the base's (the decoder changed)."""
    result = ek.finetune(base, cells, tmp_path / "dec", steps=3, **QUICK)
    img = synthetic_cells(1, size=128, seed=11).images[0]
    cache = ek.EmbeddingCache(tmp_path / "cache")
    first = ek.ImagePredictor(base, cache=cache)
    first.set_image(img)
    tuned = ek.ImagePredictor(result.model, cache=cache)
    tuned.set_image(img)
    assert cache.hits == 1
    torch.testing.assert_close(tuned.features.embed, first.features.embed, rtol=0, atol=0)
    a = first.predict(points=[[60, 60]], labels=[1]).logits
    b = tuned.predict(points=[[60, 60]], labels=[1]).logits
    assert not np.allclose(a, b)


def test_lora_merged_and_adapter(cells, tmp_path) -> None:
    """LoRA: merged weights (a normal checkpoint) and a kept adapter load to the same masks."""
    merged = ek.finetune("random:tiny", cells, tmp_path / "merged", train="lora", steps=2, lr=1e-2, **QUICK)
    adapter = ek.finetune("random:tiny", cells, tmp_path / "adapter", train="lora", steps=2, lr=1e-2,
                          merge_lora=False, **QUICK)
    assert (adapter.path / "adapter_config.json").exists() and not (adapter.path / "model.safetensors").exists()
    assert (merged.path / "model.safetensors").exists()
    img = cells.images[0]
    outs = []
    for model in (merged.model, ek.load_model(merged.path), adapter.model, ek.load_model(adapter.path)):
        p = ek.ImagePredictor(model)
        p.set_image(img)
        outs.append(p.predict(points=[[60, 60]], labels=[1]).logits)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-4)
    base = ek.ImagePredictor(ek.load_model("random:tiny"))
    base.set_image(img)
    assert not np.allclose(base.predict(points=[[60, 60]], labels=[1]).logits, outs[0], atol=1e-3)


RUN = """
import sys, edgetam_kit as ek
from edgetam_kit.testing.cells import synthetic_cells
ek.finetune("random:tiny", synthetic_cells(8, size=128, seed=3), sys.argv[1], train="decoder", steps=12,
            checkpoint_every=2, val_fraction=0.25, eval_every=4, patience=None,
            progress=lambda done, total: print(f"step {done}", flush=True))
"""


def test_killed_run_resumes_to_the_weights_of_an_unbroken_run(tmp_path) -> None:
    """SIGKILL mid-run, resume: the same weights as a run that was never stopped."""
    unbroken = tmp_path / "unbroken"
    subprocess.run([sys.executable, "-c", RUN, str(unbroken)], check=True, timeout=300, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_line(proc, "step 7", timeout=240)
    kill(proc)
    saved = load_state(killed)
    assert saved is not None and 2 <= saved.step < 12, "the kill must land mid-run"
    result = ek.finetune("random:tiny", synthetic_cells(8, size=128, seed=3), killed, train="decoder", steps=12,
                         checkpoint_every=2, val_fraction=0.25, eval_every=4, patience=None)
    assert result.resumed_from == saved.step and result.steps_done == 12
    a, b = load_state(unbroken), load_state(killed)
    assert a.step == b.step == 12 and a.trainable.keys() == b.trainable.keys()
    for name in a.trainable:
        torch.testing.assert_close(b.trainable[name], a.trainable[name], rtol=1e-5, atol=1e-6, msg=name)
    assert [r.step for r in a.history] == [r.step for r in b.history]
    np.testing.assert_allclose([r.val_iou for r in b.history], [r.val_iou for r in a.history], atol=1e-4)


def test_cancel_keeps_the_best_checkpoint_and_resumes(cells, base, tmp_path) -> None:
    out = tmp_path / "run"
    stop = threading.Event()
    steps_seen = []

    def progress(done: int, total: int) -> None:
        steps_seen.append(done)
        if done == 5:
            stop.set()

    with pytest.raises(ek.Cancelled, match="step 5"):
        ek.finetune(base, cells, out, steps=10, progress=progress, cancel=stop, **QUICK)
    assert steps_seen == [1, 2, 3, 4, 5]
    assert load_state(out).step == 5
    kept = ek.load_model(out)  # the best checkpoint so far (validated at steps 2 and 4)
    assert json.loads((out / "training.json").read_text())["best_step"] in (2, 4)
    assert isinstance(kept, ek.EdgeTam)
    result = ek.finetune(base, cells, out, steps=10, **QUICK)
    assert result.resumed_from == 5 and result.steps_done == 10


def test_resume_refuses_other_settings(cells, base, tmp_path) -> None:
    out = tmp_path / "run"
    ek.finetune(base, cells, out, steps=1, **QUICK)
    with pytest.raises(ValueError, match="resume"):
        ek.finetune(base, cells, out, steps=2, lr=0.5, **QUICK)
    again = ek.finetune(base, cells, out, steps=2, lr=0.5, resume=False, **QUICK)
    assert again.resumed_from is None and again.steps_done == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(train="encoder"), "train must be one of decoder, lora, all"),
    (dict(steps=0), "steps must be a positive int"),
    (dict(steps=2, epochs=1), "steps or epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=-1.0), "lr must be"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(prompts=("scribble",)), "prompts"),
    (dict(corrections=99), "corrections"),
])
def test_bad_settings_are_named(cells, base, tmp_path, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ek.finetune(base, cells, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_arguments_are_named(cells, base, tmp_path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        ek.finetune(base, cells, tmp_path / "o", learning_rate=1.0)
    with pytest.raises(TypeError, match="model_or_source"):
        ek.finetune(42, cells, tmp_path / "o")
    with pytest.raises(TypeError, match="data must be"):
        ek.finetune(base, 42, tmp_path / "o")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out: .* not a folder"):
        ek.finetune(base, cells, tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out: .* not empty"):
        ek.finetune(base, cells, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    blank = ([np.zeros((64, 64), np.uint8)], [np.zeros((64, 64), np.int32)])
    with pytest.raises(ValueError, match="data: .* no objects"):
        ek.finetune(base, blank, tmp_path / "o")
    with pytest.raises(ValueError, match="labels of .* integer"):
        ek.finetune(base, ([np.zeros((64, 64), np.uint8)], [np.ones((64, 64), np.float32)]), tmp_path / "o")


def test_cli_finetune(tmp_path, cells, capsys) -> None:
    from edgetam_kit.cli import main

    root = cells.write_folder(tmp_path / "data")
    code = main(["finetune", str(root), "--checkpoint", "random:tiny", "-o", str(tmp_path / "out"), "--steps", "2",
                 "--val-fraction", "0.25", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "validation IoU" in out and "wrote" in out and "RANDOM" in err.upper()
    assert (tmp_path / "out" / "model.safetensors").exists()
    code = main(["finetune", str(tmp_path / "nowhere"), "--checkpoint", "random:tiny", "-o", str(tmp_path / "o2"),
                 "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "DATA: " in err and "Traceback" not in err
