"""``edgetam finetune``: adapt a checkpoint to your own annotations (``ek.finetune``)."""

from __future__ import annotations

import argparse
import sys

from .common import PROG, load_checkpoint, sub

# ek.finetune's messages name its arguments; the CLI names its flags
_FLAGS = (("data: ", "DATA: "), ("out: ", "-o/--output: "), ("mask_field", "--mask-field"), ("resume: ", "--no-resume: "),
          ("steps ", "--steps "), ("epochs ", "--epochs "), ("batch_size ", "--batch-size "), ("lr ", "--lr "),
          ("val_fraction ", "--val-fraction "), ("patience ", "--patience "), ("seed ", "--seed "),
          ("give steps or epochs", "give --steps or --epochs"))


def add_finetune_parser(subs: argparse._SubParsersAction, configs: list[str]) -> None:
    p = sub(subs, "finetune", "fine-tune a checkpoint on your annotations (images + instance labels)",
            "edgetam finetune annotated/ --checkpoint edgetam -o tuned/ --train decoder --steps 500")
    p.add_argument("data", metavar="DATA", help="a folder with images/ and labels/ (same file names; label images of "
                   "instance ids), or a COCO .json (RLE or polygons)")
    p.add_argument("--checkpoint", required=True, metavar="SRC", help="the base: HF folder, edgetam.pt, name or hub id")
    p.add_argument("--config", choices=configs, help="preset for an original .pt checkpoint (default edgetam)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the fine-tuned checkpoint "
                   "(new or empty; or a run's folder, which is resumed)")
    p.add_argument("--train", default="decoder", choices=["decoder", "lora", "all"],
                   help="what to train: the mask decoder on cached embeddings (fast on a CPU), LoRA adapters, or all")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (default: 10 epochs)")
    length.add_argument("--epochs", type=int, help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=8, help="objects per step (default 8)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3 decoder/lora, 3e-4 all)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="images held out for validation (default 0.2)")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-adapter", action="store_true", help="with --train lora: write the adapter, not merged weights")
    p.add_argument("--no-resume", action="store_true", help="start over in a folder that holds an earlier run")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    """Train; prints the validation IoU as it goes and where the checkpoint is."""
    from ..training import finetune

    model = load_checkpoint(args.checkpoint, args.device, args.config)
    try:
        result = finetune(model, args.data, args.output, train=args.train, steps=args.steps, epochs=args.epochs,
                          resume=not args.no_resume, progress=not args.quiet, base_name=args.checkpoint,
                          log=lambda line: print(line, flush=True), batch_size=args.batch_size, lr=args.lr,
                          val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
                          merge_lora=not args.keep_adapter)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for name, flag in _FLAGS:
            if text.startswith(name):
                text = flag + text.removeprefix(name)
                break
        raise type(exc)(text) from exc
    before = "n/a" if result.initial_iou is None else f"{result.initial_iou:.3f}"
    after = "n/a" if result.best_iou is None else f"{result.best_iou:.3f}"
    how = " (stopped early: no better validation IoU)" if result.stopped_early else ""
    print(f"wrote {result.path}: validation IoU {before} -> {after} (step {result.best_step} of "
          f"{result.steps_done}{how}, {result.seconds:.0f} s); use it with --checkpoint {result.path}")
    if result.best_iou is None:
        print(f"{PROG}: note: no validation images, so the last weights were kept", file=sys.stderr)
    return 0
