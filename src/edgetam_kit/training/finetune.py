"""``ek.finetune``: adapt EdgeTAM to the user's own annotations.

The loop trains the plain ``modeling/`` network (eval mode: BatchNorm statistics stay frozen),
validates on a held-out split, keeps the best weights in ``out`` as a normal checkpoint
(``ek.save_model``) with a model card, and can be resumed: every step's batch and prompts are a
function of (seed, step), and the optimizer state is saved with the weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..modeling.edgetam import EdgeTam
from ..progress import Cancelled, check_progress_cancel, is_cancelled, report
from .card import write_card
from .data import TrainImage
from .dataset import load_data, split
from .evaluate import EvalMetrics, evaluate
from .features import FeatureSource
from .losses import LossParts, sam_loss
from .prompts import correction_clicks, make_batch, step_rng
from .settings import FinetuneSettings
from .setup import base_model, load_tensors, prepare_out, select_trainable, trained_tensors
from .state import EvalRecord, RunState, clear_state, load_state, save_state


@dataclass
class FinetuneResult:
    """model: the best weights (by validation IoU; the last ones without validation), ready to use;
    path: the folder they were written to. IoUs are validation mask IoU from one point per object."""

    model: EdgeTam = field(repr=False)
    path: Path
    train: str
    steps_done: int
    initial_iou: float | None
    best_iou: float | None
    best_step: int | None
    stopped_early: bool
    resumed_from: int | None
    seconds: float
    history: list[EvalRecord] = field(default_factory=list, repr=False)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Run:
    """The state of one call: model, data, optimizer, best so far."""

    def __init__(self, model: EdgeTam, names: list[str], train: list[TrainImage], val: list[TrainImage],
                 settings: FinetuneSettings, out: Path, fingerprint: str) -> None:
        self.model, self.names, self.train, self.val = model, names, train, val
        self.settings, self.out, self.fingerprint = settings, out, fingerprint
        self.device = model.device
        self.params = [p for n, p in model.named_parameters() if n in set(names)]
        encoder = [p for n, p in model.named_parameters() if n in set(names) and n.startswith("vision_encoder.")
                   and settings.train == "all"]
        rest = [p for p in self.params if all(p is not q for q in encoder)]
        groups = [{"params": rest, "scale": 1.0}] + ([{"params": encoder, "scale": settings.encoder_lr_scale}]
                                                     if encoder else [])
        self.optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.features = FeatureSource(model, frozen=settings.train == "decoder", device=self.device,
                                      raw=settings.train_projections)
        self.size = model.config.image_size
        self.low_res = 4 * model.config.embedding_size
        self.state = RunState(0, fingerprint, {}, {})
        self.losses: list[LossParts] = []
        self.total = settings.total_steps(len(train))

    # ---------------------------------------------------------------- one optimizer step
    def _forward(self, batch_step: int) -> LossParts:
        s = self.settings
        batch = make_batch(self.train, batch_step, s.seed, s.batch_size, s.images_each_step, s.prompts,
                           self.size, self.low_res)
        feats = self.features.features([self.train[i] for i in batch.images], grad=True)
        feats = feats.select(batch.image_index.to(self.device))
        coords, labels = batch.coords.to(self.device), batch.labels.to(self.device)
        target = batch.target.to(self.device)
        multimask = batch.kind == "point"
        with _autocast(self.device, s.precision):
            out = self.model.decode(feats, coords, labels, multimask=multimask)
        parts = sam_loss(out.low_res_logits, out.iou, out.object_score, target)
        total = parts.total
        rng = step_rng(s.seed, batch_step, stream=1)
        for _ in range(s.corrections):  # the next click where the last prediction was wrong, with its mask
            best = out.low_res_logits.gather(1, out.iou.argmax(-1)[:, None, None, None].expand(
                -1, 1, *out.low_res_logits.shape[-2:])).detach()
            click, click_label = correction_clicks(rng, best, target, self.size)
            coords = torch.cat([coords, click.to(self.device)], 1)
            labels = torch.cat([labels, click_label.to(self.device)], 1)
            with _autocast(self.device, s.precision):
                out = self.model.decode(feats, coords, labels, mask_logits=best.float(), multimask=False)
            more = sam_loss(out.low_res_logits, out.iou, out.object_score, target)
            total = total + more.total
        parts.total = total / (1 + s.corrections)
        return parts

    def lr_factor(self, step: int) -> float:
        """Warm-up, then constant or cosine down to 0.1 at ``total`` (a resumed run with another
        number of steps follows the new schedule from where it is)."""
        s = self.settings
        warm = min(1.0, (step + 1) / max(1, s.warmup))
        if s.schedule == "constant":
            return warm
        return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / max(1, self.total)))))

    def step(self, step: int) -> None:
        s = self.settings
        for group in self.optimizer.param_groups:
            group["lr"] = group["scale"] * s.learning_rate * self.lr_factor(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.mask_decoder.train()  # token 0 for single-mask prompts (no stability switch)
        try:
            for micro in range(s.accumulate):
                parts = self._forward(step * s.accumulate + micro)
                (parts.total / s.accumulate).backward()
                parts.total = parts.total.detach()  # keep the number, not the graph
                self.losses.append(parts)
        finally:
            self.model.mask_decoder.eval()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    # ---------------------------------------------------------------- bookkeeping
    def evaluate(self) -> EvalMetrics | None:
        return evaluate(self.model, self.features, self.val) if self.val else None

    def snapshot(self, step: int, seconds: float) -> None:
        st = self.state
        st.step, st.seconds = step, seconds
        st.trainable = trained_tensors(self.model, self.names)
        st.optimizer = self.optimizer.state_dict()
        save_state(self.out, st)

    def restore(self, saved: RunState) -> None:
        load_tensors(self.model, saved.trainable)
        self.optimizer.load_state_dict(saved.optimizer)
        self.state = saved


def _fingerprint(settings: FinetuneSettings, base: EdgeTam, records: list[TrainImage]) -> str:
    import hashlib

    from ..runtime.weights import weights_digest

    h = hashlib.blake2b(digest_size=12)
    h.update(settings.fingerprint().encode())
    h.update(weights_digest(base, prefixes=("",)).encode())
    for r in records:
        h.update(f"{r.name}|{r.image.shape}|{len(r.masks)}".encode())
    return h.hexdigest()


def _write_model(run: _Run, base_label: str, base: EdgeTam) -> None:
    """The current weights of ``run`` as a checkpoint in ``run.out`` (merged, or as an adapter)."""
    from ..io.checkpoint import save_model

    if run.settings.train == "lora":
        from ..modeling.lora import LoRAConfig, merge_lora

        if not run.settings.merge_lora:
            from ..io.adapter import save_adapter

            cfg = LoRAConfig(rank=run.settings.lora_rank, alpha=run.settings.lora_alpha)
            if base_label == "an in-memory model":  # the adapter needs a base it can name
                save_model(base, run.out / "base")
                base_label = "base"
            save_adapter(run.model, run.out, base=base_label, config=cfg)
            return
        save_model(merge_lora(copy.deepcopy(run.model)), run.out)
        return
    save_model(run.model, run.out)


def finetune(model_or_source: Any, data: Any, out: Any, train: str = "decoder", steps: int | None = None,
             epochs: int | None = None, *, mask_field: str | None = None, resume: bool = True,
             device: str | torch.device | None = None, progress: Any = None, cancel: Any = None,
             log: Callable[[str], None] | None = None, base_name: str | None = None,
             **options: Any) -> FinetuneResult:
    """Fine-tune ``model_or_source`` (an EdgeTam or a checkpoint source) on ``data`` and write the
    best checkpoint to the folder ``out``. See ``FinetuneSettings`` for ``options`` (batch_size, lr,
    val_fraction, patience, seed, prompts, corrections, accumulate, precision, lora_rank, ...).

    data: a folder with images/ and labels/, a COCO .json, a FiftyOne dataset or view (with
    ``mask_field``: a Detections field whose detections have masks), ``CellImages``, or a pair
    (images, labels). resume: continue the run saved in ``out`` (same settings, base and data).
    progress / cancel: as everywhere (``ek.Cancelled`` is raised after the state is saved; the
    best checkpoint so far stays in ``out``). log: called with one line per validation. base_name:
    how the model card and a LoRA adapter name the base (default: the source string)."""
    try:
        settings = FinetuneSettings(train=train, steps=steps, epochs=epochs, **options)
    except TypeError as exc:
        raise TypeError(f"finetune: {exc}".replace("FinetuneSettings.__init__()", "finetune()")) from None
    check_progress_cancel(progress, cancel)
    say = log or (lambda line: None)
    out_path = prepare_out(out, resume)
    dataset = load_data(data, mask_field=mask_field, min_area=settings.min_area)
    train_set, val_set = split(dataset, settings.val_fraction, settings.seed)
    base, base_label = base_model(model_or_source, device)
    base_label = base_name or base_label
    fingerprint = _fingerprint(settings, base, dataset.images)
    model = copy.deepcopy(base) if settings.train == "lora" and not settings.merge_lora else base
    names = select_trainable(model, settings)
    run = _Run(model, names, train_set, val_set, settings, out_path, fingerprint)

    saved = load_state(out_path) if resume else None
    if not resume:
        clear_state(out_path)
    if saved is not None and saved.fingerprint != fingerprint:
        raise ValueError(f"resume: {out_path} holds a run with other settings, base weights or data; pass "
                         "resume=False to start over there, or another out folder")
    resumed_from = saved.step if saved is not None else None
    if saved is not None:
        run.restore(saved)
    total = settings.total_steps(len(train_set))
    interval = settings.eval_interval(len(train_set))
    every = settings.checkpoint_every or interval
    per_epoch = max(1, -(-len(train_set) // (settings.images_each_step * settings.accumulate)))
    say(f"fine-tuning '{settings.train}' on {len(train_set)} images ({len(val_set)} for validation, "
        f"{dataset.n_objects} objects) from {dataset.source}: {total} steps"
        + (f", resumed at step {resumed_from}" if resumed_from else ""))
    def caching(done: int, n: int) -> None:  # encoding every image once can take minutes: cancel works there too
        if is_cancelled(cancel):
            raise Cancelled(f"fine-tuning cancelled while encoding the images ({done} of {n}); nothing was trained")

    run.features.warm(train_set + val_set, progress=caching)
    started = time.perf_counter() - run.state.seconds
    if not run.state.history:
        metrics = run.evaluate()
        if metrics is not None:
            run.state.history.append(EvalRecord(0, 0.0, metrics.iou, metrics.calibration_error, None, None,
                                                round(time.perf_counter() - started, 3)))
            say(f"step 0: validation IoU {metrics.iou:.3f} (calibration error {metrics.calibration_error:.3f})")
    initial = run.state.history[0].val_iou if run.state.history else None
    stopped_early = False
    step = run.state.step
    try:
        while step < total:
            if is_cancelled(cancel):
                raise Cancelled(f"fine-tuning cancelled at step {step}; the best checkpoint so far is in {out_path}, "
                                "and the run resumes from its saved state")
            run.step(step)
            step += 1
            report(progress, step, total)
            if step % interval == 0 or step == total:
                stopped_early = _validate(run, step, per_epoch, started, base_label, base, dataset, say)
            if step % every == 0 or step == total or stopped_early:
                if not val_set:  # no validation: the last weights are the last good checkpoint
                    _write_model(run, base_label, base)
                run.snapshot(step, time.perf_counter() - started)
            if stopped_early:
                break
    except (Cancelled, KeyboardInterrupt):
        run.snapshot(step, time.perf_counter() - started)
        raise
    st = run.state
    if not val_set or st.best is None:  # no validation: the last weights are the result
        st.best, st.best_step = trained_tensors(model, names), step
        _write_model(run, base_label, base)
    _card(run, base_label, dataset, step)
    load_tensors(model, st.best)
    if settings.train == "lora" and not settings.merge_lora:
        from ..io.checkpoint import load_model

        final = load_model(out_path, device=run.device)
    else:
        final = model
        if settings.train == "lora":
            from ..modeling.lora import merge_lora

            final = merge_lora(model)
        from ..runtime.backends import optimize

        optimize(final.eval())
    return FinetuneResult(final, out_path, settings.train, step, initial, st.best_iou, st.best_step, stopped_early,
                          resumed_from, round(time.perf_counter() - started, 3), list(st.history))


def _validate(run: _Run, step: int, per_epoch: int, started: float, base_label: str, base: EdgeTam,
              dataset: Any, say: Callable[[str], None]) -> bool:
    """Validate, keep and write the weights when they are the best so far; True to stop early."""
    losses, run.losses = run.losses, []
    loss = sum(float(p.total) for p in losses) / len(losses) if losses else None
    train_iou = sum(p.train_iou for p in losses) / len(losses) if losses else None
    metrics = run.evaluate()
    st = run.state
    if metrics is None:
        return False
    st.history.append(EvalRecord(step, round(step / per_epoch, 3), metrics.iou, metrics.calibration_error, loss,
                                 train_iou, round(time.perf_counter() - started, 3)))
    say(f"step {step}: validation IoU {metrics.iou:.3f} (calibration error {metrics.calibration_error:.3f}), "
        f"train loss {loss if loss is None else round(loss, 4)}")
    if st.best_iou is None or (not math.isnan(metrics.iou) and metrics.iou > st.best_iou):
        st.best, st.best_step, st.best_iou = trained_tensors(run.model, run.names), step, metrics.iou
        _write_model(run, base_label, base)
        _card(run, base_label, dataset, step)
        return False
    patience = run.settings.patience
    since = sum(1 for r in st.history if r.step > (st.best_step or 0))
    return patience is not None and since >= patience


def _card(run: _Run, base_label: str, dataset: Any, step: int) -> None:
    from ..io.checkpoint import random_weights_of

    st = run.state
    write_card(run.out, base=base_label, data=dataset.source, n_train=len(run.train), n_val=len(run.val),
               n_objects=dataset.n_objects, settings=run.settings, history=st.history,
               initial_iou=st.history[0].val_iou if st.history else None, best_step=st.best_step,
               best_iou=st.best_iou, steps_done=step, random_base=random_weights_of(run.model),
               adapter=run.settings.train == "lora" and not run.settings.merge_lora)
