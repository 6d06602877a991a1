"""Inference runtimes chosen by name, and which runtime a model runs on.

A *backend* (``Backend``, supplied through the ``edgetam_kit_backends`` plugin hook) turns a
model with its checkpoint weights into a ``Runtime``: the fast parts the engine uses for the
expensive steps, plus the precision they run in. The built-in ``eager`` backend (registered
through the same hook as any plugin's) folds RepViT's BatchNorms and RepVGG branches into single
convolutions, runs the encoder channels-last, decodes through the rewritten mask decoder and
shares each frame's memory-attention prefix between objects; ``compiled`` does the same, then
``torch.compile``s the encoder and the memory attention (opt-in; the first call compiles).

The model does not hold its runtime: ``optimize`` records the choice (backend, precision) for
the model, and ``runtime_of(model)`` returns the runtime, rebuilt when the model's weights have
changed since it was built (replaced, modified in place, moved with ``.to()``). The runtime never
changes the model's parameters or its ``state_dict``.

    model = ek.load_model("edgetam.pt")                       # eager backend, fp32 (default)
    ek.optimize(model, precision="bf16", threads=4)           # opt-in bf16 autocast
    ek.optimize(model, backend="compiled")                    # opt-in torch.compile
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..modeling import EdgeTam
from ..plugins.hookspecs import Backend
from .fast_decoder import FastMaskDecoder
from .fast_memory_attention import FastMemoryAttention
from .folded_encoder import FoldedEncoder
from .runtime import Runtime
from .weights import WeightsStamp

PRECISIONS = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16}


def _parse_precision(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def prepare_eager(model: Any, precision: str = "fp32", fuse_pointwise: bool = True) -> Runtime:
    enc = FoldedEncoder(model, fuse_pointwise=fuse_pointwise)
    notes = ["RepViT BatchNorm/RepVGG folded", "encoder channels-last",
             "FPN 1x1 laterals composed with the decoder's s0/s1 projections",
             "mask decoder rewritten on image tokens (per-image context, few-token attention)"]
    if enc.fused_blocks:
        notes.append(f"GELU and residual adds fused into the 1x1 convolutions on CPU ({enc.fused_blocks} modules)")
    rt = Runtime("eager", encoder=enc, autocast=_parse_precision(precision), modules=[enc], notes=notes,
                 decoder=FastMaskDecoder(model.mask_decoder))
    if getattr(model, "has_video", False):
        attend = FastMemoryAttention(model.memory_attention)
        rt.memory_attention, rt.prefix = attend, attend.prefix
        notes.append("memory attention: per-frame prefix shared by objects, fused ReLU MLP on CPU")
    return rt


def _compiler_available() -> bool:
    import shutil

    return shutil.which("cc") is not None or shutil.which("gcc") is not None or torch.cuda.is_available()


def prepare_compiled(model: Any, precision: str = "fp32") -> Runtime:
    rt = prepare_eager(model, precision, fuse_pointwise=False)
    rt.encoder = torch.compile(rt.encoder, dynamic=False)
    if rt.memory_attention is not None:
        rt.memory_attention = torch.compile(rt.memory_attention, dynamic=True)
    rt.backend = "compiled"
    rt.notes.append("torch.compile (inductor) on the encoder and memory attention; the first call compiles")
    return rt


EAGER = Backend("eager", prepare_eager, "PyTorch eager; BatchNorm/RepVGG folded, channels-last encoder, rewritten "
                "decoder (default)")
COMPILED = Backend("compiled", prepare_compiled,
                   "eager + torch.compile of the encoder and memory attention (opt-in; slow first call)",
                   available=_compiler_available)


# ---------------------------------------------------------------------- which runtime a model runs on
@dataclass(frozen=True)
class _Choice:
    backend: str
    precision: str


class _RuntimeSlot:
    """A model's chosen backend and its runtime, kept on the model itself.

    model -> slot -> runtime -> model is a cycle the garbage collector frees with the model (a
    global table keyed by the model, whose runtime refers back to it, kept every model ever run
    alive: ~75 MB per real-shape model). Copies and pickles of a model start with an empty slot,
    as a new model does (the runtime's closures belong to the original's modules)."""

    __slots__ = ("choice", "runtime")

    def __init__(self) -> None:
        self.choice: _Choice | None = None
        self.runtime: Runtime | None = None

    def __copy__(self) -> "_RuntimeSlot":
        return _RuntimeSlot()

    def __deepcopy__(self, memo: dict) -> "_RuntimeSlot":
        return _RuntimeSlot()

    def __reduce__(self) -> tuple:
        return (_RuntimeSlot, ())


_SLOT = "_edgetam_runtime_slot"


def _slot(model: EdgeTam) -> _RuntimeSlot:
    """The model's slot (made on first use; stored in ``__dict__``, outside the module tree)."""
    slot = model.__dict__.get(_SLOT)
    if slot is None:
        slot = model.__dict__[_SLOT] = _RuntimeSlot()
    return slot

