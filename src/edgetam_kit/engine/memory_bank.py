"""The bounded memory bank of one tracked object (DESIGN.md §4) and the memory-attention inputs
it gives for a frame: conditioning (prompted) frames, the last memories, object pointers.

Nothing here grows with the source: per object, the prompted frames, the last
``max_memory_frames - 1`` tracked memories, the last ``max_object_pointers`` pointers, and the
tracked frames within that reach of a prompted frame.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..modeling import EdgeTam


@dataclass
class FrameMemory:
    """What the bank keeps of one frame for one object (all on the model's device)."""

    tokens: torch.Tensor  # (512, 64) perceiver tokens
    pos: torch.Tensor  # (512, 64)
    pointer: torch.Tensor  # (C,)
    low_res: torch.Tensor  # (1, 4E, 4E) mask logits of the frame's output
    object_score: float


@dataclass
class ObjectState:
    """One tracked object: its prompts' outputs and its bounded memory."""

    obj_id: int
    conditioning: dict[int, FrameMemory] = field(default_factory=dict)  # prompted frames
    recent: OrderedDict[int, FrameMemory] = field(default_factory=OrderedDict)  # last tracked frames
    pointers: OrderedDict[int, torch.Tensor] = field(default_factory=OrderedDict)  # last tracked pointers
    # Tracked frames next to a prompted frame (within the memory / pointer reach). A pass in
    # the other direction from that prompt needs exactly these, so they outlive the LRU above;
    # their number is bounded by the number of prompts, not by the length of the source.
    anchored: dict[int, FrameMemory] = field(default_factory=dict)
    anchored_pointers: dict[int, torch.Tensor] = field(default_factory=dict)
    tracked: set[int] = field(default_factory=set)  # frames visited by a propagation
    # Tracked frames later prompted (corrections): the tracked mask logits (1, 4E, 4E) before the
    # first correction (None when no longer held). A re-prompt replaces the correction, so it is
    # decoded from the same memory and this same previous mask: the same clicks, the same result.
    corrected: dict[int, torch.Tensor | None] = field(default_factory=dict)

    def remember(self, frame: int, mem: FrameMemory, max_recent: int, max_pointers: int) -> None:
        for store, value, cap in ((self.recent, mem, max_recent), (self.pointers, mem.pointer, max_pointers)):
            store.pop(frame, None)
            store[frame] = value
            while len(store) > cap:
                store.popitem(last=False)
        gap = min((abs(frame - c) for c in self.conditioning), default=None)
        if gap is not None and gap <= max_recent:
            self.anchored[frame] = mem
        if gap is not None and gap <= max_pointers - 1:
            self.anchored_pointers[frame] = mem.pointer

    def memory_at(self, frame: int) -> FrameMemory | None:
        return self.recent.get(frame) or self.anchored.get(frame)

    def pointer_at(self, frame: int) -> torch.Tensor | None:
        p = self.pointers.get(frame)
        return self.anchored_pointers.get(frame) if p is None else p


@dataclass
class BankInputs:
    """Memory-attention inputs of one object on one frame: memory tokens (1, M, mem_dim) and their
    positions, with M = num_frames * tokens per frame + num_pointer_tokens."""

    memory: torch.Tensor
    memory_pos: torch.Tensor
    num_frames: int
    num_pointer_tokens: int


def select_conditioning(state: ObjectState, frame: int, exclude: int | None, cap: int | None) -> tuple[dict, dict]:
    """(selected, unselected) conditioning frames: all, or the nearest ``max_conditioning_frames``
    (one before and one after ``frame`` first)."""
    cond = {t: m for t, m in state.conditioning.items() if t != exclude}
    if cap is None or len(cond) <= cap:
        return cond, {}
    chosen: list[int] = []
    before = [t for t in cond if t < frame]
    after = [t for t in cond if t >= frame]
    if before:
        chosen.append(max(before))
    if after and len(chosen) < cap:
        chosen.append(min(after))
    rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame))
    chosen += rest[: cap - len(chosen)]
    return {t: cond[t] for t in chosen}, {t: m for t, m in cond.items() if t not in chosen}


def bank_inputs(state: ObjectState, frame: int, reverse: bool, exclude: int | None, model: EdgeTam,
                max_memory_frames: int, max_conditioning_frames: int | None, num_frames: int) -> BankInputs:
    """What ``state``'s bank gives for ``frame`` tracked in direction ``reverse``: the selected
    conditioning frames, the recent memories in the direction of "the past" (temporal encodings
    by distance), then the object pointers; ``exclude``: a frame left out (a correction of it)."""
    source_frames = num_frames
    m = model
    mem_cfg = m.config.memory
    tpos = m.memory_temporal_positional_encoding  # (num_maskmem, 1, 1, 64)
    selected, unselected = select_conditioning(state, frame, exclude, max_conditioning_frames)
    step = 1 if reverse else -1  # direction of "the past"
    tokens, pos = [], []
    for mem in selected.values():
        tokens.append(mem.tokens)
        pos.append(mem.pos + tpos[mem_cfg.num_maskmem - 1, 0])
    for t_rel in range(1, max_memory_frames):
        prev = state.memory_at(frame + step * t_rel) or unselected.get(frame + step * t_rel)
        if prev is not None and frame + step * t_rel != exclude:
            tokens.append(prev.tokens)
            pos.append(prev.pos + tpos[t_rel - 1, 0])
    n_mem = len(tokens)
    # object pointers: prompted frames in the past, then the previous tracked frames
    pointers = [mem.pointer for t, mem in selected.items() if (t >= frame if reverse else t <= frame)]
    for t_diff in range(1, min(source_frames, mem_cfg.max_object_pointers)):
        t = frame + step * t_diff
        if t < 0 or t >= source_frames:
            break
        if t == exclude:
            continue
        p = state.pointer_at(t)
        if p is None and t in unselected:
            p = unselected[t].pointer
        if p is not None:
            pointers.append(p)
    n_ptr_tokens = 0
    if pointers:
        ptr = torch.stack(pointers).reshape(-1, mem_cfg.mem_dim)  # each pointer -> C/64 tokens
        tokens.append(ptr)
        pos.append(torch.zeros_like(ptr))
        n_ptr_tokens = ptr.shape[0]
    memory = torch.cat(tokens)[None]
    memory_pos = torch.cat(pos)[None]
    return BankInputs(memory, memory_pos, n_mem, n_ptr_tokens)
