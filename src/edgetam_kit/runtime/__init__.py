"""How the plain network (``modeling/``) runs fast: backends, the folded encoder, the rewritten
decoder and memory attention, the fused CPU kernels and precision. Every fast path is built from
the plain modules and parity-tested against them (tests/test_fast_paths.py)."""

from .backends import COMPILED, EAGER, PRECISIONS, Backend, backends, inference, optimize, prepare_compiled, \
    prepare_eager, runtime_of
from .fast_decoder import FastMaskDecoder, ImageContext
from .fast_memory_attention import FastMemoryAttention, FramePrefix
from .folded_encoder import FoldedEncoder
from .runtime import Runtime

__all__ = ["COMPILED", "EAGER", "PRECISIONS", "Backend", "backends", "inference", "optimize", "prepare_compiled",
           "prepare_eager", "runtime_of", "FastMaskDecoder", "ImageContext", "FastMemoryAttention", "FramePrefix",
           "FoldedEncoder", "Runtime"]
