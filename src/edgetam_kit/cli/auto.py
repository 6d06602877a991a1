"""``edgetam auto`` (segment everything, write COCO / label TIFF / OME-Zarr) and ``edgetam
embed`` (precompute embeddings into a cache folder)."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .common import add_runtime_args, choose_device, load_checkpoint, read_image, weights_note

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".gif", ".mpg", ".mpeg")


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def image_files(source: str, flag: str = "IMAGE|FOLDER") -> list[Path]:
    """One image file, or the image files of a folder (natural order)."""
    path = Path(source)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: _natural(p.name))
        if not files:
            raise ValueError(f"{flag}: {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{flag}: {path} does not exist; give an image file or a folder of images")


def _bar(total: int, desc: str, quiet: bool, unit: str = "it", leave: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, leave=leave, dynamic_ncols=True)


def _tiling(args: argparse.Namespace) -> dict[str, Any]:
    mode = {"auto": "auto", "on": True, "off": False}[args.tiling]
    for flag, value in (("--tile-size", args.tile_size), ("--tile-overlap", args.tile_overlap)):
        if value is not None and value < 0:
            raise ValueError(f"{flag} must be a positive number of pixels, got {value}")
    return {"tiling": mode, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}


def _add_model_args(p: argparse.ArgumentParser, configs: list[str]) -> None:
    p.add_argument("--checkpoint", required=True, metavar="SRC",
                   help="HF folder, edgetam.pt, registered name (see `edgetam info`) or hub id")
    p.add_argument("--config", choices=configs, help="network preset, only for the original .pt layout")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--tiling", choices=("auto", "on", "off"), default="auto",
                   help="embed large images as 1024-px tiles: auto (above 2 x tile size), on, off (default: auto)")
    p.add_argument("--tile-size", type=int, metavar="PX", help="tile side in pixels (default 1024)")
    p.add_argument("--tile-overlap", type=int, metavar="PX", help="overlap of neighbouring tiles (default tile/4)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cache(args: argparse.Namespace) -> Any:
    """--cache DIR [--cache-readonly] [--cache-precision P] as an EmbeddingCache (or None)."""
    from ..io.cache import EmbeddingCache

    if args.cache is None:
        if args.cache_readonly:
            raise ValueError("--cache-readonly needs --cache DIR")
        return None
    return EmbeddingCache(args.cache, readonly=args.cache_readonly, precision=args.cache_precision)


def _add_cache_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-precision", choices=("fp32", "fp16"), default="fp32",
                   help="how cache entries are stored: fp32 (exact, default) or fp16 (about half the disk, features "
                        "rounded to float16; see docs/automask.md); entries of one are misses for the other")


# ----------------------------------------------------------------------------- auto
def cmd_auto(args: argparse.Namespace) -> int:
    """``edgetam auto``: automatic masks for an image or a folder, written in one format."""
    from .. import AutoMaskGenerator
    from ..io.checkpoint import random_weights_of
    from ..io.export import MaskSet, exporters, file_stems, random_note
    from ..io.plugin_guard import write_masks  # a failing plugin exporter: reported, the built-in writes

    found = exporters()
    if args.format not in found:
        raise ValueError(f"--format must be one of {', '.join(sorted(found))}, got {args.format!r}")
    exporter = found[args.format]
    files = image_files(args.source)
    stems = file_stems([p.name for p in files])  # a.png and a.jpg -> a.png.tif and a.jpg.tif, never one a.tif
    out = Path(args.output)
    model = load_checkpoint(args.checkpoint, args.device, args.config, args)
    gen = AutoMaskGenerator(
        model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
        stability_score_offset=args.stability_score_offset, mask_threshold=args.mask_threshold,
        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area, output_mode="coco_rle", cache=_cache(args), **_tiling(args))
    label = random_weights_of(model)
    combined = exporter.combined
    items: list[MaskSet] = []
    written: list[Path] = []
    total_masks = 0
    with _bar(len(files), "images", args.quiet or len(files) == 1, "img") as images_bar:
        for path, stem in zip(files, stems):
            image = read_image(str(path))
            bar = _bar(0, path.name, args.quiet, "batch", leave=False)

            def progress(done: int, total: int, bar: Any = bar) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            t0 = time.perf_counter()
            anns = gen.generate(image, progress=progress)
            bar.close()
            total_masks += len(anns)
            item = MaskSet(path.name, image.shape[:2], anns, image if args.format == "zarr" else None, stem, label)
            if combined:
                items.append(item)
            else:
                paths = write_masks(args.format, [item], out)
                if set(paths) & set(written):  # a plugin that ignores item.stem: say so, never report it as fine
                    raise ValueError(f"--format {args.format}: {path.name} was written over an earlier image's "
                                     f"file ({', '.join(str(p) for p in set(paths) & set(written))})")
                written += paths
            images_bar.update(1)
            if not args.quiet:
                images_bar.write(f"{path.name}: {len(anns)} masks ({time.perf_counter() - t0:.1f} s)")
    if combined:
        written += write_masks(args.format, items, out)
    cache = gen.predictor.cache
    cached = f"; cache {cache.hits} hit(s), {cache.misses} miss(es)" if cache is not None else ""
    note = f"; {random_note(label)}" if label else ""
    print(f"wrote {', '.join(str(p) for p in written)} ({total_masks} masks in {len(files)} image(s){cached}{note})")
    return 0


# ----------------------------------------------------------------------------- embed
def frames_of(source: str) -> tuple[int, Iterator[tuple[str, np.ndarray]]]:
    """(count, iterator of (name, frame)) for an image, a folder of images, a TIFF stack or a video."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"SOURCE: {path} does not exist; give an image, a folder of images, "
                                "a TIFF stack or a video")
    if path.is_dir() or path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
        files = image_files(source, "SOURCE")
        return len(files), ((f.name, read_image(str(f))) for f in files)
    if path.suffix.lower() in (".tif", ".tiff") + VIDEO_SUFFIXES:
        from ..io.plugin_guard import read_frame
        from ..io.sources import open_source

        src = open_source(str(path))
        n = len(src)

        def frames() -> Iterator[tuple[str, np.ndarray]]:
            try:
                for i in range(n):
                    yield f"{path.name}[{i}]", np.asarray(read_frame(src, i))
            finally:
                getattr(src, "close", lambda: None)()

        return n, frames()
    raise ValueError(f"SOURCE: {path.name} is not an image ({', '.join(IMAGE_SUFFIXES)}), a TIFF stack or a "
                     f"video ({', '.join(VIDEO_SUFFIXES)})")


