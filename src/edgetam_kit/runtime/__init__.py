"""How the plain network (``modeling/``) runs fast: backends, the folded encoder, the rewritten
decoder and memory attention, the fused CPU kernels and precision. Every fast path is built from
the plain modules and parity-tested against them."""

from .backends import EAGER, COMPILED, PRECISIONS, Backend, Runtime, backends, inference, optimize, prepare_compiled, \
    prepare_eager
from .folded_encoder import FoldedEncoder

__all__ = ["EAGER", "COMPILED", "PRECISIONS", "Backend", "Runtime", "backends", "inference", "optimize",
           "prepare_compiled", "prepare_eager", "FoldedEncoder"]
