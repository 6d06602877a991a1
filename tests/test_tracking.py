"""VideoTracker behaviour a user relies on: bounded memory, lazy reads, corrections,
cancellation, both directions, segment_volume, and clear errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.io.sources import ArraySource
from edgetam_kit.testing.synthetic import SyntheticSource
from video_runners import moving_disks


@pytest.fixture(scope="module")
def model() -> ek.EdgeTam:
    return ek.build_random_model("tiny", seed=3)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return moving_disks(10, 256)


class CountingSource(ArraySource):
    def __init__(self, arr: np.ndarray) -> None:
        super().__init__(arr)
        self.reads: list[int] = []

    def frame(self, i: int) -> np.ndarray:
        self.reads.append(i)
        return super().frame(i)


def _run(session, **kw) -> dict[int, np.ndarray]:
    return {f: m for f, _ids, m in session.propagate(**kw)}


def test_memory_is_bounded_and_frames_are_read_lazily(model) -> None:
    source = SyntheticSource(40, 96, 128, seed=1)
    counting = CountingSource(np.stack([source.frame(i) for i in range(40)]))
    session = ek.VideoTracker(model).start(counting)
    session.add_prompt(0, 1, points=[[40, 40]])
    session.add_prompt(3, 2, box=[60, 20, 110, 70])
    n = 0
    for frame, ids, masks in session.propagate():
        assert ids == [1, 2] and masks.shape == (2, 96, 128) and masks.dtype == bool
        n += 1
    assert n == 40
    mem = model.config.memory
    for state in session.objects.values():
        assert len(state.recent) <= mem.num_maskmem - 1
        assert len(state.pointers) <= mem.max_object_pointers
        # kept next to each prompted frame: bounded by the number of prompts, not the source length
        assert len(state.anchored) <= 2 * (mem.num_maskmem - 1) * len(state.conditioning)
        assert len(state.anchored_pointers) <= 2 * (mem.max_object_pointers - 1) * len(state.conditioning)
    assert sorted(session.objects[1].conditioning) == [0] and sorted(session.objects[2].conditioning) == [3]
    # every frame read once by propagate (plus the two prompt frames), never all at once
    assert sorted(counting.reads) == sorted([0, 3] + list(range(40)))


def test_both_directions_visit_each_frame_once(model, frames) -> None:
    session = ek.VideoTracker(model).start(frames)
    session.add_prompt(4, 1, points=[[104, 112]])
    order = [f for f, _, _ in session.propagate("both")]
    assert order == list(range(4, 10)) + [3, 2, 1, 0]
    backward = [f for f, _, _ in session.propagate("backward", start=6, stop=2)]
    assert backward == [6, 5, 4, 3, 2]


def test_cancel_leaves_the_session_usable(model, frames) -> None:
    fresh = ek.VideoTracker(model).start(frames)
    fresh.add_prompt(0, 1, points=[[80, 100]])
    expected = _run(fresh)

    session = ek.VideoTracker(model).start(frames)
    session.add_prompt(0, 1, points=[[80, 100]])
    stop = threading.Event()
    seen = []
    with pytest.raises(ek.Cancelled):
        for frame, _ids, _m in session.propagate(cancel=stop, progress=lambda d, t: stop.set() if d == 3 else None):
            seen.append(frame)
    assert seen == [0, 1, 2]
    again = _run(session)
    assert sorted(again) == list(range(10))
    for f in again:
        np.testing.assert_array_equal(again[f], expected[f])


def test_correction_becomes_a_conditioning_frame(model, frames) -> None:
    session = ek.VideoTracker(model).start(frames)
    session.add_prompt(0, 1, points=[[80, 100]])
    first = _run(session)
    fix = session.add_prompt(6, 1, points=[[116, 118], [60, 60]], labels=[1, 0])
    assert 6 in session.objects[1].conditioning
    second = _run(session)
    np.testing.assert_array_equal(second[6][0], fix.mask)
    assert sorted(second) == sorted(first)
    np.testing.assert_array_equal(second[0], first[0])  # before the correction: unchanged


def test_mask_prompt(model, frames) -> None:
    session = ek.VideoTracker(model).start(frames)
    yy, xx = np.mgrid[:256, :256]
    disk = (xx - 80) ** 2 + (yy - 100) ** 2 < 30 ** 2
    r = session.add_prompt(0, 7, mask=disk)
    assert r.mask.shape == (256, 256) and r.mask[100, 80] and not r.mask[0, 0]
    out = _run(session, stop=3)
    assert sorted(out) == [0, 1, 2, 3]


def test_segment_volume_labels_every_slice(model) -> None:
    vol = moving_disks(8, 256)[..., 0]  # a single-channel "z-stack"
    labels = ek.segment_volume(vol, [{"frame": 3, "obj_id": 5, "points": [[98, 109]]}], model)
    assert labels.dtype == np.uint32 and labels.shape == (8, 256, 256)
    assert set(np.unique(labels)) <= {0, 5}
    assert all((labels[z] == 5).any() for z in range(8))


def test_image_only_model_is_refused() -> None:
    with pytest.raises(ValueError, match="model: this checkpoint has no video-model tensors"):
        ek.VideoTracker(ek.build_random_model("tiny", video=False))


class ShapeChanging(ArraySource):
    def frame(self, i: int) -> np.ndarray:
        f = super().frame(i)
        return f[:-8] if i == 2 else f


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda s: s.add_prompt(10, 1, points=[[5, 5]]), ValueError, r"frame must be a frame index in \[0, 9\]"),
    (lambda s: s.add_prompt(0, "a", points=[[5, 5]]), TypeError, r"obj_id must be an int"),
    (lambda s: s.add_prompt(0, 1, points=[[300, 5]]), ValueError, r"points.*outside the 256x256"),
    (lambda s: s.add_prompt(0, 1), ValueError, r"add_prompt needs points, a box or a mask"),
    (lambda s: s.add_prompt(0, 1, mask=np.ones((10, 10), bool)), ValueError, r"mask must be shaped like a frame"),
    (lambda s: next(s.propagate()), ValueError, r"propagate needs at least one prompt"),
    (lambda s: s.remove_object(3), ValueError, r"obj_id 3 is not tracked"),
    (lambda s: s.propagate(direction="sideways"), ValueError, r"direction must be one of"),
    (lambda s: (s.add_prompt(5, 1, points=[[5, 5]]), s.propagate(start=5, stop=2)), ValueError,
     r"stop \(2\) must be >= start \(5\)"),
], ids=["frame-range", "obj-id-type", "point-outside", "empty-prompt", "mask-shape", "no-prompt", "unknown-obj",
        "direction", "stop-before-start"])
def test_bad_input(model, frames, call, exc, pattern) -> None:
    session = ek.VideoTracker(model).start(frames)
    with pytest.raises(exc, match=pattern):
        call(session)


def test_source_errors(model, frames, tmp_path) -> None:
    session = ek.VideoTracker(model).start(ShapeChanging(frames))
    session.add_prompt(0, 1, points=[[80, 100]])
    with pytest.raises(ValueError, match="frame 2"):
        list(session.propagate())
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        ek.VideoTracker(model).start(bad)
    with pytest.raises(ValueError, match="max_memory_frames"):
        ek.VideoTracker(model, max_memory_frames=9)
