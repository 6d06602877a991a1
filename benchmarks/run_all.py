"""Every speed figure of the project in one table: edgetam-kit vs the original EdgeTAM code vs
transformers, identical random weights, real shape, one process.

    python benchmarks/run_all.py                  # full run (~10-15 min on 2 CPU cores)
    python benchmarks/run_all.py --quick          # fewer repeats/frames, 16x16 automask grid
    python benchmarks/run_all.py --markdown docs/benchmarks.md   # also rewrite the table there
    edgetam bench [same options]                  # the same, from the command line

Rows (targets from issue 5 in brackets):
- image encode 1024x1024, fp32 [>= 2x faster than the original];
- click to mask: one point, embedding cached, the 3 masks at the input resolution [<= 25 ms];
- tracking one object, 640x480 frames, s/frame, fp32 [>= 1.5x faster than the original];
- the same with the opt-in bf16 autocast [>= 2.5x faster than the original; IoU >= 0.98 vs fp32];
- tracking three objects [well under 3x one object];
- automatic masks, points_per_side 32 (encode included) [>= 3x faster than the original];
- optionally (--compiled) the encode with backend="compiled" (torch.compile);
- optionally (--onnx) export time, then encode, click and tracked frame on onnxruntime fp32 and int8
  beside eager, with their masks' IoU (benchmarks/onnx_runtime.py).
Tracking is reported over the whole clip and once the memory bank is full (frames after the 8th;
needs more than 8 frames, so not with --quick). A dataset-scale row times ``set_images`` of a batch
(32 images on a GPU, 4 on the CPU) beside transformers' processor + model, per image.
--device cuda runs every engine on the GPU (all three models moved there; timings synchronise the
device); scripts/gpu_check.sh runs it with the ``gpu`` tests.
Ratios are peer time / our time (> 1: we are faster). Medians; the machine facts are printed
with the table. Time a quiet machine: other load distorts every figure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from common import machine_facts, median_seconds, set_threads  # noqa: E402

OURS, ORIG, HF = "edgetam-kit", "original", "transformers"
DEVICE = "cpu"  # set by main(--device)
FULL_BANK_FROM = 8  # frames before this one fill the memory bank


def sync() -> None:
    """Wait for the device (timings of CUDA work are wall time of finished work)."""
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn):
    """fn, then wait for the device."""
    def run():
        out = fn()
        sync()
        return out
    return run
AUTOMASK_SETTINGS = dict(points_per_batch=64, pred_iou_thresh=0.5, stability_score_thresh=0.213,
                         stability_score_offset=0.005, mask_threshold=0.1)


class Row:
    def __init__(self, metric: str, unit: str, values: dict[str, float], target: str = "", note: str = "") -> None:
        self.metric, self.unit, self.values, self.target, self.note = metric, unit, values, target, note

    def cell(self, engine: str) -> str:
        v = self.values.get(engine)
        if v is None:
            return "-"
        return f"{v * 1000:.1f} ms" if self.unit == "ms" else f"{v:.2f} {self.unit}"

    def ratio(self, engine: str) -> str:
        if engine not in self.values or OURS not in self.values:
            return "-"
        return f"{self.values[engine] / self.values[OURS]:.2f}x"


def bench_image(refs, repeats: int, clicks: int) -> list[Row]:
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from skimage import data, transform
    from transformers import Sam2ImageProcessor, Sam2Processor

    import edgetam_kit as ek

    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    point = [[460.0, 360.0]]
    ours = ek.ImagePredictor(ek.load_model(refs.hf_folder, device=DEVICE))
    original = SAM2ImagePredictor(refs.original)  # moved to DEVICE by main
    hf = refs.hf
    side = refs.config.image_size  # the predictor hard-codes 1024-input feature sizes (matters for --preset tiny)
    original._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]
    side = refs.config.image_size
    proc = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                             mask_size={"height": side // 4, "width": side // 4}),
                         target_size=side)
    def hf_embed(images):
        return hf.get_image_embeddings(proc(images=images, return_tensors="pt")["pixel_values"].to(DEVICE))

    n_batch = 32 if DEVICE.startswith("cuda") else 4
    batch = [np.roll(img, 37 * i, axis=1) for i in range(n_batch)]
    with torch.inference_mode():
        enc = {
            OURS: median_seconds(timed(lambda: ours.set_image(img)), repeats),
            ORIG: median_seconds(timed(lambda: original.set_image(img)), repeats),
            HF: median_seconds(timed(lambda: hf_embed(img)), repeats),
        }
        many = {  # per image
            OURS: median_seconds(timed(lambda: ours.set_images(batch, batch_size=n_batch)), repeats) / n_batch,
            HF: median_seconds(timed(lambda: hf_embed(batch)), repeats) / n_batch,
        }
        emb = hf_embed(img)

        def hf_click() -> None:
            inp = proc(input_points=[[point]], input_labels=[[[1]]], original_sizes=[[1024, 1024]], return_tensors="pt")
            out = hf(image_embeddings=emb, input_points=inp["input_points"].to(DEVICE),
                     input_labels=inp["input_labels"].to(DEVICE))
            proc.post_process_masks(out.pred_masks.cpu(), inp["original_sizes"])

        ours.set_image(img)  # set_images replaced it
        click = {
            OURS: median_seconds(timed(lambda: ours.predict(points=point, labels=[1])), clicks, warmup=3),
            ORIG: median_seconds(timed(lambda: original.predict(point_coords=np.array(point), point_labels=np.array([1]))),
                                 clicks, warmup=3),
            HF: median_seconds(timed(hf_click), clicks, warmup=3),
        }
    return [Row("image encode 1024x1024 (fp32)", "s", enc, ">= 2x vs original"),
            Row(f"encode a batch of {n_batch}, s per image (fp32, uint8 in)", "s", many, ">= 5x vs transformers (GPU)",
                "images/s: " + ", ".join(f"{k} {1 / v:.1f}" for k, v in many.items())
                + "; transformers with its processor"),
            Row("click to mask (3 masks @ 1024x1024)", "ms", click, "<= 25 ms")]


def bench_compiled(refs, repeats: int) -> list[Row]:
    from skimage import data, transform

    import edgetam_kit as ek

    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(ek.load_model(refs.hf_folder, backend="compiled", device=DEVICE))
    t0 = time.perf_counter()
    pred.set_image(img)
    first = time.perf_counter() - t0
    enc = median_seconds(timed(lambda: pred.set_image(img)), repeats, warmup=1)
    return [Row("image encode, backend=compiled", "s", {OURS: enc}, "opt-in",
                f"first call (compiles) {first:.0f} s")]


def _clip_and_full(times: list[float]) -> tuple[float, float | None]:
    """Per-frame seconds -> (mean over the clip, mean once the bank is full or None)."""
    full = times[FULL_BANK_FROM:]
    return sum(times) / len(times), (sum(full) / len(full) if full else None)


def bench_tracking(vrefs, n_frames: int, bf16: bool) -> list[Row]:
    import torch
    from video_runners import run_hf, run_original

    import edgetam_kit as ek
    from edgetam_kit.testing.synthetic import SyntheticSource

    src = SyntheticSource(n_frames, 480, 640, seed=0)
    frames = np.stack([src.frame(i) for i in range(n_frames)])
    cx, cy = src.center(0)
    objs = [[cx, cy], [640 * 0.15, 480 * 0.2], [640 * 0.85, 480 * 0.8]]
    model = ek.load_model(vrefs.pt_path, config=vrefs.config, device=DEVICE)

    def per_frame(items) -> tuple[list[float], list]:
        """Seconds per yielded frame (device synchronised) and the items."""
        times, out, t0 = [], [], time.perf_counter()
        for item in items:
            sync()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            out.append(item)
            t0 = time.perf_counter()
        return times, out

    def ours(n_obj: int, precision: str = "fp32") -> tuple[list[float], list[np.ndarray]]:
        ek.optimize(model, precision=precision)
        session = ek.VideoTracker(model).start(frames)
        for k in range(n_obj):
            session.add_prompt(0, k + 1, points=[objs[k]])
        times, out = per_frame(session.propagate())
        return times, [m[0] for _, _, m in out]

    def timed_method(obj, name: str, run) -> list[float]:
        t, orig = {}, getattr(obj, name)

        def wrapper(*a, **kw):
            t["s"], _ = per_frame(orig(*a, **kw))
            yield from _

        setattr(obj, name, wrapper)
        try:
            run()
        finally:
            setattr(obj, name, orig)
        return t["s"]

    def hf(n_obj: int) -> list[float]:
        prompts = [{"frame": 0, "obj": k + 1, "points": [objs[k]], "labels": [1]} for k in range(n_obj)]
        return timed_method(vrefs.hf, "propagate_in_video_iterator", lambda: run_hf(vrefs.hf, frames, prompts))

    def original() -> list[float]:
        prompts = [{"frame": 0, "points": [objs[0]], "labels": [1]}]
        return timed_method(vrefs.original, "propagate_in_video",
                            lambda: run_original(vrefs.original, frames, prompts))

    with torch.inference_mode():
        one_t, one_masks = ours(1)
        one_times = {OURS: one_t, ORIG: original(), HF: hf(1)}
        three_times = {OURS: ours(3)[0], HF: hf(3)}
    one = {k: _clip_and_full(v)[0] for k, v in one_times.items()}
    three = {k: _clip_and_full(v)[0] for k, v in three_times.items()}
    rows = [Row(f"track 1 object, s/frame over the clip ({n_frames} frames, fp32)", "s", one, ">= 1.5x vs original")]
    if n_frames > FULL_BANK_FROM:
        full = {k: _clip_and_full(v)[1] for k, v in one_times.items()}
        rows.append(Row(f"track 1 object, s/frame once the bank is full (frames {FULL_BANK_FROM}-{n_frames - 1})",
                        "s", full, "", "fps: " + ", ".join(f"{k} {1 / v:.1f}" for k, v in full.items())))
    if bf16:
        with torch.inference_mode():
            b_t, b_masks = ours(1, "bf16")
        b_s = _clip_and_full(b_t)[0]
        ek.optimize(model)
        ious = [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(one_masks, b_masks)]
        rows.append(Row("track 1 object, s/frame (bf16 opt-in)", "s", {OURS: b_s, ORIG: one[ORIG]},
                        ">= 2.5x vs original, IoU >= 0.98",
                        f"mask IoU vs fp32: min {min(ious):.3f}, median {statistics.median(ious):.3f}"))
    rows.append(Row("track 3 objects, s/frame over the clip (fp32)", "s", three, "well under 3x one object",
                    f"ours: {three[OURS] / one[OURS]:.2f}x one object; transformers: {three[HF] / one[HF]:.2f}x"))
    if n_frames > FULL_BANK_FROM:
        full3 = {k: _clip_and_full(v)[1] for k, v in three_times.items()}
        rows.append(Row("track 3 objects, s/frame once the bank is full", "s", full3, "",
                        f"ours: {full3[OURS] / full[OURS]:.2f}x one object; transformers: {full3[HF] / full[HF]:.2f}x"))
    return rows


def bench_automask(refs, points_per_side: int) -> list[Row]:
    import torch
    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from skimage import data, transform
    from transformers import Sam2ImageProcessor, pipeline

    import edgetam_kit as ek

    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    settings = dict(AUTOMASK_SETTINGS, points_per_side=points_per_side)
    side = refs.config.image_size
    ours = ek.AutoMaskGenerator(ek.load_model(refs.hf_folder, device=DEVICE), **settings)
    original = SAM2AutomaticMaskGenerator(refs.original, **settings)
    hf = pipeline("mask-generation", model=refs.hf, device=DEVICE,
                  image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                     mask_size={"height": side // 4, "width": side // 4}))
    pil = Image.fromarray(img)

    def run_hf():
        return hf(pil, points_per_batch=64, points_per_crop=points_per_side, pred_iou_thresh=settings["pred_iou_thresh"],
                  stability_score_thresh=settings["stability_score_thresh"],
                  stability_score_offset=settings["stability_score_offset"], mask_threshold=settings["mask_threshold"])

    counts: dict[str, int] = {}
    times: dict[str, float] = {}
    with torch.inference_mode():
        for name, fn, count in ((OURS, lambda: ours.generate(img), len), (ORIG, lambda: original.generate(img), len),
                                (HF, run_hf, lambda r: len(r["masks"]))):
            t0 = time.perf_counter()
            counts[name] = count(timed(fn)())
            times[name] = time.perf_counter() - t0
        # ours makes masks only for points with a predicted IoU above pred_iou_thresh: say how many
        from edgetam_kit.engine.masks import point_grid

        grid = torch.as_tensor(point_grid(points_per_side) * side, dtype=torch.float32, device=DEVICE)[:, None, :]
        from edgetam_kit.runtime import runtime_of

        rt, feats = runtime_of(ours.model), ours.predictor.features
        context = rt.image_context(feats)
        upscaled = 0
        for s in range(0, len(grid), 8):  # a few prompts at a time: each carries ~40 MB of maps
            out = rt.decode(feats, grid[s:s + 8], torch.ones(len(grid[s:s + 8]), 1, dtype=torch.long, device=DEVICE), None,
                               True, context=context, min_iou=settings["pred_iou_thresh"])
            upscaled += len(out.rows)
    return [Row(f"automatic masks, {points_per_side}x{points_per_side} points (s)", "s", times, ">= 3x vs original",
                "masks kept: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                + f"; ours upscaled masks for {upscaled} of {len(grid)} points (the rest fail pred_iou_thresh)")]


def render(rows: list[Row], facts: str, when: str) -> str:
    lines = [f"Measured {when} on: {facts}", "",
             f"| metric | {OURS} | {ORIG} | {HF} | {ORIG} / ours | {HF} / ours | target | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.metric} | {r.cell(OURS)} | {r.cell(ORIG)} | {r.cell(HF)} | {r.ratio(ORIG)} | "
                     f"{r.ratio(HF)} | {r.target} | {r.note} |")
    return "\n".join(lines)


BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"


def write_markdown(path: str, table: str) -> None:
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 encodes, 10 clicks, 4 frames, 16x16 automask grid")
    ap.add_argument("--skip", nargs="*", default=[], choices=["image", "tracking", "bf16", "automask"],
                    help="sections to leave out")
    ap.add_argument("--compiled", action="store_true", help="also time backend='compiled' (slow first call)")
    ap.add_argument("--markdown", help="rewrite the table between the run_all markers in this file")
    ap.add_argument("--onnx", action="store_true", help="also export and time onnxruntime (benchmarks/onnx_runtime.py)")
    ap.add_argument("--preset", default="edgetam", help="network shape: edgetam (the real one) or tiny (smoke test)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where all three engines run")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    import torch

    global DEVICE
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device on this machine")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    DEVICE = args.device

    from edgetam_kit.testing.oracles import make_reference_checkpoints, make_video_references

    repeats, clicks, n_frames, pps = (3, 10, 4, 16) if args.quick else (5, 20, 16, 32)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "image" not in args.skip or "automask" not in args.skip or args.compiled:
            refs = make_reference_checkpoints(os.path.join(tmp, "img"), args.preset, seed=0)
            refs.original.to(DEVICE)
            refs.hf.to(DEVICE)
            if "image" not in args.skip:
                rows += bench_image(refs, repeats, clicks)
                print(render(rows, "", ""), flush=True)
            if args.compiled:
                rows += bench_compiled(refs, repeats)
        if "tracking" not in args.skip:
            vrefs = make_video_references(os.path.join(tmp, "vid"), args.preset)
            vrefs.original.to(DEVICE)
            vrefs.hf.to(DEVICE)
            rows += bench_tracking(vrefs, n_frames, bf16="bf16" not in args.skip)
            print(render(rows, "", ""), flush=True)
        if "automask" not in args.skip:
            rows += bench_automask(refs, pps)
    facts = machine_facts()
    if DEVICE.startswith("cuda"):
        facts += f"; device {torch.cuda.get_device_name(torch.device(DEVICE))} (all engines on it)"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.preset != "edgetam":
        facts += f"; preset {args.preset} (NOT the real shape)"
    table = render(rows, facts, when)
    print("\n" + table)
    if args.markdown:
        write_markdown(args.markdown, table)
        print(f"\ntable written to {args.markdown}")
    if args.onnx:
        import onnx_runtime

        lines, facts = onnx_runtime.bench(args.preset, repeats, n_frames, fp16=False)
        print("\nonnxruntime (CPU) beside eager:\n" + "\n".join(lines) + f"\nexport {facts['export_s']:.0f} s")


if __name__ == "__main__":
    main()
