"""ImagePredictor: encode an image once, then decode any number of prompts against it.

Coordinates are (x, y) in pixels of the image as given; boxes are (x0, y0, x1, y1);
labels are 1 (positive) and 0 (negative). Masks come back at the image's own size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..io.cache import as_cache, image_signature
from ..modeling import EdgeTam, ImageFeatures
from ..progress import Cancelled, is_cancelled, report
from ..runtime import ImageContext, Runtime, runtime_of
from ..transforms import DEFAULT_PERCENTILES, _as_array, check_percentiles, to_model_input, to_unit_rgb
from .encoding import Prepared, check_batch_size, encode_batches, prepare_image
from .locking import locked
from .prediction import Prediction
from .prompts import Prompt, PromptParser, batch_size_of
from .tiling import TileGrid, Tiling, tiled_predict

DEFAULT_TILE_SIZE = 1024  # pixels of the image per tile (EdgeTAM's input: tile pixels are not resampled)


class ImagePredictor:
    """Prompted segmentation of one image (``set_image``) or several (``set_images``).

    Large images: with ``tiling="auto"`` (default) an image whose longer side exceeds
    ``tile_threshold`` pixels (default 2 x ``tile_size``) is embedded as overlapping tiles of
    ``tile_size`` pixels (default 1024, EdgeTAM's input size) overlapping by ``tile_overlap``
    (default ``tile_size // 4``); ``tiling=True`` tiles any single image, ``False`` never
    (the image is resized to the model's input). See ``tiling.py``.

    cache: an ``EmbeddingCache`` (or a folder for one): embeddings are looked up there by a
    signature of the image, normalisation, model and tiling before encoding, and stored after.

    Threads: one predictor may be shared; ``set_image(s)``, ``set_features``, ``reset``,
    ``predict`` and ``predict_batch`` hold a lock, so a prediction always sees one whole image
    (a ``predict`` waits while another thread's ``set_image`` encodes).
    """

    def __init__(
        self,
        model: EdgeTam,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        tiling: bool | str = "auto",
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_threshold: int | None = None,
        cache: Any = None,
    ) -> None:
        if not isinstance(model, EdgeTam):
            raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
        self.model = model.eval()
        self.percentiles = check_percentiles(percentiles)
        self._features: ImageFeatures | None = None
        self._sizes: list[tuple[int, int]] = []
        self._runtime: Runtime | None = None  # the runtime the features were made with
        self._ctx: ImageContext | None = None  # decoder image context, made at the first prompt
        if tiling not in (True, False, "auto"):
            raise ValueError(f"tiling must be True, False or 'auto', got {tiling!r}")
        size = DEFAULT_TILE_SIZE if tile_size is None else tile_size
        self.tiling_mode = tiling
        self.tiling = Tiling(size, size // 4 if tile_overlap is None else tile_overlap,
                             2 * size if tile_threshold is None else tile_threshold)
        self._grid: TileGrid | None = None  # set when the current image is tiled
        self._parser = PromptParser(model.config.image_size, model.config.low_res_size)
        self.cache = as_cache(cache)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ images
    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image set, in order."""
        if self._grid is not None:
            return [self._grid.image_hw]
        return list(self._sizes)

    @property
    def tile_grid(self) -> TileGrid | None:
        """The tiles of the current image (boxes x0, y0, x1, y1), or None when not tiled."""
        return self._grid

    def tiling_for(self, hw: tuple[int, int]) -> Tiling | None:
        """The tiling a single image of shape ``hw`` gets, or None."""
        if self.tiling_mode is True or (self.tiling_mode == "auto" and self.tiling.applies(hw)):
            return self.tiling
        return None

    @property
    def features(self) -> ImageFeatures:
        if self._features is None:
            raise ValueError("no image set: call set_image(image) or set_images([...]) before predict")
        return self._features

    def set_image(self, image: Any, channels: int | Sequence[int] | None = None, progress: Any = None,
                  cancel: Any = None) -> None:
        """Encode one image (HxW or HxWxC; uint8, uint16 or float). One encoder pass (one per
        tile for a tiled image; ``progress``/``cancel`` as in ``set_images``, per tile)."""
        self.set_images([image], channels=channels, progress=progress, cancel=cancel)

    @locked
    def set_images(
        self,
        images: Sequence[Any],
        channels: int | Sequence[int] | None = None,
        progress: Any = None,
        cancel: Any = None,
        batch_size: int | None = None,
    ) -> None:
        """Encode several images (sizes may differ); prompts pick one with ``image_index``.

        progress: ``f(done, total)`` or a tqdm-like object, told after each batch of images.
        cancel: callable or threading.Event checked before each batch; when set,
        ``Cancelled`` is raised and the previously set image(s) stay in place.
        batch_size: images per network call (default: 32 on a GPU, 4 on the CPU); the next
        batch is read and normalised while the network runs.
        """
        if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or len(images) == 0:
            raise TypeError("images must be a non-empty list of images (each HxW or HxWxC)")
        if self.tiling_mode is not False:
            for i, image in enumerate(images):
                arr = _as_array(image, "image" if len(images) == 1 else f"images[{i}]")
                if len(images) == 1 and arr.ndim in (2, 3) and self.tiling_for(arr.shape[:2]) is not None:
                    return self._set_tiled(arr, channels, progress, cancel)
                if len(images) > 1 and arr.ndim in (2, 3) and self.tiling_mode == "auto" and self.tiling.applies(arr.shape[:2]):
                    raise ValueError(
                        f"images[{i}] is {arr.shape[1]}x{arr.shape[0]}, above tile_threshold={self.tiling.threshold}: "
                        "set a large image alone with set_image (it is tiled), or pass tiling=False to downscale it")
        runtime = runtime_of(self.model)
        names = ["image"] if len(images) == 1 else [f"images[{i}]" for i in range(len(images))]
        embeds, s0, s1, sizes = [], [], [], []
        for p, f in encode_batches(runtime, images, self._batch_size(batch_size), self._preparer(runtime, channels, names),
                                   self._store, len(images), progress, cancel):
            embeds.append(f.embed)
            s0.append(f.high_res[0])
            s1.append(f.high_res[1])
            sizes.append(p.hw)
        # replace the previous image(s) only once every new one is encoded: a bad image
        # or an interrupted call leaves the predictor as it was
        cat = (lambda xs: xs[0]) if len(embeds) == 1 else (lambda xs: torch.cat(xs, 0))
        self._features = ImageFeatures(cat(embeds), (cat(s0), cat(s1)))
        self._ctx = None
        self._runtime = runtime
        self._sizes = [(int(h), int(w)) for h, w in sizes]
        self._grid = None

    def encode_many(self, images: Iterable[Any], batch_size: int | None = None,
                    channels: int | Sequence[int] | None = None, progress: Any = None,
                    cancel: Any = None) -> Iterator[tuple[int, ImageFeatures]]:
        """Encode any number of images (an iterable, a ``FrameSource``, or a folder path) in device
        batches, yielding ``(index, features)`` in order, without changing the image(s) set.

        Reading and host preprocessing of the next batch overlap the network; uint8 images are
        normalised on the model's device. The embedding cache is used as by ``set_image``. Pass
        the features to ``set_features`` to prompt on an image. Large images are resized to the
        model's input (no tiling here). progress / cancel as in ``set_images`` (per batch)."""
        from ..io.sources import open_source

        if isinstance(images, (str, os.PathLike)):
            images = open_source(images)
        if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
            raise TypeError(f"images must be an iterable of images (HxW or HxWxC), a FrameSource or a folder, "
                            f"got {type(images).__name__}")
        total = len(images) if hasattr(images, "__len__") else None
        runtime = runtime_of(self.model)
        names = _Names()
        for p, f in encode_batches(runtime, images, self._batch_size(batch_size), self._preparer(runtime, channels, names),
                                   self._store, total, progress, cancel):
            yield p.index, f

    @locked
    def set_features(self, features: ImageFeatures, image_hw: tuple[int, int]) -> None:
        """Make ``features`` (from ``encode_many``, one image) the current image, of ``image_hw``
        (H, W) pixels: prompts are then given in that image's pixels."""
        if not isinstance(features, ImageFeatures) or len(features) != 1:
            raise TypeError("features must be the ImageFeatures of one image (from encode_many)")
        hw = tuple(int(v) for v in image_hw)
        if len(hw) != 2 or min(hw) < 1:
            raise ValueError(f"image_hw must be (H, W) in pixels, got {image_hw!r}")
        self._features, self._ctx, self._sizes, self._grid = features, None, [hw], None
        self._runtime = runtime_of(self.model, quick=True)

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return 32 if self.model.device.type == "cuda" else 4
        return check_batch_size(batch_size)

    def _preparer(self, runtime: Runtime, channels: Any, names: Any):
        def lookup(image: Any, channels: Any):
            signature = image_signature(image, runtime, self.percentiles, channels, None)
            return signature, self.cache.get(signature, self.model.device, self.model.dtype)

        return lambda i, image: prepare_image(i, image, channels, self.percentiles, names[i],
                                              lookup if self.cache is not None else None)

    def _store(self, prepared: Prepared, features: ImageFeatures) -> None:
        if self.cache is not None and prepared.signature is not None:
            self.cache.put(prepared.signature, features)

    def _context(self, runtime: Runtime) -> ImageContext | None:
        """Decoder context of the image(s) set (made at the first prompt, kept until the next image)."""
        if self._ctx is None:
            self._ctx = runtime.image_context(self.features)
        return self._ctx

    def runtime(self) -> Runtime:
        """The runtime the current image(s) were encoded with; ``ValueError`` if the model's
        weights changed since (their features would not match the weights)."""
        rt = runtime_of(self.model, quick=True)
        if self._runtime is not None and rt is not self._runtime:
            raise ValueError("the model's weights changed since set_image (its features belong to the old weights): "
                             "call set_image / set_images again")
        return rt

    def _set_tiled(self, image: np.ndarray, channels: Any, progress: Any, cancel: Any) -> None:
        """Embed ``image`` as the tiles of ``self.tiling``; prompts are routed to them."""
        rgb = to_unit_rgb(image, channels=channels, percentiles=self.percentiles, name="image")
        grid = TileGrid.build(rgb.shape[:2], self.tiling.size, self.tiling.overlap)
        crops = lambda: [rgb[y0:y1, x0:x1] for x0, y0, x1, y1 in grid.boxes]  # noqa: E731
        runtime = runtime_of(self.model)
        features = self._cached_encode(runtime, image, rgb, channels, grid, crops, progress, cancel)
        self._runtime = runtime
        self._features = features
        self._ctx = None
        self._sizes = [grid.tile_hw(i) for i in range(len(grid))]
        self._grid = grid

    def _cached_encode(self, runtime: Runtime, image: Any, rgb: np.ndarray, channels: Any, grid: TileGrid | None,
                       pieces: Any, progress: Any = None, cancel: Any = None) -> ImageFeatures:
        """Features of ``pieces()`` (the image, or its tiles), from the cache when it has them."""
        signature = None
        if self.cache is not None:
            signature = image_signature(image, runtime, self.percentiles, channels,
                                        None if grid is None else {**self.tiling.as_dict(), "tiles": grid.boxes})
            hit = self.cache.get(signature, self.model.device, self.model.dtype)
            if hit is not None:
                return hit
        m = self.model
        parts = pieces()
        embeds, s0, s1 = [], [], []
        for i, piece in enumerate(parts):
            if grid is not None and is_cancelled(cancel):
                raise Cancelled(f"set_image cancelled after {i} of {len(parts)} tiles; previous image(s) kept")
            with runtime.inference():
                f = runtime.encode_image(to_model_input(piece, m.config.image_size, m.device, m.dtype))
            embeds.append(f.embed)
            s0.append(f.high_res[0])
            s1.append(f.high_res[1])
            if grid is not None:
                report(progress, i + 1, len(parts))
        cat = (lambda xs: xs[0]) if len(embeds) == 1 else (lambda xs: torch.cat(xs, 0))
        features = ImageFeatures(cat(embeds), (cat(s0), cat(s1)))
        if signature is not None:
            self.cache.put(signature, features)
        return features

    @locked
    def reset(self) -> None:
        """Forget the current image(s)."""
        self._features = None
        self._ctx = None
        self._sizes = []
        self._runtime = None
        self._grid = None

    # ------------------------------------------------------------------ prompts
    @locked
    def predict(
        self,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask: bool = True,
        image_index: int = 0,
        best_only: bool = False,
    ) -> Prediction:
        """Segment one object.

        points: (P, 2) (x, y) pixels; labels: (P,) 1/0 (default: all 1); box: (4,)
        x0, y0, x1, y1; mask_input: (1, 4E, 4E) or (4E, 4E) logits from a previous
        ``Prediction.logits[k]``; multimask: 3 candidate masks (True) or 1.
        best_only: keep only the candidate with the highest predicted IoU (K = 1); only its
        mask is upsampled to the image's size, which is what an interactive click shows (on a
        tiled image the candidates are stitched first, then the best is kept).
        """
        if not isinstance(best_only, bool):
            raise TypeError(f"best_only must be True or False, got {best_only!r}")
        if self._grid is not None:
            if image_index != 0:
                raise ValueError(f"image_index must be 0 for a tiled image (one image is set), got {image_index!r}")
            obj = {"points": points, "labels": labels, "box": box, "mask_input": mask_input}
            r = self._tiled([obj], multimask, [""])[0]
            return r.only(r.best) if best_only else r
        prompt = self._prompt(points, labels, box, mask_input, image_index, where="")
        return self._run([prompt], multimask, best_only)[0]

    @locked
    def predict_batch(
        self,
        points: Sequence[Any] | None = None,
        labels: Sequence[Any] | None = None,
        boxes: Sequence[Any] | None = None,
        mask_inputs: Sequence[Any] | None = None,
        multimask: bool = False,
        image_index: Sequence[int] | int | None = None,
    ) -> list[Prediction]:
        """Segment N objects; object i uses ``points[i]``, ``labels[i]``, ``boxes[i]``,
        ``mask_inputs[i]`` (any may be None) on image ``image_index[i]`` (default 0).

        Objects whose prompts have the same shape share one decoder pass; each object
        gets exactly the result it would get alone (no padding is ever added).
        """
        n, image_index = batch_size_of(points, labels, boxes, mask_inputs, image_index)
        if n == 0:
            return []

        def pick(seq: Sequence[Any] | None, i: int) -> Any:
            return None if seq is None else seq[i]

        if self._grid is not None:
            if any(ix != 0 for ix in image_index):
                raise ValueError("image_index must be 0 for every object on a tiled image (one image is set)")
            objs = [{"points": pick(points, i), "labels": pick(labels, i), "box": pick(boxes, i),
                     "mask_input": pick(mask_inputs, i)} for i in range(n)]
            return self._tiled(objs, multimask, [f"[{i}]" for i in range(n)])
        prompts = [
            self._prompt(pick(points, i), pick(labels, i), pick(boxes, i), pick(mask_inputs, i), image_index[i],
                         where=f"[{i}]")
            for i in range(n)
        ]
        return self._run(prompts, multimask)

    # ------------------------------------------------------------------ internals
    def _prompt(self, points: Any, labels: Any, box: Any, mask_input: Any, image_index: Any, where: str,
                hw: tuple[int, int] | None = None) -> Prompt:
        features = self.features
        if isinstance(image_index, bool) or not isinstance(image_index, (int, np.integer)) \
                or not (0 <= int(image_index) < len(features)):
            raise ValueError(f"image_index{where} must be an int in [0, {len(features) - 1}], got {image_index!r}")
        hw = self._sizes[int(image_index)] if hw is None else hw
        return self._parser.parse(points, labels, box, mask_input, hw, where, int(image_index),
                                  box_name=None if where == "" else f"boxes{where}")

    def _tiled(self, objects: list[dict[str, Any]], multimask: bool, wheres: list[str]) -> list[Prediction]:
        assert self._grid is not None
        return tiled_predict(self._grid, objects, multimask, wheres, self._prompt, self._run)

    def _run(self, prompts: list[Prompt], multimask: bool, best_only: bool = False) -> list[Prediction]:
        if not isinstance(multimask, bool):
            raise TypeError(f"multimask must be True or False, got {multimask!r}")
        model, features = self.model, self.features
        device, dtype = model.device, model.dtype
        out: list[Prediction | None] = [None] * len(prompts)
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.signature(), []).append(i)
        rt = self.runtime()
        with rt.inference():
            for (n_points, has_mask), idx in groups.items():
                group = [prompts[i] for i in idx]
                coords = labels = masks = None
                if n_points:
                    coords = torch.from_numpy(np.stack([p.coords for p in group])).to(device, dtype)
                    labels = torch.from_numpy(np.stack([p.labels for p in group])).to(device)
                if has_mask:
                    masks = torch.from_numpy(np.stack([p.mask for p in group])[:, None]).to(device, dtype)
                image_ids = sorted({p.image_index for p in group})
                feats = features if len(features) == 1 else None
                if feats is None or len(image_ids) > 1 or image_ids[0] != 0:
                    feats = features.select(torch.tensor([p.image_index for p in group], device=device))
                context = None
                if not has_mask:
                    context = self._context(rt)
                    if context is not None and feats is not features:
                        context = context.select(torch.tensor([p.image_index for p in group], device=device))
                dec = rt.decode(feats, coords, labels, masks, multimask, best_only=best_only, context=context)
                for j, i in enumerate(idx):
                    out[i] = Prediction.from_logits(dec.low_res_logits[j], dec.iou[j], dec.object_score[j],
                                                 self._sizes[prompts[i].image_index])
        return out  # type: ignore[return-value]


class _Names:
    """``images[i]`` names for error messages of an iterable of unknown length."""

    def __getitem__(self, i: int) -> str:
        return f"images[{i}]"
