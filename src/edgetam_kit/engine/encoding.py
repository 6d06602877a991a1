"""Encoding many images: device batches, host work overlapped with the network.

``encode_batches`` reads and prepares the images of the next batch in a helper thread (validation,
channel selection, 16-bit/float normalisation on the host; uint8 stays uint8 and is divided by 255
on the model's device, a quarter of the upload), looks each image up in the embedding cache, and
runs the network once per batch of cache misses. Results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from ..modeling import ImageFeatures
from ..progress import Cancelled, is_cancelled, report
from ..runtime import Runtime
from ..transforms import to_model_input, to_unit_rgb


@dataclass
class Prepared:
    """One image ready for the network: its index, the image as given (for the cache signature),
    its HxWx3 pixels (uint8, or float32 in [0, 1]), its (H, W), and its cached features if any."""

    index: int
    image: Any
    rgb: np.ndarray
    hw: tuple[int, int]
    signature: dict[str, Any] | None = None
    cached: ImageFeatures | None = None


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (images per network call), got {batch_size!r}")
    return int(batch_size)


def encode_batches(runtime: Runtime, images: Iterable[Any], batch_size: int,
                   prepare: Callable[[int, Any], Prepared], store: Callable[[Prepared, ImageFeatures], None],
                   total: int | None = None, progress: Any = None, cancel: Any = None,
                   ) -> Iterator[tuple[Prepared, ImageFeatures]]:
    """Yield (prepared image, its features (1 image)) for every image, in order.

    prepare(index, image) -> Prepared (validation, normalisation, cache lookup; runs in a helper
    thread one batch ahead); store(prepared, features): called for each newly encoded image (the
    cache). The network runs once per batch of up to ``batch_size`` cache misses. progress is told
    after each image (done, total: total may be None for an iterable of unknown length); cancel is
    checked before each batch (``Cancelled``: the images yielded so far stand)."""
    model = runtime.model
    it = iter(enumerate(images))

    def next_batch() -> list[Prepared]:
        return [prepare(i, image) for i, image in islice(it, batch_size)]

    done = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetam-encode") as pool:
        ahead = pool.submit(next_batch)
        while True:
            batch = ahead.result()  # re-raises a bad image's error at its batch
            if not batch:
                return
            if is_cancelled(cancel):
                raise Cancelled(f"encoding cancelled after {done} images")
            ahead = pool.submit(next_batch)
            misses = [p for p in batch if p.cached is None]
            encoded: dict[int, ImageFeatures] = {}
            if misses:
                size = model.config.image_size
                pixels = torch.cat([to_model_input(p.rgb, size, model.device, model.dtype) for p in misses])
                with runtime.inference():
                    feats = runtime.encode_image(pixels)
                for j, p in enumerate(misses):
                    one = feats.select(torch.tensor([j], device=feats.embed.device))
                    store(p, one)
                    encoded[p.index] = one
            for p in batch:
                yield p, (p.cached if p.cached is not None else encoded[p.index])
                done += 1  # told per image (a tqdm-like is updated by one per call)
                report(progress, done, total if total is not None else done)
                if total != done and is_cancelled(cancel):
                    raise Cancelled(f"encoding cancelled after {done} images")


def prepare_image(index: int, image: Any, channels: Any, percentiles: tuple[float, float], name: str,
                  lookup: Callable[[Any, Any], tuple[dict[str, Any] | None, ImageFeatures | None]] | None,
                  ) -> Prepared:
    """``Prepared`` for one image: pixels normalised on the host except uint8 (kept for the device),
    then ``lookup(image, channels) -> (signature, cached features or None)`` when a cache is used."""
    rgb = to_unit_rgb(image, channels=channels, percentiles=percentiles, name=name, keep_uint8=True)
    signature, cached = lookup(image, channels) if lookup is not None else (None, None)
    return Prepared(index, image, rgb, (int(rgb.shape[0]), int(rgb.shape[1])), signature, cached)
