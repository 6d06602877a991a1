"""Exporters: COCO JSON loads back with pycocotools, label TIFFs with tifffile, OME-Zarr opens
with zarr and carries NGFF 0.4 multiscales and image-label metadata; built-ins come through
the ``edgetam_kit_exporters`` hook, and a plugin can add a format; `edgetam auto` writes each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgetam_kit as ek
from edgetam_kit.io.export import (
    MaskSet,
    coco_dict,
    export_masks,
    labels_from_annotations,
    write_coco,
    write_label_tiff,
    write_ome_zarr,
)
from edgetam_kit.plugins import PluginManager, reset_plugin_manager


def _disc(hw, cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture()
def items() -> list[MaskSet]:
    """Two images; the first has a big disc with a small disc on top and an RLE-encoded bar."""
    from pycocotools import mask as mask_utils

    hw1, hw2 = (120, 160), (90, 70)
    bar = np.zeros(hw1, bool)
    bar[100:110, 10:150] = True
    rle = mask_utils.encode(np.asfortranarray(bar.astype(np.uint8)))
    anns1 = [
        {"segmentation": _disc(hw1, 60, 50, 30), "predicted_iou": 0.9, "stability_score": 0.97,
         "point_coords": [[60.0, 50.0]]},
        {"segmentation": _disc(hw1, 70, 50, 8), "predicted_iou": 0.8},
        {"segmentation": {"size": [120, 160], "counts": rle["counts"].decode()}},
    ]
    img1 = np.zeros((*hw1, 3), np.uint8)
    img1[..., 1] = 90
    return [MaskSet("one.png", hw1, anns1, img1),
            MaskSet("two.png", hw2, [_disc(hw2, 30, 40, 12)], np.full(hw2, 7, np.uint16))]


def test_labels_paint_later_masks_on_top(items) -> None:
    labels = labels_from_annotations(items[0].annotations, items[0].size)
    assert labels.dtype == np.uint32 and labels.shape == (120, 160)
    assert labels[50, 70] == 2 and labels[50, 40] == 1 and labels[105, 20] == 3 and labels[0, 0] == 0


def test_coco_loads_back_with_pycocotools(items, tmp_path) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    (path,) = write_coco(items, tmp_path / "out.json")
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert coco.loadImgs(1)[0] == {"id": 1, "file_name": "one.png", "height": 120, "width": 160}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 3 and len(coco.getAnnIds(imgIds=[2])) == 1
    for ann, src in zip(anns, items[0].annotations):
        mask = coco.annToMask(ann).astype(bool)
        seg = src["segmentation"]
        want = seg if isinstance(seg, np.ndarray) else mask_utils.decode(
            {"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        assert np.array_equal(mask, want)
        assert ann["area"] == want.sum()
        ys, xs = np.nonzero(want)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert anns[0]["score"] == 0.9 and anns[0]["stability_score"] == 0.97
    # the results API takes it as detections too
    dets = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
                         for a in coco.loadAnns(coco.getAnnIds()) if "score" in a])
    assert len(dets.getAnnIds()) == 2
    assert write_coco(items, tmp_path / "folder") == [tmp_path / "folder" / "annotations.json"]


def test_label_tiff(items, tmp_path) -> None:
    import tifffile

    paths = write_label_tiff(items, tmp_path / "labels")
    assert [p.name for p in paths] == ["one.tif", "two.tif"]
    back = tifffile.imread(paths[0])
    assert back.dtype == np.uint32
    assert np.array_equal(back, labels_from_annotations(items[0].annotations, items[0].size))
    assert write_label_tiff(items[1], tmp_path / "single.tif") == [tmp_path / "single.tif"]
    with pytest.raises(ValueError, match="names one file but there are 2 images"):
        write_label_tiff(items, tmp_path / "x.tif")


def test_ome_zarr_opens_with_zarr_and_has_multiscales(items, tmp_path) -> None:
    import zarr

    paths = write_ome_zarr(items, tmp_path)
    assert [p.name for p in paths] == ["one.zarr", "two.zarr"]
    root = zarr.open_group(str(paths[0]), mode="r")
    ms = root.attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][0]["type"] == "channel" and ms["axes"][1]["type"] == "space"
    for ds in ms["datasets"]:
        assert root[ds["path"]].ndim == 3 and ds["coordinateTransformations"][0]["type"] == "scale"
    assert root["0"].shape == (3, 120, 160) and np.array_equal(root["0"][1], np.full((120, 160), 90))
    assert root["labels"].attrs["labels"] == ["masks"]
    lab = root["labels/masks"]
    lms = lab.attrs["multiscales"][0]
    assert lms["version"] == "0.4" and len(lms["datasets"]) >= 1
    assert lab.attrs["image-label"]["source"]["image"] == "../../"
    level0 = lab[lms["datasets"][0]["path"]]
    assert level0.dtype == np.uint32 and level0.shape == (1, 120, 160)
    assert np.array_equal(level0[0], labels_from_annotations(items[0].annotations, items[0].size))
    scales = [d["coordinateTransformations"][0]["scale"] for d in lms["datasets"]]
    assert scales[0] == [1.0, 1.0, 1.0]
    # zarr v2 layout with "/" chunk keys, as OME-Zarr 0.4 readers expect
    assert (paths[0] / ".zattrs").exists() and (paths[0] / "labels" / "masks" / "0" / ".zarray").exists()
    gray = zarr.open_group(str(paths[1]), mode="r")
    assert [a["name"] for a in gray.attrs["multiscales"][0]["axes"]] == ["y", "x"]
    assert gray["labels/masks/0"].shape == (90, 70)


def test_ome_zarr_pyramid_levels(tmp_path) -> None:
    import zarr

    hw = (300, 260)
    item = MaskSet("big", hw, [_disc(hw, 130, 150, 80)], np.zeros(hw, np.uint8))
    (path,) = write_ome_zarr(item, tmp_path / "big.zarr")
    lab = zarr.open_group(str(path), mode="r")["labels/masks"]
    datasets = lab.attrs["multiscales"][0]["datasets"]
    shapes = [lab[d["path"]].shape for d in datasets]
    assert shapes == [(300, 260), (150, 130), (75, 65)]  # halved while the short side stays >= 64
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    assert np.array_equal(lab["1"][:], lab["0"][::2, ::2])


def test_builtin_exporters_come_through_the_hook() -> None:
    found = PluginManager.create(autoload=False).exporters()
    assert {"coco", "tiff", "zarr"} <= set(found)
    assert found["coco"].combined and not found["tiff"].combined
    assert isinstance(found["zarr"], ek.Exporter)


def test_a_plugin_adds_a_format(items, tmp_path, monkeypatch) -> None:
    import edgetam_kit.plugins.manager as plugins

    class NpzPlugin:
        @ek.hookimpl
        def edgetam_kit_exporters(self):
            def write(items, out, progress=None):
                out.mkdir(parents=True, exist_ok=True)
                paths = []
                for it in items:
                    p = out / f"{Path(it.name).stem}.npz"
                    np.savez(p, labels=labels_from_annotations(it.annotations, it.size))
                    paths.append(p)
                return paths

            return [ek.Exporter("npz", write, ".npz", "numpy archive")]

    class Broken:
        @ek.hookimpl
        def edgetam_kit_exporters(self):
            return ["not an exporter"]

    pm = PluginManager.create(autoload=False)
    pm.register(NpzPlugin(), name="npz-plugin")
    pm.register(Broken(), name="broken")
    monkeypatch.setattr(plugins, "_manager", pm)
    with pytest.warns(UserWarning, match="broken"):
        paths = export_masks(items, tmp_path, format="npz")
    assert [p.name for p in paths] == ["one.npz", "two.npz"]
    assert np.load(paths[0])["labels"].max() == 3
    with pytest.raises(ValueError, match="format must be one of coco, npz, tiff, zarr"):
        export_masks(items, tmp_path, format="png")
    reset_plugin_manager()


def test_bad_items(items, tmp_path) -> None:
    with pytest.raises(TypeError, match="items must be a MaskSet or a list of MaskSet"):
        write_coco([{"segmentation": np.zeros((2, 2), bool)}], tmp_path / "a.json")
    with pytest.raises(ValueError, match="image names must be unique"):
        coco_dict([items[0], items[0]])
    bad = MaskSet("bad.png", (10, 10), [np.zeros((5, 5), bool)])
    with pytest.raises(ValueError, match=r"mask shape \(5, 5\) does not match the image size \(10, 10\)"):
        coco_dict(bad)


@pytest.mark.parametrize("fmt", ["coco", "tiff", "zarr"])
def test_cli_auto_writes_each_format(tiny_refs, tmp_path, fmt, capsys) -> None:
    import skimage.io
    import zarr

    from edgetam_kit.cli import main

    rng = np.random.default_rng(1)
    img = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "cells.png", img, check_contrast=False)
    out = tmp_path / {"coco": "masks.json", "tiff": "labels", "zarr": "zarr-out"}[fmt]
    code = main(["auto", str(tmp_path / "cells.png"), "--checkpoint", str(tiny_refs.hf_folder), "-o", str(out),
                 "--format", fmt, "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh",
                 "0", "--box-nms-thresh", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    n = int(said.split("(")[1].split(" masks")[0])
    assert n > 0
    if fmt == "coco":
        assert len(json.loads(out.read_text())["annotations"]) == n
    elif fmt == "tiff":
        import tifffile

        assert tifffile.imread(out / "cells.tif").shape == (64, 80)
    else:
        root = zarr.open_group(str(out / "cells.zarr"), mode="r")
        assert root["labels/masks/0"].shape == (1, 64, 80) and root["0"].shape == (3, 64, 80)


def test_cli_auto_errors(tiny_refs, tmp_path, capsys) -> None:
    from edgetam_kit.cli import main

    assert main(["auto", str(tmp_path / "missing"), "--checkpoint", str(tiny_refs.hf_folder), "-o", "x"]) == 2
    assert "IMAGE|FOLDER" in capsys.readouterr().err
    assert main(["auto", str(tmp_path), "--checkpoint", str(tiny_refs.hf_folder), "-o", "x", "--format", "png"]) == 2
    assert "--format must be one of coco, tiff, zarr" in capsys.readouterr().err
    assert main(["auto", str(tmp_path), "--checkpoint", str(tiny_refs.hf_folder), "-o", "x"]) == 2
    assert "holds no images" in capsys.readouterr().err
