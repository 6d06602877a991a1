"""Shared fixtures: random-weight EdgeTAM checkpoints written in both real formats, and
the two reference implementations (original EdgeTAM code, transformers) holding the
same weights. Built once per session per shape."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from edgetam_kit.testing.oracles import References, make_reference_checkpoints  # noqa: E402


@pytest.fixture(scope="session")
def tiny_refs(tmp_path_factory: pytest.TempPathFactory) -> References:
    return make_reference_checkpoints(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def real_refs(tmp_path_factory: pytest.TempPathFactory) -> References:
    return make_reference_checkpoints(tmp_path_factory.mktemp("real"), "edgetam", seed=1)


@pytest.fixture(scope="session")
def images() -> dict[str, np.ndarray]:
    """uint8 RGB test images from scikit-image's bundled data, at non-square sizes."""
    from skimage import data, transform

    def rgb(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        out = transform.resize(img, hw, order=1, anti_aliasing=True, preserve_range=True)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    return {
        "astronaut": rgb(data.astronaut(), (480, 640)),
        "wide": rgb(data.coffee(), (768, 1024)),  # H x W = 768 x 1024
        "tall": rgb(data.chelsea(), (900, 600)),  # H x W = 900 x 600
    }
