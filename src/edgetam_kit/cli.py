"""The ``edgetam`` command line: ``info``, ``segment``, ``demo``, ``track``, ``auto``, ``embed`` and ``plugins``.

Bad input (a malformed flag, a missing file, an unusable checkpoint) ends with one line
``edgetam: error: ...`` on stderr and exit code 2. Set ``EDGETAM_DEBUG=1`` to get the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from .modeling import EdgeTam

PROG = "edgetam"
RANDOM_TAG = "RANDOM_WEIGHTS"
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
DEMO_POINT = (213, 193)  # (x, y) on a coin of skimage.data.coins()
DEMO_BOX = (312, 152, 383, 222)  # x0, y0, x1, y1 around the large coin on the right
DEMO_CLICKS = 5
T = TypeVar("T")


# ----------------------------------------------------------------------------- parsing helpers
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


def write_mask(mask: np.ndarray, out: Path) -> None:
    """Write a (H, W) bool mask: .png 0/255, .tif/.tiff uint8 labels (0/1), .npy bool."""
    import skimage.io
    import tifffile

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, mask.astype(bool))
    elif out.suffix.lower() == ".png":
        skimage.io.imsave(out, mask.astype(np.uint8) * 255, check_contrast=False)
    else:
        tifffile.imwrite(out, mask.astype(np.uint8))


# ----------------------------------------------------------------------------- info / plugins
def versions() -> list[tuple[str, str]]:
    """(name, value) rows for the runtime: package versions, threads, devices."""
    import timm
    import torch

    from . import __version__

    cuda = f"yes ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "no"
    return [("edgetam-kit", __version__), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("torch", torch.__version__), ("timm", timm.__version__),
            ("torch threads", str(torch.get_num_threads())), ("cuda", cuda)]


def describe_source(source: str) -> str:
    """Where ``source`` resolves, without downloading anything."""
    from .checkpoint import resolve_source

    kind, path, spec = resolve_source(source)
    if kind == "missing":
        raise FileNotFoundError(f"--checkpoint: {source!r} is not an existing path, a registered checkpoint "
                                "name (see `edgetam info`) or a hub id (owner/name)")
    if kind == "path":
        assert path is not None
        what = "folder (HF layout: config.json + model.safetensors)" if path.is_dir() else "file"
        return f"local {what}: {path.resolve()}"
    assert spec is not None
    where = "registered name" if kind == "name" else "hub id"
    target = spec.source + (f" (file {spec.filename})" if spec.filename else "")
    if Path(spec.source).expanduser().exists():
        return f"{where} -> local {target}"
    return f"{where} -> hub {target}; {hub_cache_state(spec.source, spec.filename)}"


def hub_cache_state(repo_id: str, filename: str | None) -> str:
    """Whether a hub checkpoint is already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename or "config.json")
    except Exception:  # an odd repo id or cache layout: say we do not know
        return "cache state unknown"
    return f"in the local cache: {hit}" if isinstance(hit, str) else "not in the local cache (would be downloaded)"


def plugin_errors() -> list[str]:
    """Distinct plugin errors recorded so far, one line each (the manager records repeats)."""
    from .plugins import get_plugin_manager

    return list(dict.fromkeys(f"{e.plugin} ({e.stage}): {e.error}" for e in get_plugin_manager().errors))


def cmd_info(args: argparse.Namespace) -> int:
    """``edgetam info``: versions, devices, checkpoint names, plugins."""
    from .plugins import get_plugin_manager

    pm = get_plugin_manager()
    for name, value in versions():
        print(f"{name:<14} {value}")
    print("checkpoints:")
    for name, spec in pm.checkpoints().items():
        target = spec.source + (f" ({spec.filename})" if spec.filename else "")
        print(f"  {name:<18} {target}" + (f"  - {spec.description}" if spec.description else ""))
    print(f"plugins:       {', '.join(pm.plugin_names()) or 'none'}")
    print(f"plugin errors: {'; '.join(plugin_errors()) or 'none'}")
    if args.checkpoint:
        print(f"checkpoint:    {args.checkpoint} -> {describe_source(args.checkpoint)}")
    return 0


HOOKS = ("edgetam_kit_checkpoints", "edgetam_kit_frame_sources", "edgetam_kit_exporters", "edgetam_kit_backends")


