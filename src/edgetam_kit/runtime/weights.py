"""Which weights a runtime was built from: a cheap stamp to notice a change, and a content
digest that names the weights (the embedding cache's model identity comes from it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

# The tensors the image features depend on (``encode_image``): a model that differs elsewhere
# (decoder, video modules) gives the same features, so it may share embedding-cache entries.
ENCODER_TENSORS = ("vision_encoder.", "mask_decoder.conv_s0.", "mask_decoder.conv_s1.", "no_memory_embedding")


def _version(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; None for inference tensors (they keep none, and
    cannot be changed in place outside ``torch.inference_mode``)."""
    return None if t.is_inference() else t._version


@dataclass(frozen=True)
class WeightsStamp:
    """Identity, storage and in-place version of every parameter and buffer, plus the device and
    dtype. Two stamps differ when a tensor was replaced, modified in place (``optimizer.step()``,
    ``load_state_dict``, ``.copy_()``) or moved (``.to()``). ``of`` walks the module tree (~2 ms for
    EdgeTAM's ~1,000 tensors); ``quick`` re-reads the tensors a stamp was taken of (~0.2 ms) and
    sees everything but a parameter object replaced by another. In-place changes of inference
    tensors (made inside ``torch.inference_mode``) are not tracked by PyTorch and not seen."""

    tensors: tuple[torch.Tensor, ...] = field(repr=False, compare=False)
    ids: tuple[int, ...]
    versions: tuple[tuple[int, int | None], ...]
    device: str
    dtype: torch.dtype

    @staticmethod
    def _versions(tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[int, int | None], ...]:
        return tuple((t.data_ptr(), _version(t)) for t in tensors)

    @classmethod
    def of(cls, model: nn.Module) -> "WeightsStamp":
        tensors = (*model.parameters(), *model.buffers())
        first = tensors[0]
        return cls(tensors, tuple(map(id, tensors)), cls._versions(tensors), str(first.device), first.dtype)

    def quick_same(self) -> bool:
        """Whether the tensors this stamp was taken of are unchanged in storage and version."""
        return self._versions(self.tensors) == self.versions


def weights_digest(model: nn.Module, prefixes: Sequence[str] = ENCODER_TENSORS) -> str:
    """blake2b of the parameters and buffers whose names start with ``prefixes`` (names, dtypes,
    shapes, bytes): the same weights give the same digest in any process."""
    tensors = sorted((n, t) for n, t in model.state_dict(keep_vars=True).items() if n.startswith(tuple(prefixes)))
    h = hashlib.blake2b(digest_size=20)
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
