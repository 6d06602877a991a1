"""Inference runtimes: how a loaded model is prepared to run fast, chosen by name.

A *backend* (``Backend``, supplied through the ``edgetam_kit_backends`` plugin hook) turns a
model with its checkpoint weights into a ``Runtime``: the callables the engine uses for the
expensive steps, plus the precision they run in. The built-in ``eager`` backend (registered
through the same hook as any plugin's) folds RepViT's BatchNorms and RepVGG branches into
single convolutions and runs the encoder channels-last; ``compiled`` does the same, then
``torch.compile``s the encoder and the memory attention (opt-in; the first call compiles).

The runtime never changes the model's parameters or its ``state_dict``: the folded encoder is
a separate copy, so ``save_model`` still writes the checkpoint layout. Change the weights
after ``optimize`` and call it again.

    model = ek.load_model("edgetam.pt")                       # eager backend, fp32 (default)
    ek.optimize(model, precision="bf16", threads=4)           # opt-in bf16 autocast
    ek.optimize(model, backend="compiled")                    # opt-in torch.compile
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..plugins.hookspecs import Backend
from .folded_encoder import FoldedEncoder

PRECISIONS = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16}


@dataclass
class Runtime:
    """What a backend prepared for one model.

    encoder: callable ``(B, 3, S, S) pixels -> (embed, s0, s1)``: the raw image embedding
    (B, C, E, E) and the decoder's projected high-resolution maps (B, C/8, 4E, 4E) and
    (B, C/4, 2E, 2E), used instead of the model's own encoder (same values up to float rounding). memory_attention: optional
    replacement for ``model.memory_attention`` (same signature). autocast: ``None`` (run in the
    model's dtype) or the dtype of ``torch.autocast`` around every inference step.
    """

    backend: str
    encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    memory_attention: Callable[..., torch.Tensor] | None = None
    autocast: torch.dtype | None = None
    modules: list[nn.Module] = field(default_factory=list)  # owned copies, moved with the model
    notes: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for inference on ``device`` (a no-op in fp32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)


def _parse_precision(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def prepare_eager(model: Any, precision: str = "fp32", fuse_pointwise: bool = True) -> Runtime:
    enc = FoldedEncoder(model, fuse_pointwise=fuse_pointwise)
    notes = ["RepViT BatchNorm/RepVGG folded", "encoder channels-last",
             "FPN 1x1 laterals composed with the decoder's s0/s1 projections"]
    if enc.fused_blocks:
        notes.append(f"GELU and residual adds fused into the 1x1 convolutions on CPU ({enc.fused_blocks} modules)")
    return Runtime("eager", encoder=enc, autocast=_parse_precision(precision), modules=[enc], notes=notes)


def _compiler_available() -> bool:
    import shutil

    return shutil.which("cc") is not None or shutil.which("gcc") is not None or torch.cuda.is_available()


def prepare_compiled(model: Any, precision: str = "fp32") -> Runtime:
    rt = prepare_eager(model, precision, fuse_pointwise=False)
    enc = rt.encoder
    rt.encoder = torch.compile(enc, dynamic=False)
    if getattr(model, "has_video", False):
        rt.memory_attention = torch.compile(model.memory_attention, dynamic=True)
    rt.backend = "compiled"
    rt.notes.append("torch.compile (inductor) on the encoder and memory attention; the first call compiles")
    return rt


EAGER = Backend("eager", prepare_eager, "PyTorch eager; BatchNorm/RepVGG folded, channels-last encoder (default)")
COMPILED = Backend("compiled", prepare_compiled,
                   "eager + torch.compile of the encoder and memory attention (opt-in; slow first call)",
                   available=_compiler_available)


# ---------------------------------------------------------------------- public entry point
def backends() -> dict[str, Backend]:
    """Every backend the plugins supply, by name (built-ins included)."""
    from ..plugins.manager import get_plugin_manager

    return get_plugin_manager().backends()


def optimize(model: Any, backend: str = "eager", precision: str = "fp32", threads: int | None = None) -> Any:
    """Prepare ``model`` for inference with a named backend; returns the same model.

    backend: a name from ``ek.backends()`` (built-in: ``"eager"``, ``"compiled"``) or ``"none"``
    (run the plain modules, as ``build_random_model`` returns them). precision: ``"fp32"``
    (default), or ``"bf16"``/``"fp16"`` for autocast (fast only on CPUs with native bf16, e.g.
    AVX-512 BF16/AMX, and on GPUs). threads: set ``torch.set_num_threads`` (process-wide).
    """
    from ..modeling import EdgeTam

    if not isinstance(model, EdgeTam):
        raise TypeError(f"model must be an EdgeTam from ek.load_model, got {type(model).__name__}")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)
    autocast = _parse_precision(precision)
    if backend == "none":
        model.runtime = Runtime("none", autocast=autocast)
        return model
    found = backends()
    if backend not in found:
        raise ValueError(f"backend must be one of {sorted([*found, 'none'])}, got {backend!r}")
    spec = found[backend]
    if not spec.available():
        raise RuntimeError(f"backend {backend!r} cannot run on this machine ({spec.description})")
    with torch.no_grad():
        rt = spec.prepare(model, precision)
    if not isinstance(rt, Runtime):
        raise TypeError(f"backend {backend!r} returned {type(rt).__name__}, not a Runtime")
    for m in rt.modules:
        m.to(device=model.device)
    model.runtime = rt
    return model


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
    """``torch.inference_mode`` plus the model runtime's autocast."""
    rt = getattr(model, "runtime", None)
    with torch.inference_mode(), (rt.context(model.device) if rt is not None else contextlib.nullcontext()):
        yield
