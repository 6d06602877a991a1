"""``edgetam demo``: segment a bundled example, write an overlay PNG and print timings."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .common import RANDOM_TAG, load_checkpoint, save_png, sub, timed, weights_note, write_mask

if TYPE_CHECKING:
    from ..modeling import EdgeTam

DEMO_POINT = (213, 193)  # (x, y) on a coin of skimage.data.coins()
DEMO_BOX = (312, 152, 383, 222)  # x0, y0, x1, y1 around the large coin on the right
DEMO_CLICKS = 5


def demo_model(checkpoint: str | None, config: str | None, device: str) -> tuple["EdgeTam", bool]:
    """(model, is_random): the checkpoint (a failure to load it is an error, never a silent switch to
    random weights), or, without ``--checkpoint``, random weights with a one-line notice. Either way
    the model runs on the default (eager) runtime, as ``load_model`` gives it."""
    from ..io.checkpoint import random_weights_of

    if checkpoint:
        model = load_checkpoint(checkpoint, device, config)
        return model, random_weights_of(model) is not None
    source = f"random:{config or 'edgetam'}"
    print(f"No real EdgeTAM weights are available here (no --checkpoint given); running with RANDOM weights "
          f"({source}), so the masks are meaningless. Pass --checkpoint edgetam, a folder or an edgetam.pt for real ones.")
    return load_checkpoint(source, device, None), True


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], point: Sequence[int], box: Sequence[int],
            label: str | None) -> np.ndarray:
    """RGB uint8 image with masks tinted (red, blue), the point and box drawn, and ``label`` written on top."""
    from PIL import Image, ImageDraw, ImageFont

    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    out = rgb.astype(np.float32)
    for mask, tint in zip(masks, ((255, 40, 40), (40, 120, 255))):
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(tint, np.float32)
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    x, y = point
    draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=(0, 255, 0), outline=(0, 0, 0), width=2)
    draw.rectangle(tuple(box), outline=(255, 255, 0), width=2)
    if label:
        try:
            font = ImageFont.load_default(size=14)
        except TypeError:  # Pillow < 10.1: bitmap font, no size
            font = ImageFont.load_default()
        draw.rectangle((0, 0, *(v + 4 for v in draw.textbbox((4, 4), label, font=font)[2:])), fill=(0, 0, 0))
        draw.text((4, 4), label, fill=(255, 255, 0), font=font)
    return np.asarray(pil)


def cmd_demo(args: argparse.Namespace) -> int:
    """``edgetam demo``: segment skimage's coins from a point and a box; overlay and timings."""
    import skimage.data

    from .. import ImagePredictor

    model, random = demo_model(args.checkpoint, args.config, args.device)
    note = weights_note(model) if random else None
    image = skimage.data.coins()
    pred = ImagePredictor(model)
    _, first = timed(lambda: pred.set_image(image))
    _, encode = timed(lambda: pred.set_image(image))
    clicks = [timed(lambda: pred.predict(points=[DEMO_POINT], multimask=True)) for _ in range(DEMO_CLICKS)]
    r_point = clicks[-1][0]
    r_box, box_s = timed(lambda: pred.predict(box=DEMO_BOX, multimask=False))
    tag = f"_{RANDOM_TAG}" if random else ""
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = [r.masks[r.best] for r in (r_point, r_box)]
    label = "RANDOM WEIGHTS - masks are meaningless" if random else None
    files = [out_dir / f"overlay{tag}.png", out_dir / f"mask_point{tag}.png", out_dir / f"mask_box{tag}.png"]
    save_png(overlay(image, masks, DEMO_POINT, DEMO_BOX, label), files[0], note)
    for mask, f in zip(masks, files[1:]):
        write_mask(mask, f, note)
    click_ms = [s * 1000 for _, s in clicks]
    print(f"model:        {model.config.name}{' (RANDOM WEIGHTS)' if random else ''} on {model.device}")
    print(f"image:        skimage.data.coins() {image.shape[1]}x{image.shape[0]}; point {DEMO_POINT}, box {DEMO_BOX}")
    print(f"encode:       {encode:.2f} s per image (the first call, with warm-up, took {first:.2f} s)")
    print(f"click:        {statistics.median(click_ms):.1f} ms median of {DEMO_CLICKS} point clicks "
          f"(min {min(click_ms):.1f}, max {max(click_ms):.1f}); box prompt {box_s * 1000:.1f} ms")
    print(f"scores:       point {r_point.scores.max():.3f}, box {r_box.scores.max():.3f}")
    print("wrote:        " + ", ".join(str(f) for f in files))
    return 0


def add_demo_parser(subs: argparse._SubParsersAction, configs: list[str]) -> None:
    p = sub(subs, "demo", "Segment a bundled example (scikit-image coins), write an overlay, print timings.",
             "edgetam demo --checkpoint edgetam -o ./edgetam-demo")
    p.add_argument("--checkpoint", metavar="SRC", help="weights (HF folder, edgetam.pt, name, hub id, or random:edgetam / random:tiny); without it "
                        "RANDOM weights (random:edgetam) are used")
    p.add_argument("-o", "--output", default="edgetam-demo", metavar="OUT_DIR", help="folder (default: ./edgetam-demo)")
    p.add_argument("--config", choices=configs, help="network preset for .pt or random weights (default: edgetam)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=cmd_demo)
