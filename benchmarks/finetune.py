"""Fine-tuning speed: steps/s at the real shape, and time to a validation IoU on the tiny preset.

    python benchmarks/finetune.py                       # CPU, 2 threads (~10 min on 2 cores)
    python benchmarks/finetune.py --quick               # fewer steps, lower IoU target
    python benchmarks/finetune.py --device cuda         # on a GPU (bf16 autocast, "auto" precision)

Part 1 (real shape, 1024x1024 input, random weights): seconds per optimizer step (batch of 8
objects, 1 correction click) for train="decoder" (on cached embeddings; the one-off encode per
image is reported apart), "lora" and "all"; medians over the timed steps after one warm-up.
Part 2 (tiny preset, 256x256 input, from random weights, synthetic cells): wall time and steps
until the validation IoU (one point per object) first reaches the target, per mode.
Neither peer has a training loop (the original EdgeTAM ships none; transformers offers only its
generic Trainer), so there is no ratio column: these are our own figures to track over time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import machine_facts, set_threads  # noqa: E402

MODES = ("decoder", "lora", "all")


def step_seconds(mode: str, steps: int, device: str, size: int) -> tuple[float, float]:
    """(median seconds per step, seconds spent before the first step) at the real shape."""
    import edgetam_kit as ek
    from edgetam_kit.testing.cells import synthetic_cells

    cells = synthetic_cells(8, size=size, seed=0)
    stamps: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ek.finetune("random:edgetam", cells, os.path.join(tmp, "out"), train=mode, steps=steps + 1, val_fraction=0.0,
                    device=device, progress=lambda done, total: stamps.append(time.perf_counter()))
    setup = stamps[0] - t0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps), setup


def time_to_iou(mode: str, target: float, max_steps: int, device: str) -> tuple[float | None, int | None, float]:
    """(seconds, steps) until validation IoU >= target (None if never), and the best IoU."""
    import edgetam_kit as ek
    from edgetam_kit.testing.cells import synthetic_cells

    cells = synthetic_cells(60, size=256, seed=1)
    reached: dict[str, float] = {}

    def log(line: str) -> None:
        if "validation IoU" in line and float(line.split("validation IoU ")[1].split()[0]) >= target:
            reached["yes"] = 1.0

    with tempfile.TemporaryDirectory() as tmp:
        try:
            ek.finetune(ek.build_random_model("tiny", video=False), cells, os.path.join(tmp, "out"), train=mode,
                        steps=max_steps, eval_every=25, patience=None, device=device, log=log,
                        cancel=lambda: bool(reached), prompts=("point",), corrections=0)
        except ek.Cancelled:
            pass
        from edgetam_kit.training.state import load_state

        history = load_state(__import__("pathlib").Path(tmp) / "out").history
    best = max(r.val_iou for r in history)
    hit = next((r for r in history if r.val_iou >= target), None)
    return (hit.seconds, hit.step, best) if hit else (None, None, best)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--target", type=float, default=None, help="validation IoU target (default 0.7, quick 0.4)")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args(argv)
    set_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    target = args.target or (0.4 if args.quick else 0.7)
    print(machine_facts(), f"device={args.device}")
    steps = 2 if args.quick else 4
    print(f"\n## real shape (1024x1024 input), batch 8 objects, s/step (median of {steps} after 1 warm-up)")
    print("| train | s/step | steps/s | before the first step (s) |\n| --- | ---: | ---: | ---: |")
    for mode in modes:
        sec, setup = step_seconds(mode, steps, args.device, 512)
        print(f"| {mode} | {sec:.2f} | {1 / sec:.2f} | {setup:.1f} |", flush=True)
    max_steps = 300 if args.quick else 800
    print(f"\n## tiny preset (256x256), from random weights: time to validation IoU >= {target}")
    print("| train | seconds | steps | best IoU |\n| --- | ---: | ---: | ---: |")
    for mode in modes:
        sec, step, best = time_to_iou(mode, target, max_steps, args.device)
        shown = "not reached" if sec is None else f"{sec:.0f}"
        print(f"| {mode} | {shown} | {step if step is not None else f'> {max_steps}'} | {best:.3f} |", flush=True)


if __name__ == "__main__":
    main()
