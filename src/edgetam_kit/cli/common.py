"""What every ``edgetam`` command shares: parsing flags, reading images, writing masks, loading the
checkpoint with errors that name the flag, and the subcommand parser with an example."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..modeling import EdgeTam

PROG = "edgetam"
RANDOM_TAG = "RANDOM_WEIGHTS"
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
T = TypeVar("T")


def parse_numbers(text: str, flag: str, form: str) -> list[float]:
    """Parse ``"a,b,..."`` (as many numbers as ``form`` names) strictly, naming ``flag`` on error."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        values = []
    if len(values) != len(form.split(",")) or not all(np.isfinite(values)):
        raise ValueError(f"{flag} expects {form} in pixels, got {text!r}")
    return values


def choose_device(device: str) -> str:
    """Refuse a CUDA device on a machine without CUDA, with a clear message."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    return device


def read_image(path: str) -> np.ndarray:
    """Read an image file (PNG, JPEG, TIFF, ...) as a numpy array."""
    import skimage.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"IMAGE: {path} does not exist or is not a file")
    try:
        return np.asarray(skimage.io.imread(path))
    except Exception as exc:  # every reader has its own error types
        raise ValueError(f"IMAGE: cannot read {path} ({type(exc).__name__}: {exc})") from None


def write_mask(mask: np.ndarray, out: Path, note: str | None = None) -> None:
    """Write a (H, W) bool mask: .png 0/255, .tif/.tiff uint8 labels (0/1), .npy bool. ``note`` (the
    random-weights label) goes into the PNG's text chunk / the TIFF's description (.npy has no metadata)."""
    import tifffile

    from ..io.export import WEIGHTS_KEY

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, mask.astype(bool))
    elif out.suffix.lower() == ".png":
        save_png(mask.astype(np.uint8) * 255, out, note)
    else:
        tifffile.imwrite(out, mask.astype(np.uint8), metadata={"axes": "YX", **({WEIGHTS_KEY: note} if note else {})})


def save_png(pixels: np.ndarray, out: Path, note: str | None = None) -> None:
    """Write uint8 gray or RGB ``pixels`` as a PNG; ``note`` goes into its text chunk (edgetam_weights)."""
    from PIL import Image, PngImagePlugin

    from ..io.export import WEIGHTS_KEY

    info = PngImagePlugin.PngInfo()
    if note:
        info.add_text(WEIGHTS_KEY, note)
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, pnginfo=info)


def weights_note(model: "EdgeTam") -> str | None:
    """The random-weights label of ``model`` (None for real weights)."""
    from ..io.checkpoint import random_weights_of
    from ..io.export import random_note

    label = random_weights_of(model)
    return random_note(label) if label else None


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """--backend / --precision / --threads (see ``ek.optimize``)."""
    p.add_argument("--backend", default="eager", metavar="NAME",
                   help="inference runtime: eager (default), compiled (torch.compile), a plugin's, or none")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="fp32 (default) or autocast bf16/fp16 (fast only with native hardware support)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")


def load_checkpoint(source: str, device: str, config: str | None, runtime: argparse.Namespace | None = None) -> "EdgeTam":
    """``ek.load_model`` with errors that name --checkpoint (as the user typed it); ``runtime``:
    parsed --backend/--precision/--threads, when the command has them."""
    from .. import load_model
    from ..runtime.backends import optimize

    backend = getattr(runtime, "backend", "eager")
    precision = getattr(runtime, "precision", "fp32")
    threads = getattr(runtime, "threads", None)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be an int >= 1, got {threads}")
    try:
        model = load_model(source, device=choose_device(device), config=config, backend="none")
    except (FileNotFoundError, ValueError) as exc:
        text = str(exc)
        if text.startswith("device "):
            raise type(exc)("--" + text) from exc  # "--device must be cpu, cuda[:N], ..."
        if not text.startswith("source: "):
            raise
        raise type(exc)("--checkpoint: " + text.removeprefix("source: ")) from exc
    note = weights_note(model)
    if note:  # every command that loads weights says so before it writes anything
        print(f"weights: {note}", file=sys.stderr, flush=True)
    try:
        return optimize(model, backend=backend, precision=precision, threads=threads)
    except ValueError as exc:
        raise ValueError("--" + str(exc)) from exc  # "--backend must be one of ..."


def sub(subs: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with an example."""
    return subs.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0
