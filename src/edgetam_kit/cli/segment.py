"""``edgetam segment``: one image, one prompted object, the best mask to a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import MASK_SUFFIXES, add_runtime_args, load_checkpoint, parse_numbers, read_image, sub, weights_note, write_mask


def cmd_segment(args: argparse.Namespace) -> int:
    """``edgetam segment``: one image, one prompted object, the best mask to a file."""
    from .. import ImagePredictor

    out = Path(args.output)
    if out.suffix.lower() not in MASK_SUFFIXES:
        raise ValueError(f"-o/--output must end with one of {', '.join(MASK_SUFFIXES)}, got {str(out)!r}")
    points = [parse_numbers(p, "--point", "X,Y") for p in args.point]
    negatives = [parse_numbers(p, "--negative", "X,Y") for p in args.negative]
    box = parse_numbers(args.box, "--box", "X0,Y0,X1,Y1") if args.box else None
    if not points and not negatives and box is None:
        raise ValueError("give a prompt: at least one --point X,Y or a --box X0,Y0,X1,Y1")
    image = read_image(args.image)
    model = load_checkpoint(args.checkpoint, args.device, args.config, args)
    pred = ImagePredictor(model)
    pred.set_image(image)
    coords = points + negatives
    r = pred.predict(points=coords or None, labels=[1] * len(points) + [0] * len(negatives) if coords else None,
                     box=box, multimask=args.multimask)
    note = weights_note(model)
    write_mask(r.masks[r.best], out, note)
    print("scores:       " + " ".join(f"{s:.3f}" for s in r.scores) + f"  (best: mask {r.best})")
    print(f"object score: {r.object_score:.2f} ({'object present' if r.object_score > 0 else 'no object'})")
    print(f"wrote {out} ({r.masks.shape[2]}x{r.masks.shape[1]}, {int(r.masks[r.best].sum())} pixels in the mask)"
          + (f"; {note}" if note else ""))
    return 0


def add_segment_parser(subs: argparse._SubParsersAction, configs: list[str]) -> None:
    p = sub(subs, "segment", "Segment one object in one image from point and/or box prompts.",
             "edgetam segment coins.png --point 213,193 --negative 240,193 --checkpoint ./edgetam-hf -o mask.png")
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, TIFF, ...)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y", help="positive click in pixels (repeatable)")
    p.add_argument("--negative", action="append", default=[], metavar="X,Y", help="negative click, pixels (repeatable)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box around the object, in pixels")
    p.add_argument("--checkpoint", required=True, metavar="SRC",
                   help="HF folder, edgetam.pt, registered name (see `edgetam info`) or hub id")
    p.add_argument("--config", choices=configs, help="network preset, only for the original .pt layout")
    p.add_argument("--multimask", action="store_true", help="predict 3 candidates, keep the best (default: one mask)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the best mask: .png (0/255), .tif/.tiff (uint8 labels 0/1) or .npy (bool)")
    add_runtime_args(p)
    p.set_defaults(func=cmd_segment)
