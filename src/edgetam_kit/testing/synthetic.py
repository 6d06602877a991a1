"""Synthetic frame sources for tests, benchmarks and demos: frames generated on demand, with
their ground-truth masks (a public test helper; nothing is stored)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.sources import BaseSource


class SyntheticSource(BaseSource):
    """Frames generated on the fly (nothing stored): a bright disk moving along a smooth closed
    path over a seeded textured background, plus seeded noise. (H, W) if ``channels`` is None,
    else (H, W, channels); dtype uint8, uint16 or float32. ``mask(i)`` is the disk (ground truth)."""

    def __init__(self, n_frames: int, height: int = 64, width: int = 64, channels: int | None = 3,
                 dtype: Any = np.uint8, radius: float | None = None, period: int = 100,
                 noise: float = 0.02, seed: int = 0) -> None:
        if min(n_frames, height, width, 1 if channels is None else channels) < 1:
            raise ValueError("n_frames, height, width, channels must be >= 1, "
                             f"got {n_frames}, {height}, {width}, {channels}")
        self._dtype = np.dtype(dtype)
        if self._dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"dtype must be uint8, uint16 or float32, got {self._dtype}")
        self._n, self.name = int(n_frames), f"synthetic(seed={seed})"
        self.frame_shape = (height, width) if channels is None else (height, width, channels)
        self.radius = float(radius if radius is not None else max(2.0, min(height, width) / 8))
        self.period, self.noise, self.seed = int(period), float(noise), int(seed)
        rng = np.random.default_rng(seed)
        self._waves = rng.uniform(0.02, 0.2, (4, 2)), rng.uniform(0, 2 * np.pi, 4)  # texture: 4 plane waves
        self._phase = float(rng.uniform(0, 2 * np.pi))

    def center(self, i: int) -> tuple[float, float]:
        """(x, y) of the disk in frame i."""
        h, w = self.frame_shape[:2]
        t = 2 * np.pi * self._index(i) / self.period + self._phase
        margin = self.radius + 1
        return (w / 2 + (w / 2 - margin) * 0.8 * np.sin(t), h / 2 + (h / 2 - margin) * 0.8 * np.sin(2 * t))

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool: the disk in frame i."""
        cx, cy = self.center(i)
        yy, xx = np.ogrid[: self.frame_shape[0], : self.frame_shape[1]]
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius**2

    def _read(self, i: int) -> np.ndarray:
        h, w = self.frame_shape[:2]
        yy, xx = np.ogrid[:h, :w]
        (freqs, phases) = self._waves
        img = np.full((h, w), 0.35, np.float32)
        for (fx, fy), ph in zip(freqs, phases):
            img += np.float32(0.05) * np.sin(fx * xx + fy * yy + ph).astype(np.float32)
        img[self.mask(i)] = 0.9
        if self.noise:
            img += self.noise * np.random.default_rng([self.seed, i]).standard_normal((h, w), np.float32)
        np.clip(img, 0.0, 1.0, out=img)
        if self._dtype != np.float32:
            img = np.round(img * np.iinfo(self._dtype).max).astype(self._dtype)
        if len(self.frame_shape) == 3:
            img = np.repeat(img[..., None], self.frame_shape[2], axis=2)
        return img


# --- openers (registered in builtin_plugins) ------------------------------------------------
