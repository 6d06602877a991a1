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
    ours = ek.ImagePredictor(ek.load_model(refs.hf_folder))
    original = SAM2ImagePredictor(refs.original)
    hf = refs.hf
    side = refs.config.image_size
    proc = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                                             mask_size={"height": side // 4, "width": side // 4}),
                         target_size=side)
    with torch.inference_mode():
        enc = {
            OURS: median_seconds(lambda: ours.set_image(img), repeats),
            ORIG: median_seconds(lambda: original.set_image(img), repeats),
            HF: median_seconds(lambda: hf.get_image_embeddings(proc(images=img, return_tensors="pt")["pixel_values"]),
                               repeats),
        }
        emb = hf.get_image_embeddings(proc(images=img, return_tensors="pt")["pixel_values"])

        def hf_click() -> None:
            inp = proc(input_points=[[point]], input_labels=[[[1]]], original_sizes=[[1024, 1024]], return_tensors="pt")
            out = hf(image_embeddings=emb, input_points=inp["input_points"], input_labels=inp["input_labels"])
            proc.post_process_masks(out.pred_masks, inp["original_sizes"])

        click = {
            OURS: median_seconds(lambda: ours.predict(points=point, labels=[1]), clicks, warmup=3),
            ORIG: median_seconds(lambda: original.predict(point_coords=np.array(point), point_labels=np.array([1])),
                                 clicks, warmup=3),
            HF: median_seconds(hf_click, clicks, warmup=3),
        }
    return [Row("image encode 1024x1024 (fp32)", "s", enc, ">= 2x vs original"),
            Row("click to mask (3 masks @ 1024x1024)", "ms", click, "<= 25 ms")]


def bench_compiled(refs, repeats: int) -> list[Row]:
    from skimage import data, transform

    import edgetam_kit as ek

    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(ek.load_model(refs.hf_folder, backend="compiled"))
    t0 = time.perf_counter()
    pred.set_image(img)
    first = time.perf_counter() - t0
    enc = median_seconds(lambda: pred.set_image(img), repeats, warmup=1)
    return [Row("image encode, backend=compiled", "s", {OURS: enc}, "opt-in",
                f"first call (compiles) {first:.0f} s")]


def bench_tracking(vrefs, n_frames: int, bf16: bool) -> list[Row]:
    import torch
    from video_runners import run_hf, run_original

    import edgetam_kit as ek
    from edgetam_kit.testing.synthetic import SyntheticSource

    src = SyntheticSource(n_frames, 480, 640, seed=0)
    frames = np.stack([src.frame(i) for i in range(n_frames)])
    cx, cy = src.center(0)
    objs = [[cx, cy], [640 * 0.15, 480 * 0.2], [640 * 0.85, 480 * 0.8]]
    model = ek.load_model(vrefs.pt_path, config=vrefs.config)

    def ours(n_obj: int, precision: str = "fp32") -> tuple[float, list[np.ndarray]]:
        ek.optimize(model, precision=precision)
        session = ek.VideoTracker(model).start(frames)
        for k in range(n_obj):
            session.add_prompt(0, k + 1, points=[objs[k]])
        t0 = time.perf_counter()
        masks = [m[0] for _, _, m in session.propagate()]
        return (time.perf_counter() - t0) / n_frames, masks

    def timed_method(obj, name: str, run) -> float:
        t, orig = {}, getattr(obj, name)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            yield from orig(*a, **kw)
            t["s"] = time.perf_counter() - t0

        setattr(obj, name, wrapper)
        try:
            run()
        finally:
            setattr(obj, name, orig)
        return t["s"] / n_frames

    def hf(n_obj: int) -> float:
        prompts = [{"frame": 0, "obj": k + 1, "points": [objs[k]], "labels": [1]} for k in range(n_obj)]
        return timed_method(vrefs.hf, "propagate_in_video_iterator", lambda: run_hf(vrefs.hf, frames, prompts))

    def original() -> float:
        prompts = [{"frame": 0, "points": [objs[0]], "labels": [1]}]
        return timed_method(vrefs.original, "propagate_in_video",
                            lambda: run_original(vrefs.original, frames, prompts))

    with torch.inference_mode():
        one_s, one_masks = ours(1)
        one = {OURS: one_s, ORIG: original(), HF: hf(1)}
        three = {OURS: ours(3)[0], HF: hf(3)}
    rows = [Row("track 1 object, s/frame (fp32)", "s", one, ">= 1.5x vs original")]
    if bf16:
        with torch.inference_mode():
            b_s, b_masks = ours(1, "bf16")
        ek.optimize(model)
        ious = [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(one_masks, b_masks)]
        rows.append(Row("track 1 object, s/frame (bf16 opt-in)", "s", {OURS: b_s, ORIG: one[ORIG]},
                        ">= 2.5x vs original, IoU >= 0.98",
                        f"mask IoU vs fp32: min {min(ious):.3f}, median {statistics.median(ious):.3f}"))
    rows.append(Row("track 3 objects, s/frame (fp32)", "s", three, "well under 3x one object",
                    f"ours: {three[OURS] / one[OURS]:.2f}x one object; transformers: {three[HF] / one[HF]:.2f}x"))
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
    ours = ek.AutoMaskGenerator(ek.load_model(refs.hf_folder), **settings)
    original = SAM2AutomaticMaskGenerator(refs.original, **settings)
    hf = pipeline("mask-generation", model=refs.hf, device="cpu",
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
            counts[name] = count(fn())
            times[name] = time.perf_counter() - t0
        # ours makes masks only for points with a predicted IoU above pred_iou_thresh: say how many
        from edgetam_kit.engine.masks import point_grid

        grid = torch.as_tensor(point_grid(points_per_side) * side, dtype=torch.float32)[:, None, :]
        from edgetam_kit.runtime import runtime_of

        rt, feats = runtime_of(ours.model), ours.predictor.features
        context = rt.image_context(feats)
        upscaled = 0
        for s in range(0, len(grid), 8):  # a few prompts at a time: each carries ~40 MB of maps
            out = rt.decode(feats, grid[s:s + 8], torch.ones(len(grid[s:s + 8]), 1, dtype=torch.long), None,
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
    args = ap.parse_args(argv)
    set_threads(args.threads)
    import torch

    from edgetam_kit.testing.oracles import make_reference_checkpoints, make_video_references

    repeats, clicks, n_frames, pps = (3, 10, 4, 16) if args.quick else (5, 20, 8, 32)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "image" not in args.skip or "automask" not in args.skip or args.compiled:
            refs = make_reference_checkpoints(os.path.join(tmp, "img"), args.preset, seed=0)
            if "image" not in args.skip:
                rows += bench_image(refs, repeats, clicks)
                print(render(rows, "", ""), flush=True)
            if args.compiled:
                rows += bench_compiled(refs, repeats)
        if "tracking" not in args.skip:
            vrefs = make_video_references(os.path.join(tmp, "vid"), args.preset)
            rows += bench_tracking(vrefs, n_frames, bf16="bf16" not in args.skip)
            print(render(rows, "", ""), flush=True)
        if "automask" not in args.skip:
            rows += bench_automask(refs, pps)
    facts = machine_facts()
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