_lock = threading.RLock()


def backends() -> dict[str, Backend]:
    """Every backend the plugins supply, by name (built-ins included)."""
    from ..plugins.manager import get_plugin_manager

    return get_plugin_manager().backends()


def _build(model: EdgeTam, choice: _Choice) -> Runtime:
    stamp = WeightsStamp.of(model)
    if choice.backend == "none":
        rt = Runtime("none", autocast=_parse_precision(choice.precision))
    else:
        spec = backends().get(choice.backend)
        if spec is None:
            raise ValueError(f"backend must be one of {sorted([*backends(), 'none'])}, got {choice.backend!r}")
        if not spec.available():
            raise RuntimeError(f"backend {choice.backend!r} cannot run on this machine ({spec.description})")
        rt = _prepare(spec, model, choice)
        for m in rt.modules:
            m.to(device=model.device)
    rt.model, rt.stamp = model, stamp
    return rt


def _prepare(spec: Backend, model: EdgeTam, choice: _Choice) -> Runtime:
    """``spec.prepare``; a plugin's backend that fails (raises, or returns no Runtime) under a
    built-in's name is reported against its plugin and the built-in is used instead."""
    try:
        with torch.no_grad():
            rt = spec.prepare(model, choice.precision)
        if not isinstance(rt, Runtime):
            raise TypeError(f"backend {choice.backend!r} returned {type(rt).__name__}, not a Runtime")
        return rt
    except Exception as exc:
        builtin = {b.name: b for b in (EAGER, COMPILED)}.get(choice.backend)
        if builtin is None or spec is builtin:
            raise
        from ..plugins.manager import get_plugin_manager

        pm = get_plugin_manager()
        pm.report(pm.backend_plugins.get(choice.backend, "?"), f"backend {choice.backend!r} prepare", exc)
        with torch.no_grad():
            return builtin.prepare(model, choice.precision)


def runtime_of(model: EdgeTam, quick: bool = False) -> Runtime:
    """The runtime ``model`` runs on: the backend chosen with ``optimize`` (``"none"``, the plain
    modules, when never chosen), rebuilt when the weights changed since it was built. quick: check
    only the tensors the runtime was built from (``WeightsStamp.quick_same``; for per-click and
    per-frame calls), not the module tree."""
    if not isinstance(model, EdgeTam):
        raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
    with _lock:
        slot = _slot(model)
        rt = slot.runtime
        if rt is not None and rt.stamp is not None and (
                rt.stamp.quick_same() if quick else rt.stamp == WeightsStamp.of(model)):
            return rt
        rt = _build(model, slot.choice or _Choice("none", "fp32"))
        slot.runtime = rt
        return rt


def optimize(model: Any, backend: str = "eager", precision: str = "fp32", threads: int | None = None) -> Any:
    """Prepare ``model`` for inference with a named backend; returns the same model.

    backend: a name from ``ek.backends()`` (built-in: ``"eager"``, ``"compiled"``) or ``"none"``
    (run the plain modules, as ``build_random_model`` returns them). precision: ``"fp32"``
    (default), or ``"bf16"``/``"fp16"`` for autocast (fast only on CPUs with native bf16, e.g.
    AVX-512 BF16/AMX, and on GPUs). threads: set ``torch.set_num_threads`` (process-wide).
    A failed call leaves the model's runtime as it was.
    """
    if not isinstance(model, EdgeTam):
        raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    _parse_precision(precision)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a backend name (str), got {type(backend).__name__}")
    choice = _Choice(backend, precision)
    rt = _build(model, choice)
    if threads is not None:
        torch.set_num_threads(threads)
    with _lock:
        slot = _slot(model)
        slot.choice, slot.runtime = choice, rt
    return model


@contextlib.contextmanager
def inference(model: Any) -> Iterator[Runtime]:
    """``torch.inference_mode`` plus the autocast of the model's runtime; yields the runtime."""
    rt = runtime_of(model)
    with torch.inference_mode(), rt.context():
        yield rt
