"""The synthetic microscopy generator used by fine-tuning tests and demos: seeded, instance
ground truth consistent with the image, 8/16-bit, stacks keep ids, bad arguments named."""

import numpy as np
import pytest

from edgetam_kit.testing.cells import synthetic_cell_stack, synthetic_cells


def test_cells_are_seeded_and_labels_mark_bright_objects():
    a, b = synthetic_cells(3, 96, seed=4), synthetic_cells(3, 96, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    other = synthetic_cells(3, 96, seed=5)
    assert not np.array_equal(a.images[0], other.images[0])
    for image, labels in zip(a.images, a.labels):
        assert image.dtype == np.uint8 and labels.dtype == np.int32 and image.shape == labels.shape == (96, 96)
        ids = np.unique(labels)[1:]
        assert 3 <= len(ids) <= 7
        # cells are brighter than the background they sit on
        assert image[labels > 0].mean() > image[labels == 0].mean() + 40


def test_sixteen_bit_and_folder_layout(tmp_path):
    import tifffile

    cells = synthetic_cells(2, 64, dtype=np.uint16, seed=1)
    assert cells.images[0].dtype == np.uint16 and cells.images[0].max() > 255
    root = cells.write_folder(tmp_path / "data")
    names = sorted(p.stem for p in (root / "images").iterdir())
    assert names == sorted(p.stem for p in (root / "labels").iterdir()) == sorted(cells.names)
    assert np.array_equal(tifffile.imread(root / "labels" / f"{cells.names[0]}.tif"), cells.labels[0])


def test_stack_keeps_ids_while_cells_move():
    images, labels = synthetic_cell_stack(6, 96, seed=2)
    assert images.shape == labels.shape == (6, 96, 96)
    ids = set(np.unique(labels[0])[1:])
    assert ids and all(set(np.unique(f)[1:]) <= ids for f in labels)
    assert not np.array_equal(labels[0], labels[-1])  # they moved


@pytest.mark.parametrize("kwargs, name", [({"n": 0}, "n"), ({"n": 2, "size": 8}, "size"),
                                          ({"n": 2, "dtype": np.float64}, "dtype"),
                                          ({"n": 2, "cells": (4, 2)}, "cells")])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_cells(**kwargs)
