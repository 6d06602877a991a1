"""Segment everything on several planes of a layer: ``work.automask_steps`` plane after plane,
as one generator that yields ``Progress`` (counting planes) and one ``PlaneResult`` per plane.
Nothing here imports napari or Qt; the widget runs it in a thread worker, tests iterate it.

A plane is addressed by its ``prefix``, the indices of the axes before (H, W) (see ``work``).
Ids are unique across the planes of one run: each plane's masks continue after the previous
plane's (``first_id`` .. ``first_id + count - 1`` on each plane).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .work import AutoResult, Progress, automask_steps

STAGE = "planes"


@dataclass(frozen=True)
class PlaneResult:
    """Automatic masks of plane ``prefix`` as a label plane (H, W) uint32 (ids ``first_id`` ..
    ``first_id + count - 1``); ``done`` of ``total`` planes are finished."""

    prefix: tuple[int, ...]
    labels: np.ndarray
    count: int
    first_id: int
    done: int
    total: int
    stage: ClassVar[str] = STAGE  # what done / total count

    @property
    def next_id(self) -> int:
        return self.first_id + self.count


@dataclass
class PlaneRun:
    """The tally of one Segment everything run, as the widget reports it: ``done`` of ``planes``
    planes finished, ``masks`` masks so far."""

    planes: int
    done: int = 0
    masks: int = 0


def plane_prefixes(spatial: Sequence[int]) -> list[tuple[int, ...]]:
    """Every plane of an array of spatial shape (..., H, W), in C order ([()] for one plane)."""
    return list(itertools.product(*(range(int(s)) for s in spatial[:-2])))


def plane_count(spatial: Sequence[int]) -> int:
    """How many (H, W) planes an array of spatial shape (..., H, W) holds."""
    return math.prod(int(s) for s in spatial[:-2])


def every_plane_steps(model: Any, data: Any, prefixes: Sequence[tuple[int, ...]], first_id: int = 1,
                      channels: int | None = None, cancel: threading.Event | None = None, cache: Any = None,
                      **options: Any) -> Iterator[Progress | PlaneResult]:
    """Automatic masks of the planes ``data[prefix]`` ((H, W[, C]) each; numpy, dask, zarr: one
    plane read at a time) for each of ``prefixes`` in turn; ``options`` go to ``AutoMaskGenerator``.

    Progress counts planes (``Progress(k, n, "planes")`` before plane k); with a single plane
    the generator's own progress (point batches) is passed on instead. Cancelled (``cancel``
    set, checked between planes and between point batches within one): stops; the planes
    already yielded are all there is, the plane in progress yields nothing.
    """
    cancel = cancel or threading.Event()
    total, next_id = len(prefixes), int(first_id)
    for k, prefix in enumerate(prefixes):
        if cancel.is_set():
            return
        if total > 1:
            yield Progress(k, total, STAGE)
        result = None
        for item in automask_steps(model, np.asarray(data[tuple(prefix)]), next_id, channels, cancel, cache,
                                   **options):
            if isinstance(item, AutoResult):
                result = item
            elif total == 1:
                yield item
        if result is None:  # cancelled within the plane
            return
        done = PlaneResult(tuple(prefix), result.labels, result.count, next_id, k + 1, total)
        next_id = done.next_id
        yield done
