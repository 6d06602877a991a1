"""ek.finetune's data sources: the same synthetic cells as a folder, a COCO json (RLE and
polygons) and a FiftyOne dataset (Detections with masks, in the database and on disk) give the
same records and the same first batch; bad inputs fail with a message naming the argument
(``data``, ``mask_field``, ``out``); one short fine-tuning run from a COCO json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import fiftyone_helpers as h  # sets the FIFTYONE_* environment before fiftyone is imported
from edgetam_kit.testing.cells import synthetic_cells
from edgetam_kit.testing.cells_coco import write_coco
from edgetam_kit.training.coco_data import read_coco
from edgetam_kit.training.dataset import load_data
from edgetam_kit.training.prompts import make_batch

try:
    h.import_fiftyone()
    HAVE_FO = Path(h.mongod_binary()).exists()
except ImportError:
    HAVE_FO = False

if HAVE_FO:
    from fiftyone_helpers import fo  # noqa: F401  (the session's mongod)
else:
    @pytest.fixture
    def fo():
        pytest.skip("fiftyone / fiftyone-db (mongod) is not installed")

SIZE = (80, 112)  # H != W: a swapped x/y shows up


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def cells():
    return synthetic_cells(4, size=SIZE, seed=3)


@pytest.fixture(scope="module")
def root(cells, tmp_path_factory) -> Path:
    """root/images/*.tif, root/labels/*.tif, root/coco.json (RLE), root/poly/coco.json (polygons)."""
    root = cells.write_folder(tmp_path_factory.mktemp("cells"))
    write_coco(cells, root / "coco.json", root / "images")
    write_coco(cells, root / "poly" / "coco.json", root / "images", polygons=True)
    return root


def add_cells(fo, ds, cells, images_dir: Path, masks_dir: Path) -> None:
    """One sample per cell image (added in reverse order): "cells" Detections with masks in the
    database, "cells_on_disk" the same with mask_path, "seg" a Segmentation, "clicks" Keypoints,
    "boxes" Detections without masks."""
    from edgetam_kit.fiftyone import detection_from_mask, write_masks

    samples = []
    for name, labels in reversed(list(zip(cells.names, cells.labels))):
        ids = [i for i in np.unique(labels) if i]
        dets = [detection_from_mask(labels == i, label="cell") for i in ids]
        on_disk = [detection_from_mask(labels == i, label="cell") for i in ids]
        write_masks(on_disk, masks_dir, name)
        s = fo.Sample(filepath=str(images_dir / f"{name}.tif"))
        s["cells"] = fo.Detections(detections=dets)
        s["cells_on_disk"] = fo.Detections(detections=on_disk)
        s["seg"] = fo.Segmentation(mask=labels.astype(np.uint16))
        s["clicks"] = fo.Keypoints(keypoints=[fo.Keypoint(label="cell", points=[[0.5, 0.5]])])
        s["boxes"] = fo.Detections(detections=[fo.Detection(label="cell", bounding_box=[0.1, 0.1, 0.3, 0.3])])
        samples.append(s)
    ds.add_samples(samples)


@pytest.fixture(scope="module")
def cells_ds(fo, cells, root, tmp_path_factory):
    ds = fo.Dataset()
    # fiftyone's exit handler (registered when it connected) queries the database; the session's
    # mongod is stopped by then, so it would wait out pymongo's 30 s server selection (closing the
    # client would too). Dropping fiftyone's client at exit (atexit runs later registrations first)
    # makes that handler return at once.
    import atexit

    import fiftyone.core.odm.database as fodb

    atexit.register(setattr, fodb, "_client", None)
    add_cells(fo, ds, cells, root / "images", tmp_path_factory.mktemp("fo-masks"))
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def tiny():
    import edgetam_kit as ek

    return ek.build_random_model("tiny", video=False)


def first_batch(records):
    return make_batch(records, 0, seed=0, batch_size=8, images_per_step=4, kinds=("point", "points", "box"),
                      size=256, low_res=64)


def assert_same(a, b):
    assert [r.name for r in a] == [r.name for r in b]
    for x, y in zip(a, b):
        assert x.image.dtype == y.image.dtype and np.array_equal(x.image, y.image), x.name
        assert x.masks.dtype == y.masks.dtype == bool and np.array_equal(x.masks, y.masks), x.name
    ba, bb = first_batch(a), first_batch(b)
    assert ba.images == bb.images and ba.kind == bb.kind
    for key in ("coords", "labels", "target", "image_index", "object_index"):
        assert torch.equal(getattr(ba, key), getattr(bb, key)), key


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


# ----------------------------------------------------------------------------- same data, same tensors
def test_folder_and_coco_rle_give_the_same_records_and_batch(cells, root):
    folder = load_data(root).images
    assert [r.name for r in folder] == cells.names and sum(len(r.masks) for r in folder) >= 12
    assert_same(folder, load_data(root / "coco.json").images)


def test_fiftyone_gives_the_same_records_and_batch(fo, root, cells_ds):
    folder = load_data(root).images
    assert_same(folder, load_data(cells_ds, mask_field="cells").images)
    assert_same(folder, load_data(cells_ds, mask_field="cells_on_disk").images)  # mask_path on disk
    view = cells_ds.sort_by("filepath", reverse=True).limit(3)  # a view; records still sorted by name
    assert [r.name for r in load_data(view, mask_field="cells").images] == sorted(
        Path(p).stem for p in view.values("filepath"))


def test_coco_polygons(root):
    folder = load_data(root).images
    poly = read_coco(root / "poly" / "coco.json")
    assert [r.name for r in poly] == [r.name for r in folder]
    for a, b in zip(folder, poly):
        assert a.masks.shape == b.masks.shape
        assert all(iou(m, n) > 0.9 for m, n in zip(a.masks, b.masks))


def test_coco_uncompressed_rle_crowd_and_empty_images(root, tmp_path):
    from pycocotools import mask as mask_utils

    doc = json.loads((root / "coco.json").read_text())
    for ann in doc["annotations"]:  # compressed -> uncompressed (list) counts
        m = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        flat = m.ravel(order="F").astype(np.int8)  # run lengths, column-major, starting with 0s
        counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
        ann["segmentation"]["counts"] = [0] + counts if flat[0] else counts
    doc["annotations"][0]["iscrowd"] = 1
    first = doc["annotations"][0]["image_id"]
    last = doc["images"][-1]["id"]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != last]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    got = read_coco(path, image_root=root / "images")
    folder = load_data(root).images
    assert [r.name for r in got] == [r.name for r in folder]
    names = {info["id"]: Path(info["file_name"]).stem for info in doc["images"]}
    for a, b in zip(folder, got):
        if a.name == names[last]:
            assert b.masks.shape == (0, *SIZE)  # kept, without objects
        elif a.name == names[first]:
            assert len(b.masks) == len(a.masks) - 1  # the crowd annotation is skipped
        else:
            assert np.array_equal(a.masks, b.masks)
    path2 = root / "no_last.json"
    path2.write_text(json.dumps(doc))
    assert load_data(path2).skipped == [names[last]]


# ----------------------------------------------------------------------------- bad COCO files
def _bad_coco(root: Path, tmp: Path, case: str) -> Path:
    doc = json.loads((root / "coco.json").read_text())
    for info in doc["images"]:
        info["file_name"] = str(root / "images" / info["file_name"])
    if case == "missing image":
        doc["images"][1]["file_name"] = str(root / "images" / "gone.tif")
    elif case == "unknown image id":
        doc["annotations"][2]["image_id"] = 999
    elif case == "unknown segmentation":
        doc["annotations"][2]["segmentation"] = {"points": [1, 2]}
    elif case == "bbox only":
        doc["annotations"][2]["segmentation"] = []
    elif case == "not coco":
        doc = {"info": {}, "licenses": []}
    elif case == "rle size":
        doc["annotations"][2]["segmentation"]["size"] = [SIZE[1], SIZE[0]]
    elif case == "bad polygon":
        doc["annotations"][2]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]
    path = tmp / "bad.json"
    path.write_text(json.dumps(doc) if case != "not json" else "{'images': [")
    return path


@pytest.mark.parametrize("case, message", [
    ("missing image", "gone.tif"),
    ("unknown image id", "image id 999"),
    ("unknown segmentation", "unknown form"),
    ("bbox only", "unknown form"),
    ("not coco", "not a COCO instance file"),
    ("not json", "cannot read .* as json"),
    ("rle size", "RLE of size"),
    ("bad polygon", "polygon"),
])
def test_bad_coco(root, tmp_path, case, message):
    path = _bad_coco(root, tmp_path, case)
    with pytest.raises(ValueError, match=message) as err:
        load_data(path)
    assert str(err.value).startswith("data:")
    if case not in ("not coco", "not json", "missing image"):
        assert "annotation" in str(err.value) and "bad.json" in str(err.value)


# ----------------------------------------------------------------------------- bad FiftyOne data
@pytest.mark.parametrize("field, message", [
    ("seg", "holds Segmentation"),
    ("clicks", "holds Keypoints"),
    ("boxes", "no detections with masks"),
    ("nope", "not a field"),
    (None, "several have masks: cells, cells_on_disk"),
])
def test_bad_mask_field(fo, cells_ds, field, message):
    with pytest.raises(ValueError, match=message) as err:
        load_data(cells_ds, mask_field=field)
    assert str(err.value).startswith("mask_field:")


def test_only_masked_field_is_found_and_videos_are_refused(fo, root, cells_ds):
    view = cells_ds.exclude_fields("cells_on_disk")
    assert_same(load_data(root).images, load_data(view).images)  # mask_field=None: the only candidate
    video = fo.Dataset()
    try:
        video.add_sample(fo.Sample(filepath=str(root / "clip.mp4")))
        with pytest.raises(ValueError, match="^data: .*video"):
            load_data(video, mask_field="cells")
    finally:
        video.delete()
    with pytest.raises(ValueError, match="mask_field is only for FiftyOne"):
        load_data(root, mask_field="cells")


# ----------------------------------------------------------------------------- through ek.finetune
def _empty_coco(tmp: Path) -> Path:
    path = tmp / "empty.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    return path


def _missing_label(root: Path, tmp: Path) -> Path:
    folder = tmp / "missing"
    (folder / "labels").mkdir(parents=True)
    (folder / "images").symlink_to(root / "images")
    for p in sorted((root / "labels").iterdir())[1:]:
        (folder / "labels" / p.name).symlink_to(p)
    return folder


def _float_labels(cells, tmp: Path) -> Path:
    import tifffile

    folder = cells.write_folder(tmp / "float")
    for name, labels in zip(cells.names, cells.labels):
        tifffile.imwrite(folder / "labels" / f"{name}.tif", labels.astype(np.float32))
    return folder


@pytest.mark.parametrize("case, message", [
    ("empty coco", r"^data: COCO .* holds no objects"),
    ("empty folder", r"^data: .* holds no images"),
    ("missing label", r"^data: 1 image\(s\) .* have no label image"),
    ("float labels", r"^data: labels of .* must be integer"),
])
def test_finetune_bad_data(tiny, cells, root, tmp_path, case, message):
    import edgetam_kit as ek

    if case == "empty coco":
        data = _empty_coco(tmp_path)
    elif case == "empty folder":
        data = tmp_path / "empty"
        (data / "images").mkdir(parents=True)
        (data / "labels").mkdir()
    elif case == "missing label":
        data = _missing_label(root, tmp_path)
    else:
        data = _float_labels(cells, tmp_path)
    with pytest.raises(ValueError, match=message):
        ek.finetune(tiny, data, tmp_path / "out", steps=1)


@pytest.mark.parametrize("field, kind", [("seg", "Segmentation"), ("clicks", "Keypoints")])
def test_finetune_wrong_mask_field(fo, tiny, cells_ds, tmp_path, field, kind):
    import edgetam_kit as ek

    with pytest.raises(ValueError, match=f"^mask_field: '{field}' holds {kind}"):
        ek.finetune(tiny, cells_ds, tmp_path / "out", steps=1, mask_field=field)
    empty = fo.Dataset()
    try:
        with pytest.raises(ValueError, match="^mask_field: "):
            ek.finetune(tiny, empty, tmp_path / "out2", steps=1)
    finally:
        empty.delete()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_finetune_unwritable_out(tiny, root, tmp_path):
    import edgetam_kit as ek

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="^out: cannot write"):
            ek.finetune(tiny, root / "coco.json", locked / "run", steps=1)
    finally:
        locked.chmod(0o700)


def test_finetune_out_under_a_file(tiny, root, tmp_path):
    import edgetam_kit as ek

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="^out: cannot write"):
        ek.finetune(tiny, root / "coco.json", tmp_path / "file" / "run", steps=1)
    with pytest.raises(ValueError, match="^out: .* is not a folder"):
        ek.finetune(tiny, root / "coco.json", tmp_path / "file", steps=1)


def test_finetune_from_coco(tiny, root, tmp_path):
    import edgetam_kit as ek

    out = tmp_path / "out"
    result = ek.finetune(tiny, root / "coco.json", out, steps=2, val_fraction=0.25)
    assert result.steps_done == 2
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (out / name).is_file(), name
    assert "COCO" in (out / "README.md").read_text()
