"""Large images as tiles: the grid, prompt routing (same mask as an untiled crop of the tile),
stitching, and automatic masks merged across tile borders (one mask per object).

The image is 3000 x 2500 (W x H) with the tiny model and 1024-px tiles (each resized to the
model's 256 input), so 4 x 3 = 12 tiles. Automatic masks need a model that segments objects,
which random weights do not: that test swaps the decoder for an exact one (the connected
component under each point, as the tile sees it), so what is tested is the tiling, the
per-tile filtering and the merge, with the real encoder, cache and grid around it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetam_kit as ek
from edgetam_kit.engine.tiling import TileGrid

H, W = 2500, 3000


def synthetic_objects() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HxWx3, labels int32 HxW): discs and bars, several across tile borders."""
    yy, xx = np.mgrid[0:H, 0:W]
    labels = np.zeros((H, W), np.int32)
    shapes = [
        ("disc", 1024, 500, 110),    # across tile column 0's right side (x = 1024)
        ("disc", 1320, 1010, 140),   # on a corner where four tiles meet
        ("bar", 450, 300, 2250, 420),  # longer than a tile: pieces in three columns, merged
        ("bar", 880, 1600, 1120, 2200),  # across row borders (y = 1762) and column border 1024
        ("disc", 120, 2390, 90),     # on the image border
        ("disc", 2600, 800, 120),    # inside one tile column overlap
        ("disc", 400, 1200, 100),    # inside a single tile
        ("disc", 2000, 1700, 150),   # across x = 1976 / 2341 and y = 1762
        ("bar", 2700, 1300, 2990, 1500),  # touching the right image border
    ]
    for k, s in enumerate(shapes, start=1):
        if s[0] == "disc":
            _, cx, cy, r = s
            labels[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = k
        else:
            _, x0, y0, x1, y1 = s
            labels[y0:y1, x0:x1] = k
    rng = np.random.default_rng(0)
    colours = rng.integers(80, 255, size=(len(shapes) + 1, 3))
    colours[0] = (20, 20, 30)
    image = colours[labels].astype(np.uint8)
    return image, labels


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_objects()


@pytest.fixture(scope="module")
def tiny_model(tiny_refs) -> ek.EdgeTam:
    return ek.load_model(tiny_refs.hf_folder)


@pytest.fixture(scope="module")
def tiled(tiny_model, scene, tmp_path_factory) -> ek.ImagePredictor:
    """A predictor with the scene set (auto-tiled: 3000 > 2 x 1024) and a cache holding its tiles."""
    cache = ek.EmbeddingCache(tmp_path_factory.mktemp("tile-cache"))
    pred = ek.ImagePredictor(tiny_model, cache=cache)
    pred.set_image(scene[0])
    return pred


def test_grid_covers_the_image_with_overlap() -> None:
    grid = TileGrid.build((H, W), 1024, 256)
    assert len(grid) == 12
    cover = np.zeros((H, W), np.int32)
    for x0, y0, x1, y1 in grid.boxes:
        assert x1 - x0 == 1024 and y1 - y0 == 1024
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    xs = sorted({b[0] for b in grid.boxes})
    assert xs[0] == 0 and max(b[2] for b in grid.boxes) == W
    assert all(b - a <= 1024 - 256 for a, b in zip(xs, xs[1:]))  # neighbours overlap by >= 256
    small = TileGrid.build((300, 500), 1024, 256)
    assert small.boxes == ((0, 0, 500, 300),)


def test_when_tiling_applies(tiny_model) -> None:
    auto = ek.ImagePredictor(tiny_model)
    assert auto.tiling_for((480, 640)) is None and auto.tiling_for((2048, 2048)) is None
    assert auto.tiling_for((100, 2049)) is not None
    assert ek.ImagePredictor(tiny_model, tiling=False).tiling_for((5000, 5000)) is None
    assert ek.ImagePredictor(tiny_model, tiling=True).tiling_for((100, 100)) is not None
    assert ek.ImagePredictor(tiny_model, tile_threshold=600).tiling_for((480, 640)) is not None
    with pytest.raises(ValueError, match="tile_overlap must be an int in"):
        ek.ImagePredictor(tiny_model, tile_size=512, tile_overlap=400)
    with pytest.raises(ValueError, match="tile_size must be an int >= 32"):
        ek.ImagePredictor(tiny_model, tile_size=8)


def test_tiled_image_state(tiled) -> None:
    assert tiled.tile_grid is not None and len(tiled.tile_grid) == 12
    assert tiled.image_sizes == [(H, W)]
    assert len(tiled.features) == 12


def test_point_near_a_tile_border_equals_an_untiled_crop(tiled, tiny_model, scene) -> None:
    image = scene[0]
    point = [[1010.0, 1300.0]]  # 14 px left of tile column 0's right side
    r = tiled.predict(points=point, labels=[1])
    assert r.masks.shape == (3, H, W)
    grid = tiled.tile_grid
    t = grid.route((1010, 1300, 1010, 1300))
    x0, y0, x1, y1 = grid.boxes[t]
    assert (x0, y0) == (659, 738)  # the tile where the point is most central, not column 0
    crop = ek.ImagePredictor(tiny_model, tiling=False)
    crop.set_image(image[y0:y1, x0:x1])
    ref = crop.predict(points=[[1010.0 - x0, 1300.0 - y0]], labels=[1])
    assert np.array_equal(r.masks[:, y0:y1, x0:x1], ref.masks)
    outside = r.masks.copy()
    outside[:, y0:y1, x0:x1] = False
    assert not outside.any()
    np.testing.assert_allclose(r.scores, ref.scores, atol=1e-6)
    np.testing.assert_allclose(r.logits, ref.logits, atol=1e-5)
    assert 0 < ref.masks.mean() < 1  # non-trivial
    best = tiled.predict(points=point, labels=[1], best_only=True)
    assert best.masks.shape == (1, H, W) and best.scores[0] == r.scores[r.best]
    assert (best.masks[0] != r.masks[r.best]).sum() <= 1e-4 * r.masks[r.best].sum()
    # the same object in a batch gets the same mask, up to float rounding (the batch's GEMMs
    # may round differently; a pixel whose logit is within ~1e-6 of 0 may flip)
    rb = tiled.predict_batch(points=[point, [[2600.0, 800.0]]], labels=[[1], [1]], multimask=True)
    for k in range(3):
        assert (rb[0].masks[k] != r.masks[k]).sum() <= 1e-4 * r.masks[k].sum()
    np.testing.assert_allclose(rb[0].logits, r.logits, atol=1e-4)


def test_box_across_tiles_is_stitched(tiled) -> None:
    box = [450, 300, 2250, 420]  # 1800 px wide: no tile holds it
    r = tiled.predict(box=box, multimask=False)
    assert r.masks.shape == (1, H, W)
    grid = tiled.tile_grid
    used = grid.touching((450, 300, 2250, 420))
    allowed = np.zeros((H, W), bool)
    for t in used:
        x0, y0, x1, y1 = grid.boxes[t]
        allowed[y0:y1, x0:x1] = True
    assert not (r.masks[0] & ~allowed).any()
    assert r.masks[0].any()


def test_tiled_errors(tiled) -> None:
    with pytest.raises(ValueError, match="points has coordinates outside the 3000x2500 image"):
        tiled.predict(points=[[3100, 10]])
    with pytest.raises(ValueError, match="image_index must be 0 for a tiled image"):
        tiled.predict(points=[[10, 10]], image_index=1)
    with pytest.raises(ValueError, match="mask_input needs points or a box"):
        tiled.predict(mask_input=np.zeros((64, 64), np.float32))


def exact_decoder(labels: np.ndarray):
    """Stands in for EdgeTAM's decoder: for each point, the connected component under it as
    the region sees it, as low-res (1/4) logits of +-10 with predicted IoU 0.95; on the
    background an empty mask with predicted IoU 0."""
    from skimage.measure import label as cc

    def decoder_for(features, box, region_hw):
        x0, y0, x1, y1 = (int(v) for v in box)
        h, w = region_hw
        comps = cc(labels[y0:y1, x0:x1], connectivity=1, background=0)
        blocks = comps[: h // 4 * 4, : w // 4 * 4].reshape(h // 4, 4, w // 4, 4)
        low = {c: (((blocks == c).mean((1, 3)) - 0.5) * 20).astype(np.float32) for c in range(1, comps.max() + 1)}

        def decode(points):
            out = np.full((len(points), 1, h // 4, w // 4), -10.0, np.float32)
            iou = np.zeros((len(points), 1), np.float32)
            for k, (px, py) in enumerate(points):
                c = comps[min(int(py), h - 1), min(int(px), w - 1)]
                if c:
                    out[k, 0], iou[k] = low[c], 0.95
            return torch.from_numpy(out), torch.from_numpy(iou), np.arange(len(points))

        return decode

    return decoder_for


def test_automatic_masks_merge_objects_cut_by_tile_borders(tiny_model, tiled, scene) -> None:
    image, labels = scene
    gen = ek.AutoMaskGenerator(tiny_model, points_per_side=12, output_mode="coco_rle", cache=tiled.cache)
    gen._decoder_for = exact_decoder(labels)
    hits = tiled.cache.hits
    records, hw = gen.generate_records(image)
    assert tiled.cache.hits == hits + 1  # the 12 tiles came from the cache
    anns = gen.to_annotations(records, hw)
    from pycocotools import mask as mask_utils

    masks = [mask_utils.decode({"size": a["segmentation"]["size"],
                                "counts": a["segmentation"]["counts"].encode()}).astype(bool) for a in anns]
    n_objects = int(labels.max())
    assert len(masks) == n_objects, f"{len(masks)} masks for {n_objects} objects"
    for k in range(1, n_objects + 1):
        obj = labels == k
        ious = [np.logical_and(obj, m).sum() / np.logical_or(obj, m).sum() for m in masks]
        assert sum(i > 0.5 for i in ious) == 1, f"object {k}: {sorted(ious)[-3:]}"
        assert max(ious) >= 0.95, f"object {k}: best IoU {max(ious):.3f}"


def test_negative_only_and_mask_input_on_a_tiled_image(tiled) -> None:
    r = tiled.predict(points=[[1500, 1200]], labels=[0], multimask=False)
    assert r.masks.shape == (1, H, W)
    first = tiled.predict(points=[[2600, 800]], labels=[1])
    again = tiled.predict(points=[[2600, 800]], labels=[1], mask_input=first.logits[first.best], multimask=False)
    assert again.masks.shape == (1, H, W) and again.masks.any()
