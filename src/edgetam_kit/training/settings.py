"""The settings of a fine-tuning run, validated once, with the fingerprint that resume checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .prompts import PROMPT_KINDS

TRAIN_MODES = ("decoder", "lora", "all")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_LR = {"decoder": 3e-4, "lora": 1e-3, "all": 3e-4}
DEFAULT_IMAGES_PER_STEP = {"decoder": 8, "lora": 2, "all": 2}


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class FinetuneSettings:
    """What ``ek.finetune`` does. train: "decoder" (mask decoder + prompt encoder on cached,
    frozen image embeddings), "lora" (low-rank adapters on the encoder's 1x1 convolutions and the
    decoder's linear layers) or "all" (the image encoder at ``encoder_lr_scale`` x lr).
    train_projections (decoder only): also train conv_s0 / conv_s1 and the no-memory embedding
    (more capacity, 5x the cached bytes per image, and the image features change). One step = one optimizer update of ``batch_size`` objects
    (drawn from ``images_per_step`` images) times ``accumulate`` micro-batches. lr: after a 20-step
    warm-up, constant or (``schedule="cosine"``) decayed to 0.1 x lr at the last step. eval_every / checkpoint_every: steps (default: once per epoch, within 10-50).
    patience: evaluations without a better validation IoU before stopping (None: never)."""

    train: str = "decoder"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    images_per_step: int | None = None
    lr: float | None = None
    encoder_lr_scale: float = 0.1
    train_projections: bool = False
    weight_decay: float = 0.01
    warmup: int = 20
    schedule: str = "cosine"
    val_fraction: float = 0.2
    eval_every: int | None = None
    checkpoint_every: int | None = None
    patience: int | None = 5
    seed: int = 0
    prompts: tuple[str, ...] = PROMPT_KINDS
    corrections: int = 1
    accumulate: int = 1
    precision: str = "auto"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    merge_lora: bool = True
    min_area: int = 16

    def __post_init__(self) -> None:
        if self.train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        for name in ("steps", "epochs", "images_per_step", "eval_every", "checkpoint_every", "patience"):
            _positive_int(name, getattr(self, name), allow_none=True)
        for name in ("batch_size", "accumulate", "lora_rank", "min_area"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.corrections, bool) or not isinstance(self.corrections, int) or not 0 <= self.corrections <= 8:
            raise ValueError(f"corrections must be an int from 0 to 8 (correction clicks per object), got {self.corrections!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (steps), got {self.warmup!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        for name in ("lr", "weight_decay", "lora_alpha", "encoder_lr_scale"):
            value = getattr(self, name)
            if value is None and name == "lr":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        prompts = tuple(self.prompts) if not isinstance(self.prompts, str) else (self.prompts,)
        bad = [p for p in prompts if p not in PROMPT_KINDS]
        if not prompts or bad:
            raise ValueError(f"prompts must be a non-empty subset of {PROMPT_KINDS}, got {self.prompts!r}")
        object.__setattr__(self, "prompts", prompts)
        if not isinstance(self.train_projections, bool):
            raise ValueError(f"train_projections must be True or False, got {self.train_projections!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.train]

    @property
    def images_each_step(self) -> int:
        return self.images_per_step or DEFAULT_IMAGES_PER_STEP[self.train]

    def total_steps(self, n_train_images: int) -> int:
        """Steps of the run: ``steps``, or ``epochs`` (default 10) passes over the training images."""
        if self.steps is not None:
            return self.steps
        per_epoch = -(-n_train_images // self.images_each_step)
        return max(1, (self.epochs or 10) * -(-per_epoch // self.accumulate))

    def eval_interval(self, n_train_images: int) -> int:
        per_epoch = -(-n_train_images // (self.images_each_step * self.accumulate))
        return self.eval_every or max(10, min(50, per_epoch))  # small sets: not every step (patience)

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        """A digest of what decides the weights at each step (not the run's length or stopping
        rule: a run may be resumed for more steps)."""
        d = self.as_dict()
        for k in ("steps", "epochs", "patience", "eval_every", "checkpoint_every"):
            d.pop(k)
        return hashlib.blake2b(json.dumps(d, sort_keys=True).encode(), digest_size=12).hexdigest()
