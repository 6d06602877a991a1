"""Synthetic microscopy-like images with instance ground truth (a public test/demo helper).

Cells are wobbly ellipses with a brighter nucleus and a grainy texture, some of them touching,
over an uneven, textured background, blurred by a Gaussian "PSF" and with shot and read noise.
Images are 2-D (H, W) uint8 or uint16; labels are (H, W) int32 instance ids (0 = background).
Stacks add a z or time axis: cells drift and change shape slowly, keeping their ids.
Everything is seeded: the same arguments give the same arrays on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class CellImages:
    """``images[i]`` (H, W) uint8/uint16 and ``labels[i]`` (H, W) int32 instance ids."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def write_folder(self, folder: "str | object") -> "object":
        """Write ``folder/images/<name>.tif`` and ``folder/labels/<name>.tif`` (the folder layout
        ``ek.finetune`` reads). Returns the folder as a Path."""
        from pathlib import Path

        import tifffile

        root = Path(folder)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        for name, image, label in zip(self.names, self.images, self.labels):
            tifffile.imwrite(root / "images" / f"{name}.tif", image)
            tifffile.imwrite(root / "labels" / f"{name}.tif", label)
        return root


@dataclass
class _Cell:
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    brightness: float
    harmonics: np.ndarray  # (3, 2) amplitude, phase of boundary wobble


def _draw(cell: _Cell, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside, radial) for one cell on the grid: radial = distance / boundary radius."""
    dx, dy = xx - cell.cx, yy - cell.cy
    c, s = np.cos(cell.angle), np.sin(cell.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(cell.harmonics))
    radial = np.sqrt((u / cell.rx) ** 2 + (v / cell.ry) ** 2) / wobble
    return radial <= 1.0, radial


def _random_cells(rng: np.random.Generator, h: int, w: int, n: int, radius: tuple[float, float],
                  touching: float) -> list[_Cell]:
    cells: list[_Cell] = []
    for _ in range(200 * n):
        if len(cells) == n:
            break
        r = rng.uniform(*radius)
        rx, ry = r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        # most cells keep clear of the others; a fraction ``touching`` may press against one
        gap = 0.85 if rng.random() < touching else 1.15
        if all(np.hypot(cx - o.cx, cy - o.cy) > gap * (max(rx, ry) + max(o.rx, o.ry)) for o in cells):
            cells.append(_Cell(cx, cy, rx, ry, rng.uniform(0, np.pi), rng.uniform(0.45, 0.9),
                               np.stack([rng.uniform(0, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)], 1)))
    return cells


def _render(rng: np.random.Generator, cells: list[_Cell], h: int, w: int, dtype: np.dtype,
            noise: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    labels = np.zeros((h, w), np.int32)
    img = 0.12 + 0.06 * (xx / w) + 0.04 * (yy / h)  # uneven illumination
    img = img + 0.04 * ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 6) * 6
    for i, cell in enumerate(cells, start=1):
        inside, radial = _draw(cell, yy, xx)
        labels[inside] = i  # later cells overlap earlier ones: touching cells share a border
        grain = 1.0 + 0.15 * ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.5) * 3
        body = cell.brightness * (0.75 + 0.25 * np.clip(1 - radial, 0, 1)) * grain
        nucleus = 0.25 * np.exp(-(radial / 0.35) ** 2)
        img = np.where(inside, body + nucleus, img)
    img = ndimage.gaussian_filter(img, 1.0)  # the PSF
    img = img + noise * rng.standard_normal((h, w)).astype(np.float32)
    img = np.clip(img, 0, 1)
    if dtype == np.uint16:  # a camera offset and a 12-bit-ish range, as 16-bit microscopes write
        return (100 + img * 3900).astype(np.uint16), labels
    return np.round(img * 255).astype(np.uint8), labels


def _check(n: int, size: tuple[int, int], cells: tuple[int, int], dtype: object) -> tuple[int, int, np.dtype]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if min(h, w) < 32:
        raise ValueError(f"size must be at least 32 pixels on a side, got {size!r}")
    if not (1 <= cells[0] <= cells[1]):
        raise ValueError(f"cells must be (min, max) with 1 <= min <= max, got {cells!r}")
    dt = np.dtype(dtype)
    if dt not in (np.uint8, np.uint16):
        raise ValueError(f"dtype must be uint8 or uint16, got {dt}")
    return int(h), int(w), dt


def synthetic_cells(n: int, size: int | tuple[int, int] = 256, cells: tuple[int, int] = (3, 7),
                    radius: tuple[float, float] | None = None, touching: float = 0.3,
                    dtype: object = np.uint8, noise: float = 0.03, seed: int = 0) -> CellImages:
    """``n`` independent 2-D images (H, W) = ``size`` with ``cells`` (min, max) cells each.
    radius: (min, max) cell radius in pixels (default 6-12 % of the shorter side)."""
    h, w, dt = _check(n, size, cells, dtype)
    radius = radius or (0.06 * min(h, w), 0.12 * min(h, w))
    images, labels = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        found = _random_cells(rng, h, w, int(rng.integers(cells[0], cells[1] + 1)), radius, touching)
        image, label = _render(rng, found, h, w, dt, noise)
        images.append(image)
        labels.append(label)
    return CellImages(images, labels, [f"cells_{seed}_{i:04d}" for i in range(n)])


def synthetic_cell_stack(n: int, size: int | tuple[int, int] = 128, cells: tuple[int, int] = (3, 5),
                         drift: float = 1.5, dtype: object = np.uint8, noise: float = 0.03,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A z or time stack: (n, H, W) images and (n, H, W) int32 labels; each cell keeps its id
    while it drifts (``drift`` pixels per frame) and slowly changes shape."""
    h, w, dt = _check(n, size, cells, dtype)
    rng = np.random.default_rng([seed, 1_000_003])
    found = _random_cells(rng, h, w, int(rng.integers(cells[0], cells[1] + 1)), (0.08 * min(h, w), 0.13 * min(h, w)),
                          0.2)
    velocity = rng.normal(0, drift, (len(found), 2))
    images, labels = np.zeros((n, h, w), dt), np.zeros((n, h, w), np.int32)
    for t in range(n):
        moved = [_Cell(min(max(c.cx + t * vx, c.rx), w - c.rx), min(max(c.cy + t * vy, c.ry), h - c.ry),
                       c.rx * (1 + 0.05 * np.sin(0.3 * t + k)), c.ry, c.angle + 0.02 * t, c.brightness, c.harmonics)
                 for k, (c, (vx, vy)) in enumerate(zip(found, velocity))]
        images[t], labels[t] = _render(np.random.default_rng([seed, t]), moved, h, w, dt, noise)
    return images, labels
