"""``edgetam export``: write a checkpoint as ONNX graphs + manifest.json (``ek.export_onnx``)."""

from __future__ import annotations

import argparse
import json

from .common import load_checkpoint, sub

FORMATS = ("onnx",)


def add_export_parser(subs: argparse._SubParsersAction, configs: list[str]) -> None:
    p = sub(subs, "export", "export a checkpoint for another runtime (ONNX: onnxruntime and friends)",
            "edgetam export --checkpoint edgetam --format onnx -o edgetam-onnx/")
    p.add_argument("--checkpoint", required=True, metavar="SRC", help="HF folder, edgetam.pt, name or hub id")
    p.add_argument("--config", choices=configs, help="preset for an original .pt checkpoint (default edgetam)")
    p.add_argument("--format", required=True, metavar="FORMAT", help=f"output format: {', '.join(FORMATS)}")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (created if missing)")
    p.add_argument("--image-only", action="store_true", help="only the image encoder and the decoder")
    p.add_argument("--quantize", choices=["int8"], help="also write int8 dynamic-quantized encoder/decoder")
    p.add_argument("--fp16", action="store_true", help="also write fp16 copies of every graph")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (17-23, default 18)")
    p.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"],
                   help="torch.onnx exporter (dynamo falls back to torchscript per graph when it fails)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export; prints one line per graph and the manifest's summary."""
    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got {args.format!r}")
    from ..io.onnx_export import export_onnx

    model = load_checkpoint(args.checkpoint, "cpu", args.config)
    try:
        out = export_onnx(model, args.output, video=False if args.image_only else None, opset=args.opset,
                          exporter=args.exporter, quantize=args.quantize, fp16=args.fp16, progress=print)
    except ValueError as exc:
        text = str(exc)
        for name, flag in (("folder: ", "-o/--output: "), ("opset ", "--opset "), ("video: ", "--image-only: ")):
            text = flag + text.removeprefix(name) if text.startswith(name) else text
        raise ValueError(text) from exc
    manifest = json.loads((out / "manifest.json").read_text())
    for part, e in {**manifest["files"], **{f"{p} ({v})": e for v, d in manifest["variants"].items()
                                           for p, e in d.items()}}.items():
        print(f"  {part}: {e['path']} ({e['bytes'] / 1e6:.1f} MB)")
    kind = "image + video" if manifest["video"] else "image only (no video graphs)"
    print(f"wrote {out} ({kind}, opset {manifest['opset']}, exporter {manifest['exporter']}, "
          f"{manifest['export_seconds']} s)")
    return 0