def cmd_plugins(args: argparse.Namespace) -> int:
    """``edgetam plugins``: loaded plugins, what each hook of theirs contributes, errors."""
    from .plugins import DISABLE_ENV, get_plugin_manager

    pm = get_plugin_manager()
    contributions: dict[str, dict[str, list[str]]] = {name: {} for name in pm.plugin_names()}
    for hook in HOOKS:
        for plugin, item in pm.call(hook):
            label = str(getattr(item, "name", None) or type(item).__name__)
            contributions.setdefault(plugin, {}).setdefault(hook.removeprefix("edgetam_kit_"), []).append(label)
    if os.environ.get(DISABLE_ENV):
        print(f"({DISABLE_ENV} is set: entry-point plugins are not loaded)")
    for plugin, hooks in contributions.items():
        print(plugin)
        for hook, items in hooks.items():
            print(f"  {hook}: {', '.join(items)}")
        if not hooks:
            print("  (no contributions)")
    errors = plugin_errors()
    print("errors:" if errors else "errors: none")
    for line in errors:
        print(f"  {line}")
    return 0


def benchmarks_dir() -> Path:
    """The repository's benchmarks/ folder (``EDGETAM_BENCHMARKS_DIR`` overrides)."""
    env = os.environ.get("EDGETAM_BENCHMARKS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    """``edgetam bench``: run benchmarks/run_all.py in this process."""
    import importlib.util

    script = benchmarks_dir() / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"edgetam bench needs the benchmarks/ folder of a source checkout (looked for {script}); "
            "clone the repository and `pip install -e '.[test]'`, or set EDGETAM_BENCHMARKS_DIR")
    missing = [name for name in ("sam2", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise FileNotFoundError(
            f"edgetam bench times the peers too, and {', '.join(missing)} is not installed: "
            "`pip install 'edgetam-kit[test]'` (edgetam-dimos provides sam2)")
    argv = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    argv += (["--skip", *args.skip] if args.skip else []) + (["--compiled"] if args.compiled else [])
    argv += ["--markdown", args.markdown] if args.markdown else []
    argv += ["--preset", args.preset]
    spec = importlib.util.spec_from_file_location("edgetam_run_all", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.main(argv)
    return 0


# ----------------------------------------------------------------------------- segment
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
    from . import load_model
    from .runtime import optimize

    backend = getattr(runtime, "backend", "eager")
    precision = getattr(runtime, "precision", "fp32")
    threads = getattr(runtime, "threads", None)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be an int >= 1, got {threads}")
    try:
        model = load_model(source, device=choose_device(device), config=config, backend="none")
    except (FileNotFoundError, ValueError) as exc:
        text = str(exc)
        if not text.startswith("source: "):
            raise
        raise type(exc)("--checkpoint: " + text.removeprefix("source: ")) from exc
    try:
        return optimize(model, backend=backend, precision=precision, threads=threads)
    except ValueError as exc:
        raise ValueError("--" + str(exc)) from exc  # "--backend must be one of ..."


def cmd_segment(args: argparse.Namespace) -> int:
    """``edgetam segment``: one image, one prompted object, the best mask to a file."""
    from . import ImagePredictor

    out = Path(args.output)
    if out.suffix.lower() not in MASK_SUFFIXES:
        raise ValueError(f"-o/--output must end with one of {', '.join(MASK_SUFFIXES)}, got {str(out)!r}")
    points = [parse_numbers(p, "--point", "X,Y") for p in args.point]
    negatives = [parse_numbers(p, "--negative", "X,Y") for p in args.negative]
    box = parse_numbers(args.box, "--box", "X0,Y0,X1,Y1") if args.box else None
    if not points and not negatives and box is None:
        raise ValueError("give a prompt: at least one --point X,Y or a --box X0,Y0,X1,Y1")
    image = read_image(args.image)
    pred = ImagePredictor(load_checkpoint(args.checkpoint, args.device, args.config, args))
    pred.set_image(image)
    coords = points + negatives
    r = pred.predict(points=coords or None, labels=[1] * len(points) + [0] * len(negatives) if coords else None,
                     box=box, multimask=args.multimask)
    write_mask(r.masks[r.best], out)
    print("scores:       " + " ".join(f"{s:.3f}" for s in r.scores) + f"  (best: mask {r.best})")
    print(f"object score: {r.object_score:.2f} ({'object present' if r.object_score > 0 else 'no object'})")
    print(f"wrote {out} ({r.masks.shape[2]}x{r.masks.shape[1]}, {int(r.masks[r.best].sum())} pixels in the mask)")
    return 0


# ----------------------------------------------------------------------------- demo
def demo_model(checkpoint: str | None, config: str | None, device: str) -> tuple["EdgeTam", bool]:
    """(model, is_random): the checkpoint if it loads, else random weights with a one-line notice.
    Either way the model runs on the default (eager) runtime, as ``load_model`` gives it."""
    from . import build_random_model
    from .runtime import optimize

    if checkpoint:
        try:
            return load_checkpoint(checkpoint, device, config), False
        except FileNotFoundError as exc:
            why = f"could not load {checkpoint!r}: {str(exc).split(';')[0].removeprefix('--checkpoint: ')}"
    else:
        why = "no --checkpoint given"
    print(f"No real EdgeTAM weights are available here ({why}); running with RANDOM weights, "
          "so the masks are meaningless.")
    return optimize(build_random_model(config or "edgetam").to(choose_device(device))), True


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


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
    import skimage.io

    from . import ImagePredictor

    model, random = demo_model(args.checkpoint, args.config, args.device)
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
    skimage.io.imsave(files[0], overlay(image, masks, DEMO_POINT, DEMO_BOX, label), check_contrast=False)
    for mask, f in zip(masks, files[1:]):
        write_mask(mask, f)
    click_ms = [s * 1000 for _, s in clicks]
    print(f"model:        {model.config.name}{' (RANDOM WEIGHTS)' if random else ''} on {model.device}")
    print(f"image:        skimage.data.coins() {image.shape[1]}x{image.shape[0]}; point {DEMO_POINT}, box {DEMO_BOX}")
    print(f"encode:       {encode:.2f} s per image (the first call, with warm-up, took {first:.2f} s)")
    print(f"click:        {statistics.median(click_ms):.1f} ms median of {DEMO_CLICKS} point clicks "
          f"(min {min(click_ms):.1f}, max {max(click_ms):.1f}); box prompt {box_s * 1000:.1f} ms")
    print(f"scores:       point {r_point.scores.max():.3f}, box {r_box.scores.max():.3f}")
    print("wrote:        " + ", ".join(str(f) for f in files))
    return 0


# ----------------------------------------------------------------------------- parser
def _sub(subs: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with an example."""
    return subs.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The ``edgetam`` argument parser with its subcommands."""
    from .config import PRESETS

    parser = argparse.ArgumentParser(
        prog=PROG, description="EdgeTAM segmentation from the command line.",
        epilog="example:\n  edgetam demo\n  edgetam segment cells.tif --point 120,80 --checkpoint edgetam -o mask.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    configs = sorted(PRESETS)

    p = _sub(subs, "info", "Show versions, devices, checkpoint names and plugins.",
             "edgetam info --checkpoint edgetam")
    p.add_argument("--checkpoint", metavar="SRC", help="also say where SRC resolves (nothing is downloaded)")
    p.set_defaults(func=cmd_info)

    p = _sub(subs, "segment", "Segment one object in one image from point and/or box prompts.",
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

    p = _sub(subs, "demo", "Segment a bundled example (scikit-image coins), write an overlay, print timings.",
             "edgetam demo --checkpoint edgetam -o ./edgetam-demo")
    p.add_argument("--checkpoint", metavar="SRC", help="weights; without them (or offline) RANDOM weights are used")
    p.add_argument("-o", "--output", default="edgetam-demo", metavar="OUT_DIR", help="folder (default: ./edgetam-demo)")
    p.add_argument("--config", choices=configs, help="network preset for .pt or random weights (default: edgetam)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=cmd_demo)

    from .cli_track import add_track_parser

    add_track_parser(subs, _sub, configs)

    from .cli_auto import add_auto_parsers

    add_auto_parsers(subs, _sub, configs)

    p = _sub(subs, "bench", "Time edgetam-kit beside the original EdgeTAM code and transformers (benchmarks/run_all.py).",
             "edgetam bench --quick --markdown docs/benchmarks.md")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and frames, 16x16 automask grid")
    p.add_argument("--skip", nargs="*", default=[], choices=["image", "tracking", "bf16", "automask"],
                   help="sections to leave out")
    p.add_argument("--compiled", action="store_true", help="also time backend='compiled' (torch.compile)")
    p.add_argument("--markdown", metavar="FILE", help="rewrite the table between the run_all markers in FILE")
    p.add_argument("--preset", choices=configs, default="edgetam", help="network shape (tiny: a smoke test only)")
    p.set_defaults(func=cmd_bench)

    p = _sub(subs, "plugins", "List loaded plugins, what they contribute, and plugin errors.", "edgetam plugins")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``edgetam`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `edgetam info | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError) as exc:  # CheckpointError is a ValueError
        if os.environ.get("EDGETAM_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
