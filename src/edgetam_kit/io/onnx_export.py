"""``export_onnx``: EdgeTAM as ONNX graphs for onnxruntime (or any ONNX runtime), plus a manifest.

    ek.export_onnx(model, "out/")                 # image encoder, prompt encoder + mask decoder,
                                                  # and for video checkpoints the memory attention and
                                                  # memory encoder + perceiver; manifest.json
    ek.export_onnx(model, "out/", quantize="int8")  # also int8 dynamic-quantized encoder/decoder
    model = ek.load_model("out/")                 # runs on the onnx backend

The graphs are exported with ``torch.onnx.export`` from the plain network (``modeling/``, through
the wrappers of ``onnx_graphs.py``) and checked with ``onnx.checker``. The folder also holds the
checkpoint (config.json + model.safetensors) so that ``ek.load_model(folder)`` has the model's small
tensors the engine's glue uses (object pointers, temporal encodings); manifest.json records every
file's sha256. Files are written under a temporary name and moved in place at the end: a failed
export leaves an existing folder's files as they were.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import inspect
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..modeling import EdgeTam
from ..plugins.hookspecs import Backend
from ..runtime.onnx_manifest import FORMAT, FORMAT_VERSION, MANIFEST, ManifestError, read_manifest, sha256_of
from ..runtime.weights import weights_digest
from ..transforms import IMAGENET_MEAN, IMAGENET_STD
from .onnx_graphs import ImageEncoderGraph, MaskDecoderGraph, MemoryAttentionGraph, MemoryEncoderGraph

FORMATS = ("onnx",)


def all_weights_digest(model: EdgeTam) -> str:
    """Digest of every tensor of ``model`` (the exported graphs depend on all of them)."""
    return weights_digest(model, ("",))
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
QUANTIZE = (None, "int8")


def _graph_specs(model: EdgeTam, video: bool) -> list[tuple[str, torch.nn.Module, tuple, list, list, dict]]:
    """(part, wrapper, example args, input names, output names, dynamic dims {input: {axis: name}})."""
    cfg = model.config
    s, c, e = cfg.image_size, cfg.mask_decoder.dim, cfg.embedding_size
    mem = cfg.memory
    tokens = mem.perceiver_num_latents + mem.perceiver_num_latents_2d
    f32 = dict(dtype=torch.float32)
    specs = [
        ("image_encoder", ImageEncoderGraph(model), (torch.randn(2, 3, s, s),), ["pixels"],
         ["image_embed", "high_res_0", "high_res_1"], {"pixels": {0: "batch"}}),
        ("mask_decoder", MaskDecoderGraph(model),
         (torch.randn(2, c, e, e), torch.randn(2, c // 8, 4 * e, 4 * e), torch.randn(2, c // 4, 2 * e, 2 * e),
          torch.tensor([0, 1, 1]), torch.rand(3, 3, 2) * s, torch.tensor([[1, 0, -1]] * 3),
          torch.randn(3, 1, 4 * e, 4 * e), torch.ones(1, **f32)),
         ["image_embed", "high_res_0", "high_res_1", "image_index", "point_coords", "point_labels", "mask_input",
          "has_mask_input"],
         ["masks", "iou_predictions", "mask_tokens", "object_score", "single_mask", "single_iou"],
         {"image_embed": {0: "images"}, "high_res_0": {0: "images"}, "high_res_1": {0: "images"},
          "image_index": {0: "prompts"}, "point_coords": {0: "prompts", 1: "points"},
          "point_labels": {0: "prompts", 1: "points"}, "mask_input": {0: "prompts"}}),
    ]
    if video:
        specs += [
            ("memory_attention", MemoryAttentionGraph(model),
             (torch.randn(2, c, e, e), torch.randn(2, c, e, e), torch.randn(2, 3, tokens, mem.mem_dim),
              torch.randn(2, 3, tokens, mem.mem_dim), torch.randn(2, 8, mem.mem_dim), torch.randn(2, 8, mem.mem_dim)),
             ["current", "current_pos", "frame_memory", "frame_memory_pos", "pointers", "pointers_pos"],
             ["conditioned"],
             {"current": {0: "batch"}, "current_pos": {0: "batch"}, "frame_memory": {0: "batch", 1: "frames"},
              "frame_memory_pos": {0: "batch", 1: "frames"}, "pointers": {0: "batch", 1: "pointer_tokens"},
              "pointers_pos": {0: "batch", 1: "pointer_tokens"}}),
            ("memory_encoder", MemoryEncoderGraph(model),
             (torch.randn(2, c, e, e), torch.randn(2, 1, s, s) * 5, torch.ones(1, **f32), torch.randn(2)),
             ["raw", "high_res_logits", "binarize", "object_score"], ["memory", "memory_pos"],
             {"raw": {0: "batch"}, "high_res_logits": {0: "batch"}, "object_score": {0: "batch"}}),
        ]
    return specs


def _export_one(wrapper: torch.nn.Module, args: tuple, path: Path, names: list, outputs: list, dims: dict,
                opset: int, exporter: str) -> str:
    """Export one graph to ``path``; returns the exporter that succeeded (dynamo falls back to the
    TorchScript exporter when it cannot export the graph)."""
    wrapper.eval()
    if exporter == "dynamo":
        from torch.export import Dim

        made: dict[str, Any] = {}
        shapes = {}
        params = list(inspect.signature(wrapper.forward).parameters)
        for arg_name, name in zip(params, names):
            axes = dims.get(name)
            shapes[arg_name] = None if axes is None else {
                ax: made.setdefault(d, Dim(d, min=0 if d in ("pointer_tokens",) else 1, max=4096))
                for ax, d in axes.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=names, output_names=outputs,
                                  dynamic_shapes=shapes, opset_version=opset, external_data=False, verbose=False)
            return "dynamo"
        except Exception as exc:  # noqa: BLE001 - any exporter failure: try the TorchScript exporter
            path.unlink(missing_ok=True)
            warnings.warn(f"the dynamo exporter failed on {path.stem} ({type(exc).__name__}: {str(exc)[:300]}); "
                          "using the TorchScript exporter", RuntimeWarning, stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes={k: dict(v) for k, v in dims.items()}, opset_version=opset)
    return "torchscript"


def _io_of(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Input/output names, shapes (ints or dimension names) and element types of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape,
                        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    return {"inputs": describe(m.graph.input), "outputs": describe(m.graph.output)}


def _file_entry(folder: Path, name: str, with_io: bool = True) -> dict[str, Any]:
    p = folder / name
    entry: dict[str, Any] = {"path": name, "bytes": p.stat().st_size, "sha256": sha256_of(p)}
    if with_io:
        entry.update(_io_of(p))
    return entry


def _check_folder(folder: str | os.PathLike) -> Path:
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path (str or os.PathLike), got {type(folder).__name__}")
    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"folder: {out} exists and is not a directory; give a folder to write the ONNX files in")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise ValueError(f"folder: {out} is not writable ({exc.strerror or exc}); choose a folder you can write to") \
            from exc
    return out


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(m, str(dst))


def export_onnx(model: EdgeTam, folder: str | os.PathLike, *, video: bool | None = None, opset: int = DEFAULT_OPSET,
                exporter: str = "dynamo", quantize: str | None = None, fp16: bool = False,
                progress: Any = None) -> Path:
    """Write ``model`` as ONNX graphs + ``manifest.json`` (+ its checkpoint) into ``folder``; returns it.

    video: export the memory attention and memory encoder + perceiver too (default: when the
    model has them; True for an image-only model is a ValueError). opset: the ONNX opset (>= 17).
    exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, falling back to the TorchScript
    exporter per graph when it fails) or ``"torchscript"``. quantize: ``"int8"`` also writes
    ``*.int8.onnx`` of the encoder and decoder (``onnxruntime.quantization.quantize_dynamic``).
    fp16: also writes ``*.fp16.onnx`` of every graph (float16 weights and math, float32 inputs and
    outputs). progress: a callable ``progress(message)`` or None.
    """
    if not isinstance(model, EdgeTam):
        raise TypeError(f"model must be an EdgeTam (from ek.load_model), got {type(model).__name__}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 17 <= opset <= 23:
        raise ValueError(f"opset must be an int from 17 to 23, got {opset!r}")
    if video is None:
        video = bool(model.has_video)
    elif video and not model.has_video:
        raise ValueError("video: this checkpoint is image-only (no memory encoder, perceiver or memory attention), "
                         "so there are no video graphs to export; pass video=False (or leave it None) for an "
                         "image-only export, or export a video checkpoint")
    out = _check_folder(folder)
    say = progress if callable(progress) else (lambda message: None)
    import onnx

    t0 = time.perf_counter()
    plain = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        from .checkpoint import save_model

        save_model(plain, work)
        files: dict[str, Any] = {}
        variants: dict[str, dict[str, Any]] = {}
        used = set()
        with torch.no_grad():
            for part, wrapper, args, names, outputs, dims in _graph_specs(plain, video):
                say(f"exporting {part}")
                name = f"{part}.onnx"
                used.add(_export_one(wrapper, args, work / name, names, outputs, dims, opset, exporter))
                onnx.checker.check_model(str(work / name))
                files[part] = _file_entry(work, name)
                if quantize == "int8" and part in ("image_encoder", "mask_decoder"):
                    say(f"quantizing {part} (int8)")
                    _quantize_int8(work / name, work / f"{part}.int8.onnx")
                    variants.setdefault("int8", {})[part] = _file_entry(work, f"{part}.int8.onnx")
                if fp16:
                    say(f"converting {part} to fp16")
                    _to_fp16(work / name, work / f"{part}.fp16.onnx")
                    variants.setdefault("fp16", {})[part] = _file_entry(work, f"{part}.fp16.onnx")
        from .. import __version__
        from .checkpoint import random_weights_of
        from .export import random_note

        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "edgetam_kit_version": __version__,
            "torch_version": torch.__version__, "onnx_version": onnx.__version__, "opset": opset,
            "exporter": "+".join(sorted(used)), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "video": video, "image_only": not video, "weights_id": all_weights_digest(model),
            **({"random_weights": random_note(random_weights_of(model))} if random_weights_of(model) else {}),
            "image_size": model.config.image_size, "embedding_size": model.config.embedding_size,
            "normalisation": {"input": "RGB scaled to [0, 1], resized to image_size x image_size",
                              "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "point_convention": "(x, y) pixels of the image_size x image_size model frame; labels 1 positive, "
                                "0 negative, 2/3 box corners, -1 padding (append one (0, 0) point labelled -1 "
                                "to every prompt that has points)",
            "config": dataclasses.asdict(model.config),
            "files": files, "variants": variants,
            "extra_files": [_file_entry(work, n, with_io=False) for n in ("config.json", "model.safetensors")],
            "export_seconds": round(time.perf_counter() - t0, 2),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
        stale = [p for p in out.glob("*.onnx")]  # an older export's graphs that this one does not write
        for p in sorted(work.iterdir()):
            os.replace(p, out / p.name)
        written = {p["path"] for p in [*files.values(), *(e for v in variants.values() for e in v.values())]}
        for p in stale:
            if p.name not in written:
                p.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"exported to {out} in {time.perf_counter() - t0:.1f} s")
    return out


# ---------------------------------------------------------------------- the onnx backend's prepare
def _cache_root() -> Path:
    root = os.environ.get("EDGETAM_KIT_ONNX_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgetam-kit" / "onnx"


def prepare_onnx(model: EdgeTam, precision: str = "fp32") -> Any:
    """The ``onnx`` backend: run ``model`` on onnxruntime. Uses the folder ``model`` was loaded from
    (``ek.load_model(folder)``) when its weights still match; otherwise exports once into the cache
    (``$EDGETAM_KIT_ONNX_CACHE``, default ``~/.cache/edgetam-kit/onnx/<weights digest>``).
    precision: ``"fp32"``, ``"int8"`` (dynamic-quantized encoder/decoder) or ``"fp16"``."""
    from ..runtime import onnx_backend

    variant = onnx_backend.check_precision(precision)
    folder = onnx_backend.folder_of(model)
    digest = all_weights_digest(model)
    if folder is not None:
        try:
            manifest = read_manifest(folder, verify=False)
            if manifest.weights_id != digest:
                folder = None  # the weights changed since loading: export them
            elif variant is not None and variant not in manifest.variants():
                folder = None
        except ManifestError:
            folder = None
    if folder is None:
        folder = _cache_root() / digest[:32]
        try:
            manifest = read_manifest(folder, verify=False)
            ok = manifest.weights_id == digest and (variant is None or variant in manifest.variants())
        except ManifestError:
            ok = False
        if not ok:
            export_onnx(model, folder, quantize="int8" if variant == "int8" else None, fp16=variant == "fp16")
    return onnx_backend.build_runtime(model, folder, precision)


def prepare_onnx_int8(model: EdgeTam, precision: str = "fp32") -> Any:
    """The ``onnx-int8`` backend: ``onnx`` with the int8 dynamic-quantized encoder and decoder."""
    if precision not in ("fp32", "float32", "int8"):
        raise ValueError(f"precision must be 'fp32' for the onnx-int8 backend (its precision is int8), got {precision!r}")
    return prepare_onnx(model, "int8")


def _ort_available() -> bool:
    from ..runtime.onnx_backend import available

    return available()


ONNX = Backend("onnx", prepare_onnx, "onnxruntime running the exported graphs (ek.export_onnx); exports into the "
               "cache on first use; precision fp32 or fp16", available=_ort_available)
ONNX_INT8 = Backend("onnx-int8", prepare_onnx_int8, "onnxruntime with the int8 dynamic-quantized encoder and decoder",
                    available=_ort_available)