def cmd_embed(args: argparse.Namespace) -> int:
    """``edgetam embed``: encode every frame of SOURCE into the cache folder -o."""
    from .. import EmbeddingCache, ImagePredictor

    cache = EmbeddingCache(args.output, precision=args.cache_precision)
    n, frames = frames_of(args.source)
    model = load_checkpoint(args.checkpoint, choose_device(args.device), args.config, args)
    pred = ImagePredictor(model, cache=cache, **_tiling(args))
    t0 = time.perf_counter()
    with _bar(n, "embedding", args.quiet, "frame") as bar:
        for _, frame in frames:
            pred.set_image(frame)
            bar.update(1)
    note = weights_note(model)  # also in each entry's signature (model.random_weights)
    print(f"{n} frame(s): {cache.misses} embedded, {cache.hits} already in {cache.path} "
          f"({time.perf_counter() - t0:.1f} s); {len(cache)} entries in the cache" + (f"; {note}" if note else ""))
    return 0


# ----------------------------------------------------------------------------- parsers
def add_auto_parsers(subs: argparse._SubParsersAction, sub: Any, configs: list[str]) -> None:
    """Register ``auto`` and ``embed`` (``sub`` is cli._sub: a parser with an example)."""
    p = sub(subs, "auto", "Segment everything in an image or a folder of images; write COCO JSON, label TIFFs "
            "or OME-Zarr.", "edgetam auto cells/ --checkpoint edgetam -o masks.json --format coco")
    p.add_argument("source", metavar="IMAGE|FOLDER", help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="coco: a .json file (or a folder: OUT/annotations.json); tiff/zarr: a folder "
                        "(one file per image) or, for one image, a .tif/.zarr path")
    p.add_argument("--format", default="coco", metavar="coco|tiff|zarr",
                   help="output format: coco (RLE masks), tiff (uint32 labels), zarr (OME-Zarr labels), or one a "
                        "plugin adds (see `edgetam plugins`); default coco")
    _add_model_args(p, configs)
    p.add_argument("--cache", metavar="DIR", help="embedding cache folder (see `edgetam embed`)")
    p.add_argument("--cache-readonly", action="store_true",
                   help="only read the cache (a shared folder prepared elsewhere); never write to it")
    _add_cache_precision(p)
    g = p.add_argument_group("generator settings (defaults: the original SAM 2 generator's)")
    g.add_argument("--points-per-side", type=int, default=32, metavar="N")
    g.add_argument("--points-per-batch", type=int, default=64, metavar="N")
    g.add_argument("--pred-iou-thresh", type=float, default=0.8, metavar="X")
    g.add_argument("--stability-score-thresh", type=float, default=0.95, metavar="X")
    g.add_argument("--stability-score-offset", type=float, default=1.0, metavar="X")
    g.add_argument("--mask-threshold", type=float, default=0.0, metavar="X")
    g.add_argument("--box-nms-thresh", type=float, default=0.7, metavar="X")
    g.add_argument("--crop-n-layers", type=int, default=0, metavar="N")
    g.add_argument("--min-mask-region-area", type=int, default=0, metavar="PX")
    add_runtime_args(p)
    p.set_defaults(func=cmd_auto)

    p = sub(subs, "embed", "Precompute image embeddings into a cache folder (an image, a folder of images, a "
            "TIFF stack or a video), e.g. on a GPU machine for laptop users.",
            "edgetam embed stack.tif --checkpoint edgetam --device cuda -o ./embeddings")
    p.add_argument("source", metavar="SOURCE", help="image, folder of images, TIFF stack or video file")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder (created if missing)")
    _add_cache_precision(p)
    _add_model_args(p, configs)
    add_runtime_args(p)
    p.set_defaults(func=cmd_embed)
