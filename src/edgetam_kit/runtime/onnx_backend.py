"""The ``onnx`` backend: the network's four graphs (exported by ``ek.export_onnx``) run by onnxruntime,
the engine's glue (prompt parsing, memory bank, object pointers, upsampling) shared with the torch path.

``build_runtime(model, folder, precision)`` returns a ``Runtime`` whose ``encoder``, ``decode_fn``,
``memory_attention`` and ``memory_encoder`` are onnxruntime sessions behind the same tensor-in /
tensor-out interfaces as the plain modules; the few small steps between them (the no-memory
embedding, the object-pointer MLP, the mask downsampling of a mask prompt) run the model's modules.
The CPU provider by default, CUDA when onnxruntime has it and the model is on a CUDA device.
Threads: ``torch.get_num_threads()`` at build time (``ek.optimize(model, threads=...)`` sets it).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.edgetam import DecoderOutput, EdgeTam, ImageFeatures
from .onnx_manifest import OnnxManifest, is_onnx_folder, read_manifest
from .runtime import Runtime
from .weights import weights_digest

PRECISIONS = {"fp32": None, "float32": None, "int8": "int8", "fp16": "fp16", "float16": "fp16"}

_folders: "weakref.WeakKeyDictionary[EdgeTam, Path]" = weakref.WeakKeyDictionary()


def attach_folder(model: EdgeTam, folder: str | Path) -> None:
    """Record that ``model`` was loaded from the exported ``folder`` (its graphs are used as they are
    while the model's weights match the manifest's ``weights_id``)."""
    _folders[model] = Path(folder).expanduser()


def adopt_export(model: EdgeTam, path: Path, backend: str | None) -> str:
    """For ``load_model``: when ``path`` is a folder written by ``export_onnx``, attach it to
    ``model`` and return ``backend`` or ``"onnx"``; otherwise ``backend`` or ``"eager"``."""
    if path.is_dir() and is_onnx_folder(path):
        attach_folder(model, path)
        return backend or "onnx"
    return backend or "eager"


def folder_of(model: EdgeTam) -> Path | None:
    return _folders.get(model)


def check_precision(precision: str) -> str | None:
    """The file variant for ``precision`` (None = the fp32 graphs); ValueError for other names."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)} for the onnx backend, got {precision!r}")
    return PRECISIONS[precision]


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _np(t: torch.Tensor, dtype: Any = np.float32) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu").numpy(), dtype=dtype)


class Session:
    """One onnxruntime session; ``run(**inputs)`` takes numpy arrays, returns the outputs by name."""

    def __init__(self, path: Path, threads: int, cuda: bool) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = path
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, inputs)))


class _Part:
    def __init__(self, session: Session, model: EdgeTam) -> None:
        self.session, self.model = session, model

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.model.device)


class OnnxEncoder(_Part):
    """pixels (B, 3, S, S) -> raw embedding (B, C, E, E), s0, s1 (the ``Runtime.encoder`` form)."""

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.session.run(pixels=_np(pixels))
        return self._t(out["image_embed"]), self._t(out["high_res_0"]), self._t(out["high_res_1"])


class OnnxDecoder(_Part):
    """``EdgeTam.decode``'s arguments and result, computed by the exported prompt encoder + mask decoder."""

    def __call__(self, features: ImageFeatures, coords: torch.Tensor | None, labels: torch.Tensor | None,
                 mask_logits: torch.Tensor | None = None, multimask: bool = True,
                 best_only: bool = False) -> DecoderOutput:
        if coords is None and mask_logits is None:
            raise ValueError("decode needs points, a box or a mask")
        n = coords.shape[0] if coords is not None else mask_logits.shape[0]
        if len(features) not in (1, n):
            raise ValueError(f"features has {len(features)} images for {n} prompts (give 1 or {n})")
        index = np.zeros(n, np.int64) if len(features) == 1 else np.arange(n, dtype=np.int64)
        if coords is None:  # a mask-only prompt: no point tokens at all, as EdgeTam.sparse_prompt
            pts, labs = np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.int64)
        else:  # the padding point the network was trained with
            pts = np.concatenate([_np(coords), np.zeros((n, 1, 2), np.float32)], 1)
            labs = np.concatenate([_np(labels, np.int64), np.full((n, 1), -1, np.int64)], 1)
        e4 = 4 * self.model.config.embedding_size
        mask = np.zeros((n, 1, e4, e4), np.float32) if mask_logits is None else _np(mask_logits)
        out = self.session.run(image_embed=_np(features.embed), high_res_0=_np(features.high_res[0]),
                               high_res_1=_np(features.high_res[1]), image_index=index, point_coords=pts,
                               point_labels=labs, mask_input=mask,
                               has_mask_input=np.array([0.0 if mask_logits is None else 1.0], np.float32))
        tokens = self._t(out["mask_tokens"])
        if multimask:
            masks, iou, tokens = self._t(out["masks"])[:, 1:], self._t(out["iou_predictions"])[:, 1:], tokens[:, 1:]
            if best_only:
                pick = iou.argmax(-1)
                rows = torch.arange(n, device=iou.device)
                masks, iou, tokens = masks[rows, pick][:, None], iou[rows, pick][:, None], tokens[rows, pick][:, None]
        else:
            masks, iou, tokens = self._t(out["single_mask"]), self._t(out["single_iou"]), tokens[:, :1]
        return DecoderOutput(masks, iou, self._t(out["object_score"]).squeeze(-1), tokens)


