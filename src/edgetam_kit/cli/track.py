"""``edgetam track``: propagate prompted objects through a stack or video and write the
label stack (uint32, 0 = background) to a TIFF or zarr file frame by frame, so memory stays
flat however long the source is."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..io.labels import MAX_LABEL
from .common import add_runtime_args, choose_device, load_checkpoint, parse_numbers, weights_note

OUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def parse_prompt(text: str, flag: str, form: str) -> tuple[int, int, list[float]]:
    """``FRAME:OBJ:numbers`` -> (frame, obj_id, numbers); errors name the flag."""
    parts = text.split(":")
    try:
        frame, obj = int(parts[0]), int(parts[1])
        if len(parts) != 3 or frame < 0 or not 1 <= obj <= MAX_LABEL:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"{flag} expects FRAME:OBJ:{form} (frame >= 0, object id >= 1 and <= {MAX_LABEL}), "
                         f"got {text!r}") from None
    return frame, obj, parse_numbers(parts[2], flag, form)


def collect_prompts(args: argparse.Namespace) -> dict[tuple[int, int], dict[str, Any]]:
    """Group the --prompt/--negative/--box flags by (frame, object)."""
    prompts: dict[tuple[int, int], dict[str, Any]] = defaultdict(lambda: {"points": [], "labels": [], "box": None})
    for flag, values, label in (("--prompt", args.prompt, 1), ("--negative", args.negative, 0)):
        for text in values:
            frame, obj, xy = parse_prompt(text, flag, "X,Y")
            prompts[(frame, obj)]["points"].append(xy)
            prompts[(frame, obj)]["labels"].append(label)
    for text in args.box:
        frame, obj, box = parse_prompt(text, "--box", "X0,Y0,X1,Y1")
        prompts[(frame, obj)]["box"] = box
    if not prompts:
        raise ValueError("give at least one --prompt FRAME:OBJ:X,Y or --box FRAME:OBJ:X0,Y0,X1,Y1")
    for key, p in prompts.items():
        if p["labels"] and 1 not in p["labels"] and p["box"] is None:
            raise ValueError(f"object {key[1]} on frame {key[0]} has only --negative clicks; add a --prompt or --box")
    return prompts


def open_output(path: Path, shape: tuple[int, int, int], kind: str | None = None, note: str | None = None) -> Any:
    """A writable (T, H, W) uint32 array on disk: a memory-mapped TIFF or a zarr array
    (``kind`` ".zarr" / ".tif"; default: from the path's suffix). ``note`` (the random-weights
    label) goes into the TIFF description / the zarr array's attributes."""
    from ..io.export import WEIGHTS_KEY

    if (kind or path.suffix).lower() == ".zarr":
        import zarr

        arr = zarr.open(str(path), mode="w", shape=shape, chunks=(1, *shape[1:]), dtype="uint32")
        if note:
            arr.attrs[WEIGHTS_KEY] = note
        return arr
    import tifffile

    meta = {"axes": "TYX", **({WEIGHTS_KEY: note} if note else {})}
    return tifffile.memmap(str(path), shape=shape, dtype=np.uint32, photometric="minisblack", metadata=meta)


def cmd_track(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine.tracking import VideoTracker
    from ..io.atomic import atomic_output
    from ..io.labels import paint_labels

    out = Path(args.output)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"-o/--output must end with one of {', '.join(OUT_SUFFIXES)}, got {str(out)!r}")
    prompts = collect_prompts(args)
    model = load_checkpoint(args.checkpoint, choose_device(args.device), args.config, args)
    source: Any = args.source
    if str(source).lower().endswith(".npy"):
        if not Path(source).is_file():
            raise FileNotFoundError(f"SOURCE: {source} does not exist")
        source = np.load(source, mmap_mode="r")  # frames are read one at a time
    session = VideoTracker(model, max_memory_frames=args.max_memory_frames).start(source)
    for (frame, obj), p in sorted(prompts.items()):
        r = session.add_prompt(frame, obj, points=p["points"] or None, labels=p["labels"] or None, box=p["box"])
        print(f"object {obj} on frame {frame}: {int(r.mask.sum())} pixels, score {r.score:.3f}")
    h, w = session.frame_hw
    done = 0
    # written under a temporary name next to OUT and renamed only when complete: a failure or a
    # kill midway leaves an existing OUT as it was
    with atomic_output(out) as tmp:
        labels = open_output(tmp, (session.num_frames, h, w), out.suffix, weights_note(model))
        bar = tqdm(total=session.num_frames if args.direction == "both" else None, desc="tracking", unit="frame")
        try:
            for frame, obj_ids, masks in session.propagate(args.direction, progress=bar):
                labels[frame] = paint_labels(masks, obj_ids, shape=(h, w))
                done += 1
        finally:
            bar.close()
            if hasattr(labels, "flush"):
                labels.flush()
            del labels
    note = weights_note(model)
    print(f"wrote {out} ({done} frames tracked of {session.num_frames}; objects {session.obj_ids})"
          + (f"; {note}" if note else ""))
    return 0


def add_track_parser(subs: argparse._SubParsersAction, sub, configs: list[str]) -> None:
    p = sub(subs, "track", "Track objects through a stack or video; write a uint32 label stack (TIFF or zarr).",
            "edgetam track stack.tif --prompt 0:1:120,80 --box 5:2:30,40,90,100 --checkpoint edgetam-original "
            "-o labels.tif")
    p.add_argument("source", metavar="SOURCE", help="video file, TIFF stack, folder of images, or .npy (T,H,W[,C])")
    p.add_argument("--prompt", action="append", default=[], metavar="FRAME:OBJ:X,Y", help="positive click (repeatable)")
    p.add_argument("--negative", action="append", default=[], metavar="FRAME:OBJ:X,Y", help="negative click")
    p.add_argument("--box", action="append", default=[], metavar="FRAME:OBJ:X0,Y0,X1,Y1", help="box prompt")
    p.add_argument("--checkpoint", required=True, metavar="SRC",
                   help="a video-capable checkpoint: edgetam.pt, an EdgeTamVideoModel folder, a name or hub id")
    p.add_argument("--config", choices=configs, help="network preset, only for the original .pt layout")
    p.add_argument("--direction", choices=("forward", "backward", "both"), default="both")
    p.add_argument("--max-memory-frames", type=int, default=None, help="memory frames attended (1-7, default 7)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="labels.tif / labels.tiff / labels.zarr")
    add_runtime_args(p)
    p.set_defaults(func=cmd_track)
