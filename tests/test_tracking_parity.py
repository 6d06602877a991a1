"""VideoTracker against both references at identical random weights, tiny and real shape,
12 frames: transformers' EdgeTamVideoModel with two objects at once (prompts on frames 0
and 4, forward; then a fresh session prompted on the last frame, backward), and the
original predictor one object per run (it crashes with two: facebookresearch/EdgeTAM#15).

Tolerance: per-frame mask IoU >= 0.99 and equal object-score signs (issue 8). The original
stores memory features in bfloat16 (sam2_video_predictor.py casts maskmem_features), so its
memory-conditioned frames differ from float32 engines by bf16 rounding: measured IoU >= 0.9998
on these clips, hence 0.99 leaves room without hiding a real difference (a wrong memory
frame or pointer drops IoU far lower, as the frame-0 warm-up trap showed: 0.86).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.testing.oracles import make_video_references
from edgetam_kit.engine.tracking import VideoTracker
from reference_runners import iou
from video_runners import moving_disks, run_hf, run_original

T = 12
OBJ1 = {"frame": 0, "obj": 1, "points": [[80, 100]], "labels": [1]}
OBJ2 = {"frame": 4, "obj": 2, "box": [155, 50, 205, 105]}


def _scale(p: dict, s: float) -> dict:
    q = dict(p)
    for k in ("points", "box"):
        if q.get(k) is not None:
            q[k] = (np.asarray(q[k], float) * s).tolist()
    return q


_refs: dict[str, tuple] = {}


@pytest.fixture(params=["tiny", pytest.param("real", marks=pytest.mark.real_shape)])
def video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    shape = request.param
    if shape not in _refs:
        refs = make_video_references(tmp_path_factory.mktemp(f"video-{shape}"),
                                     "tiny" if shape == "tiny" else "edgetam", seed=2)
        side = refs.config.image_size
        _refs[shape] = (refs, moving_disks(T, side), side / 256)
    return _refs[shape]


def _ours(model, frames, prompts, direction="forward"):
    session = VideoTracker(model).start(frames)
    for p in prompts:
        session.add_prompt(p["frame"], p.get("obj", 1), points=p.get("points"), labels=p.get("labels"),
                           box=p.get("box"))
    return {f: (ids, masks) for f, ids, masks in session.propagate(direction)}


def _check(ours_mask: np.ndarray, ref_mask: np.ndarray, where: str) -> None:
    frac = ref_mask.mean()
    assert 0 < frac < 1, f"{where}: trivial reference mask ({frac})"
    assert iou(ours_mask, ref_mask) >= 0.99, f"{where}: IoU {iou(ours_mask, ref_mask):.4f}"


def test_two_objects_forward_vs_hf(video) -> None:
    refs, frames, s = video
    prompts = [_scale(OBJ1, s), _scale(OBJ2, s)]
    hf = run_hf(refs.hf, frames, prompts)
    ours = _ours(ek.load_model(refs.hf_folder), frames, prompts)
    assert sorted(ours) == sorted(hf) == list(range(T))
    for f in range(T):
        ids, masks = ours[f]
        assert ids == [1, 2]
        for k in range(2):
            _check(masks[k], hf[f][0][k], f"frame {f} object {ids[k]}")
        assert (hf[f][1] > 0).all()  # object present in the reference, as in ours (masks non-empty)


def test_backward_from_last_frame_vs_hf(video) -> None:
    refs, frames, s = video
    prompts = [_scale({"frame": T - 1, "obj": 1, "points": [[146, 133]], "labels": [1]}, s),
               _scale({"frame": T - 1, "obj": 2, "box": [155, 90, 205, 150]}, s)]
    hf = run_hf(refs.hf, frames, prompts, reverse=True)
    ours = _ours(ek.load_model(refs.hf_folder), frames, prompts, direction="backward")
    assert list(ours) == list(range(T - 1, -1, -1))
    for f in range(T):
        for k in range(2):
            _check(ours[f][1][k], hf[f][0][k], f"frame {f} object {k + 1}")


def test_both_directions_in_one_session_vs_hf(video) -> None:
    """Forward from a prompt in the middle, then backward from it in the same session: the
    backward half needs the forward half's memories next to the prompt (kept by the bank)."""
    refs, frames, s = video
    prompts = [_scale({"frame": 4, "obj": 1, "points": [[104, 112]], "labels": [1]}, s)]
    hf = run_hf(refs.hf, frames, prompts, both=True)
    ours = _ours(ek.load_model(refs.hf_folder), frames, prompts, direction="both")
    assert list(ours) == list(range(4, T)) + [3, 2, 1, 0]
    for f in range(T):
        _check(ours[f][1][0], hf[f][0][0], f"frame {f}")


@pytest.mark.parametrize("prompt,direction", [(OBJ1, "forward"), (OBJ2, "forward"),
                                              ({"frame": T - 1, "points": [[146, 133]], "labels": [1]}, "backward")],
                         ids=["point-f0-forward", "box-f4-forward", "point-last-backward"])
def test_one_object_vs_original(video, prompt, direction) -> None:
    refs, frames, s = video
    p = _scale(prompt, s)
    ref = run_original(refs.original, frames, [p], reverse=direction == "backward")
    ours = _ours(ek.load_model(refs.pt_path, config=refs.config), frames, [p], direction)
    assert sorted(ours) == sorted(ref)
    for f in ref:
        _check(ours[f][1][0], ref[f], f"frame {f}")
