"""Looking at results in notebooks: overlay colours equal napari's Labels colours, rich reprs hold
a base64 PNG of the stated size with the object's numbers, big results render from thumbnails,
tables have one row per object with the object's numbers."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

import edgetam_kit as ek
from edgetam_kit.engine.prediction import Prediction
from edgetam_kit.engine.reprs import THUMB, TILE, png_bytes, thumbnail_shape
from edgetam_kit.transforms import to_unit_rgb


def pngs_in(html: str) -> list[tuple[Image.Image, int, int]]:
    """Decoded <img> PNGs of ``html`` with the width/height the tag states."""
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"', html)
    return [(Image.open(io.BytesIO(base64.b64decode(b))), int(w), int(h)) for b, w, h in found]


def make_prediction(h: int, w: int, k: int = 3, seed: int = 0) -> Prediction:
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        masks[i, h // 4: h // 4 + (i + 1) * h // 8, w // 5: w // 5 + (i + 1) * w // 8] = True
    return Prediction(masks, rng.random(k).astype(np.float32), np.zeros((k, 4, 4), np.float32), float(rng.normal()))


# ------------------------------------------------------------------ colours
def test_colours_equal_napari_labels_colours() -> None:
    from napari.layers import Labels
    from napari.utils.colormaps.colormap_utils import label_colormap

    ids = np.arange(1, 300)
    ours = ek.label_colors(ids)
    theirs = np.round(label_colormap(49, 0.5, background_value=0).map(ids)[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, theirs)
    layer = Labels(np.zeros((4, 4), np.int32))  # what the napari face shows
    np.testing.assert_array_equal(ours, np.round(layer.colormap.map(ids)[:, :3] * 255).astype(np.uint8))


def test_overlay_colours_masks_by_id_same_in_every_frame() -> None:
    image = np.zeros((20, 30), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:15] = True
    a = ek.overlay(image, mask, ids=[7], alpha=1.0, contours=False)
    b = ek.overlay(image, np.where(mask, 7, 0).astype(np.uint16), alpha=1.0, contours=False)  # label image
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[10, 10], ek.label_colors([7])[0])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0, 0], [0, 0, 0])
    half = ek.overlay(image, mask, ids=[7], alpha=0.5, contours=False)
    np.testing.assert_allclose(half[10, 10], ek.label_colors([7])[0] / 2, atol=1)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_overlay_normalises_images_like_the_engine(dtype) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((24, 40)) * (4000 if dtype == np.uint16 else 7.5)).astype(dtype)
    shown = ek.overlay(image, None if False else np.zeros((24, 40), bool))
    expected = (to_unit_rgb(image) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(shown, expected)


def test_overlay_draws_prompts_and_checks_sizes() -> None:
    image = np.full((50, 60, 3), 128, np.uint8)
    out = ek.overlay(image, None, points=[[10, 10], [40, 30]], point_labels=[1, 0], boxes=[5, 5, 55, 45])
    assert tuple(out[10, 10]) == (0, 230, 64) and tuple(out[30, 40]) == (255, 40, 40)
    assert tuple(out[5, 30]) == (255, 215, 0)  # top edge of the box
    with pytest.raises(ValueError, match="masks are"):
        ek.overlay(image, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="ids"):
        ek.overlay(image, np.zeros((2, 50, 60), bool), ids=[1])


def test_montage_every_and_tiles() -> None:
    frames = np.zeros((5, 10, 12), np.uint8)
    labels = np.zeros((5, 10, 12), np.uint32)
    labels[:, 2:5, 2:5] = 3
    m = ek.montage(frames, labels, every=2, columns=3, alpha=1.0)
    assert m.shape == (10, 3 * 12 + 2 * 2, 3)  # frames 0, 2, 4 in one row, 2-pixel gaps
    np.testing.assert_array_equal(m[3, 12 + 2 + 3], ek.label_colors([3])[0])
    with pytest.raises(ValueError, match="every"):
        ek.montage(frames, labels, every=0)


# ------------------------------------------------------------------ reprs
def test_png_encoder_round_trips() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)


def test_prediction_html_holds_png_of_stated_size_and_its_numbers() -> None:
    pred = make_prediction(90, 120)
    html = pred._repr_html_()
    (img, w, h), = pngs_in(html)
    assert img.size == (w, h)
    th, tw = thumbnail_shape((90, 120))
    assert h == th and w == 3 * tw + 2 * 2  # three candidates side by side
    for i, s in enumerate(pred.scores):
        assert f"{float(s):.4f}" in html
        assert f"<td>{int(pred.masks[i].sum())}</td>" in html
    assert f"{pred.object_score:.4f}" in html
    assert f"<th style='text-align:left'>best</th><td style='text-align:left'>{pred.best}</td>" in html
    assert Image.open(io.BytesIO(pred._repr_png_())).size == (w, h)
    assert len(repr(pred)) < 200 and "best=" in repr(pred)


def test_4k_results_render_from_thumbnails() -> None:
    pred = make_prediction(4096, 4096, k=1)
    (img, w, h), = pngs_in(pred._repr_html_())
    assert (h, w) == (THUMB, THUMB) == img.size[::-1]
    track = ek.TrackResult(np.zeros((2, 4096, 4096), np.uint16))
    for f in range(2):
        track.add(f, [1], pred.masks)
    (img, w, h), = pngs_in(track._repr_html_())
    assert (h, w) == (TILE, 2 * TILE + 2) == img.size[::-1]
    anns = ek.AutoMasks([{"segmentation": pred.masks[0], "area": int(pred.masks[0].sum())}],
                        image=np.zeros((4096, 4096), np.uint8))
    (img, w, h), = pngs_in(anns._repr_html_())
    assert (h, w) == (THUMB, THUMB)


def test_track_result_html_numbers() -> None:
    track = ek.TrackResult(np.zeros((4, 16, 20), np.uint8))
    m = np.zeros((2, 16, 20), bool)
    m[0, 2:6, 2:6] = True
    for f in range(3):
        track.add(f, [4, 9], m)  # object 9 is empty everywhere
    assert track.frame_counts() == {4: 3, 9: 0}
    html = track._repr_html_()
    assert "<tr><td>4</td><td>3</td><td>0</td><td>2</td></tr>" in html
    assert "<tr><td>9</td><td>0</td><td>-</td><td>-</td></tr>" in html
    (img, w, h), = pngs_in(html)
    assert img.size == (w, h) == (3 * 20 + 2 * 2, 16)
    labels = track.labels()
    assert labels.shape == (4, 16, 20) and set(np.unique(labels)) == {0, 4}
    assert repr(track) == "TrackResult(3 frames, objects=[4, 9])"


def test_automasks_html_count_and_area_histogram() -> None:
    areas = [400, 100, 25, 4]
    anns = []
    for a in areas:
        s = int(np.sqrt(a))
        m = np.zeros((40, 40), bool)
        m[:s, :s] = True
        anns.append({"segmentation": m, "area": a, "bbox": [0, 0, s - 1, s - 1], "predicted_iou": 0.9})
    auto = ek.collect(anns, image=np.zeros((40, 40), np.uint8))
    assert isinstance(auto, ek.AutoMasks) and list(auto) == anns
    d = ek.describe(auto)
    assert d.fields["masks"] == 4 and d.fields["area min"] == 4 and d.fields["area max"] == 400
    header, rows = d.table
    assert sum(r[2] for r in rows) == 4 and rows[0][0] == 4
    html = auto._repr_html_()
    assert "<td style='text-align:left'>4</td>" in html and len(pngs_in(html)) == 1


def test_model_and_cache_views(tmp_path) -> None:
    model = ek.build_random_model("tiny", video=False)
    d = ek.describe(model)
    assert d.fields["preset"] == "tiny" and d.fields["has video"] is False
    assert d.fields["parameters"] == sum(p.numel() for p in model.parameters())
    assert d.fields["device"] == "cpu" and d.fields["precision"] == "float32" and d.fields["runtime"] == "eager"
    cache = ek.EmbeddingCache(tmp_path / "cache")
    pred = ek.ImagePredictor(model, cache=cache)
    pred.set_image(np.zeros((32, 32), np.uint8))
    c = ek.describe(cache)
    assert c.fields["entries"] == len(cache) == 1
    assert c.fields["size on disk (bytes)"] == sum(p.stat().st_size for p in cache.path.rglob("*") if p.is_file()) > 0

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "edgetam_kit.notebook")
    shown, _ = shell.display_formatter.format(model)
    assert "EdgeTam model" in shown["text/html"] and "<td style='text-align:left'>tiny</td>" in shown["text/html"]
    shown, _ = shell.display_formatter.format(cache)
    assert "EmbeddingCache" in shown["text/html"]


# ------------------------------------------------------------------ tables
def test_to_table_rows_equal_the_objects() -> None:
    p1, p2 = make_prediction(30, 40, seed=1), make_prediction(30, 40, seed=2)
    rows = ek.to_table([p1, p2], as_frame=False)
    assert [r["id"] for r in rows] == [1, 2]
    for r, p in zip(rows, (p1, p2)):
        m = p.masks[p.best]
        ys, xs = np.nonzero(m)
        assert r["area"] == int(m.sum()) and r["predicted_iou"] == float(p.scores[p.best])
        assert r["bbox"] == (xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())
        assert r["object_score"] == p.object_score
    df = ek.to_table({"a.png": p1, "b.png": [p1, p2]})
    assert list(df.columns) == ["image", "id", "area", "bbox", "predicted_iou", "object_score"]
    assert df["image"].tolist() == ["a.png", "b.png", "b.png"]


def test_regionprops_bridge_equals_skimage() -> None:
    from skimage.measure import regionprops_table

    labels = np.zeros((30, 30), np.int32)
    labels[2:10, 3:12] = 1
    labels[15:28, 15:20] = 5
    ours = ek.regionprops_table(labels, properties=("label", "area", "centroid"), as_frame=False)
    ref = regionprops_table(labels, properties=("label", "area", "centroid"))
    assert [r["label"] for r in ours] == ref["label"].tolist()
    assert [r["area"] for r in ours] == ref["area"].tolist()
    assert [r["centroid-0"] for r in ours] == ref["centroid-0"].tolist()
    stack = ek.regionprops_table(np.stack([labels, labels * 0]), properties=("label", "area"))
    assert stack["frame"].tolist() == [0, 0]


def test_show_draws_the_overlay_with_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    image = np.zeros((20, 30), np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    ax = ek.show(image, mask, ids=[2], title="t")
    shown = ax.get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), ek.overlay(image, mask, ids=[2]))
    assert ax.get_title() == "t"
    track = ek.TrackResult(np.zeros((2, 20, 30), np.uint8))
    track.add(0, [1], mask[None])
    ax = ek.show(track)
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), track.render())
    import matplotlib.pyplot as plt

    plt.close("all")


def test_overlay_of_rle_masks_shrinks_one_mask_at_a_time_to_the_same_picture() -> None:
    from edgetam_kit.engine.masks import encode_rles

    m = np.zeros((3, 300, 200), bool)
    m[0, 10:100, 20:150] = True
    m[1, 150:290, 30:60] = True
    m[2, 40:60, 100:190] = True
    anns = [{"segmentation": r} for r in encode_rles(m)]
    np.testing.assert_array_equal(ek.overlay(None, anns, max_side=50), ek.overlay(None, m, max_side=50))
    np.testing.assert_array_equal(ek.overlay(None, anns), ek.overlay(None, m))
    image = np.zeros((300, 200), np.uint8)
    with pytest.raises(ValueError, match="masks are"):
        ek.overlay(image[:100], anns, max_side=50)
