"""Interrupting the kernel (a KeyboardInterrupt between steps, here raised from the progress
callback at step k) loses nothing: the session / predictor / generator is as it was before the
step in flight, and running again gives exactly the masks of an uninterrupted run.
Also: ``progress=True`` draws a tqdm.auto bar and survives an interrupt."""

from __future__ import annotations

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit import progress as progress_mod
from edgetam_kit.testing.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb-tiny")
    ek.save_model(ek.build_random_model("tiny", seed=3), folder)  # what a user has: weights on disk
    return ek.load_model(folder)


def interrupt_at(k: int):
    def progress(done: int, total: int) -> None:
        if done == k:
            raise KeyboardInterrupt
    return progress


def _prompted(model, frames):
    session = ek.VideoTracker(model).start(frames)
    session.add_prompt(frame=0, obj_id=1, points=[[20, 20]], labels=[1])
    session.add_prompt(frame=0, obj_id=2, box=[30, 30, 60, 56])
    return session


def test_interrupted_propagate_continues_to_the_uninterrupted_masks(model) -> None:
    frames = SyntheticSource(7, 64, 72, seed=1)
    reference = ek.collect(_prompted(model, frames).propagate())
    assert reference.frames == list(range(7))

    session = _prompted(model, frames)
    track = ek.TrackResult(session)
    k = 3
    with pytest.raises(KeyboardInterrupt):
        track.extend(session.propagate(progress=interrupt_at(k)))
    assert track.frames == list(range(k))  # the frames done before the interrupt are kept
    # the session is as it was before frame k: frame k was never tracked
    assert all(k not in s.tracked and k - 1 in s.tracked for s in session.objects.values())
    track.extend(session.propagate(start=k))  # continue where it stopped
    assert track.frames == reference.frames
    for f in reference.frames:
        ids, masks = track.frame_masks(f)
        ref_ids, ref_masks = reference.frame_masks(f)
        assert ids == ref_ids
        np.testing.assert_array_equal(masks, ref_masks, err_msg=f"frame {f}")

    # propagating the whole range again (what a user re-running the cell does) also matches
    again = ek.collect(session.propagate())
    for f in reference.frames:
        np.testing.assert_array_equal(again.frame_masks(f)[1], reference.frame_masks(f)[1], err_msg=f"frame {f}")


def test_interrupted_set_images_keeps_the_previous_image_and_reruns_exactly(model) -> None:
    rng = np.random.default_rng(0)
    first = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    batch = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(3)]
    points = [[[10, 12]], [[30, 20]], [[5, 40]]]
    labels = [[1], [1], [1]]

    plain = ek.ImagePredictor(model)
    plain.set_images(batch)
    expected = plain.predict_batch(points=points, labels=labels, image_index=[0, 1, 2], multimask=False)

    pred = ek.ImagePredictor(model)
    pred.set_image(first)
    before = pred.predict(points=[[25, 20]], labels=[1])
    with pytest.raises(KeyboardInterrupt):
        pred.set_images(batch, progress=interrupt_at(2))
    assert pred.image_sizes == [(40, 50)]  # the previous image is still set
    after = pred.predict(points=[[25, 20]], labels=[1])
    np.testing.assert_array_equal(after.masks, before.masks)
    np.testing.assert_array_equal(after.scores, before.scores)

    pred.set_images(batch)
    got = pred.predict_batch(points=points, labels=labels, image_index=[0, 1, 2], multimask=False)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.masks, e.masks)
        np.testing.assert_array_equal(g.scores, e.scores)


def test_interrupted_generate_reruns_exactly(model) -> None:
    rng = np.random.default_rng(1)
    image = (rng.random((48, 56, 3)) * 255).astype(np.uint8)
    settings = dict(points_per_side=4, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    expected = ek.AutoMaskGenerator(model, **settings).generate(image)
    gen = ek.AutoMaskGenerator(model, **settings)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(image, progress=interrupt_at(2))
    got = gen.generate(image)
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g["segmentation"], e["segmentation"])
        assert g["predicted_iou"] == e["predicted_iou"]


class _Capture:
    """Stands in for tqdm.auto's bar: records what the engine told it."""
    made: list["_Capture"] = []

    def __init__(self, total=None, desc=None):
        self.total, self.n, self.closed = total, 0, False
        _Capture.made.append(self)

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


def test_progress_true_opens_one_bar_per_call_and_survives_an_interrupt(model, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "make_bar", lambda total=None, desc=None: _Capture(total, desc))
    _Capture.made.clear()
    images = [np.full((32, 32), v, np.uint8) for v in (10, 90, 200)]
    pred = ek.ImagePredictor(model)
    pred.set_images(images, progress=True)
    assert [(b.total, b.n, b.closed) for b in _Capture.made] == [(3, 3, True)]

    # an interrupted call leaves its bar open; the next call closes it and starts its own
    calls = {"n": 0}

    def boom(done, total):
        progress_mod.report(True, done, total)
        calls["n"] += 1
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pred.set_images(images, progress=boom)
    pred.set_images(images, progress=True)
    assert [(b.total, b.n, b.closed) for b in _Capture.made[1:]] == [(3, 2, True), (3, 3, True)]


def test_progress_true_draws_a_real_tqdm_bar(model, capsys) -> None:
    pred = ek.ImagePredictor(model)
    pred.set_images([np.zeros((16, 16), np.uint8)] * 2, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err
    assert getattr(progress_mod._auto, "bar", None) is None