class OnnxMemoryAttention(_Part):
    """``MemoryAttention.forward``'s arguments and result: memory (B, M, 64) is split into its
    ``num_frames`` frames and ``num_pointer_tokens`` pointer tokens for the graph."""

    def __call__(self, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor,
                 memory_pos: torch.Tensor, num_frames: int, num_pointer_tokens: int) -> torch.Tensor:
        if num_frames == 0:  # only pointers: not a state the tracker makes; the plain module handles it
            return self.model.memory_attention(current, current_pos, memory, memory_pos, 0, num_pointer_tokens)
        b, m, d = memory.shape
        split = m - num_pointer_tokens

        def frames(x: torch.Tensor) -> np.ndarray:
            return _np(x[:, :split].reshape(b, num_frames, split // num_frames, d))

        out = self.session.run(current=_np(current), current_pos=_np(current_pos.expand_as(current)),
                               frame_memory=frames(memory), frame_memory_pos=frames(memory_pos),
                               pointers=_np(memory[:, split:]), pointers_pos=_np(memory_pos[:, split:]))
        return self._t(out["conditioned"])


class OnnxMemoryEncoder(_Part):
    """``Runtime.encode_memory``'s arguments and result (memory encoder + perceiver)."""

    def __call__(self, raw: torch.Tensor, high_res_logits: torch.Tensor, binarize: bool,
                 object_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.session.run(raw=_np(raw), high_res_logits=_np(high_res_logits),
                               binarize=np.array([1.0 if binarize else 0.0], np.float32),
                               object_score=_np(object_score.reshape(-1)))
        return self._t(out["memory"]), self._t(out["memory_pos"])


def build_runtime(model: EdgeTam, folder: str | Path, precision: str = "fp32",
                  manifest: OnnxManifest | None = None) -> Runtime:
    """A ``Runtime`` running ``model``'s exported graphs in ``folder`` (checksums verified).
    precision: ``"fp32"``, ``"int8"`` (the int8 encoder/decoder files) or ``"fp16"``."""
    variant = check_precision(precision)
    manifest = manifest or read_manifest(folder)
    if variant is not None and variant not in manifest.variants():
        how = "quantize='int8'" if variant == "int8" else "fp16=True"
        raise ValueError(f"precision: {manifest.folder} has no {variant} files; export with {how}")
    threads = max(1, torch.get_num_threads())
    cuda = model.device.type == "cuda"

    def session(part: str) -> Session:
        return Session(manifest.path(part, variant), threads, cuda)

    enc = session("image_encoder")
    rt = Runtime("onnx" if variant is None else f"onnx-{variant}", encoder=OnnxEncoder(enc, model))
    rt.decode_fn = OnnxDecoder(session("mask_decoder"), model)
    if variant is not None:  # int8/fp16 features differ from fp32 ones: their own embedding-cache entries
        rt._digest = f"{weights_digest(model)}-onnx-{variant}"
    rt.notes += [f"onnxruntime {enc.providers[0]} ({threads} threads), graphs from {manifest.folder}",
                 f"precision {precision}: " + ", ".join(f"{p}: {manifest.path(p, variant).name}"
                                                         for p in manifest.data["files"])]
    if getattr(model, "has_video", False):
        if manifest.video:
            rt.memory_attention = OnnxMemoryAttention(session("memory_attention"), model)
            rt.memory_encoder = OnnxMemoryEncoder(session("memory_encoder"), model)
        else:
            rt.notes.append("image-only export: tracking runs the plain memory modules")
    return rt
