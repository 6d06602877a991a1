"""The ``finetune`` operator: fine-tune a checkpoint on a Detections-with-masks field; the folder
it writes is registered with the dataset and offered as a checkpoint by the other operators."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._app import (_checkpoint_input, _from_app, _mark_error, _progress, _stream_progress, _stream_result,
                   _target_view)

DESCRIPTION = "Fine-tune EdgeTAM on the instance masks of a Detections field"


class Finetune(foo.Operator):
    """Fine-tune a checkpoint on a Detections-with-masks field (``edgetam_kit.fiftyone.finetune``)."""

    NAME = "finetune"
    LABEL = "EdgeTAM: fine-tune on my masks"

    @property
    def config(self):
        return foo.OperatorConfig(name=self.NAME, label=self.LABEL, description=DESCRIPTION,
                                  dynamic=True, execute_as_generator=True, allow_immediate_execution=True,
                                  allow_delegated_execution=True, view_target=False)

    def resolve_placement(self, ctx):
        if ctx.dataset is None or ctx.dataset.media_type != "image":
            return None
        return types.Placement(types.Places.SAMPLES_GRID_SECONDARY_ACTIONS, types.Button(label=self.LABEL, prompt=True))

    def resolve_delegation(self, ctx):
        return True if ctx.params.get("delegate", False) else None

    def resolve_input(self, ctx):
        from edgetam_kit.fiftyone.finetune import TRAIN_MODES, mask_fields, parse_finetune_params, suggest_output_dir

        inputs = types.Object()
        _checkpoint_input(inputs, ctx)
        targets = types.RadioGroup()
        for value, label, shown in (("DATASET", "Entire dataset", True), ("CURRENT_VIEW", "Current view",
                                    ctx.has_custom_view), ("SELECTED_SAMPLES", "Selected samples", bool(ctx.selected))):
            if shown:
                targets.add_choice(value, label=label)
        inputs.str("target", label="Target", view=targets, default="SELECTED_SAMPLES" if ctx.selected else
                   ("CURRENT_VIEW" if ctx.has_custom_view else "DATASET"))
        fields = types.Dropdown()
        for name in mask_fields(ctx.dataset):
            fields.add_choice(name, label=name)
        inputs.str("mask_field", label="Mask field", required=True, view=fields,
                   description="Detections whose masks are the ground truth to learn from")
        modes = types.RadioGroup()
        for mode in TRAIN_MODES:
            modes.add_choice(mode, label=mode)
        inputs.str("train", label="Train", default="decoder", view=modes,
                   description="decoder (fast), lora (adapters in the encoder too) or all")
        inputs.int("steps", label="Steps", default=200, min=1, description="Optimizer steps (empty: 10 epochs)")
        inputs.str("output_dir", label="Output folder", default=suggest_output_dir(ctx.dataset) if ctx.dataset else None,
                   description="Where the checkpoint is written (new or empty; a cancelled run's folder resumes it)")
        inputs.str("device", label="Device", default="auto", description="auto, cpu, cuda, cuda:N or mps")
        inputs.bool("delegate", label="Delegate", default=False,
                    description="Queue for `fiftyone delegated launch` workers instead of running now")
        try:
            parse_finetune_params(dict(ctx.params), ctx.dataset, bool(ctx.selected), ctx.has_custom_view)
        except ValueError as e:
            _mark_error(inputs, str(e))
        return types.Property(inputs, view=types.View(label=self.LABEL))

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("message", label="Summary")
        outputs.str("path", label="Checkpoint folder")
        outputs.float("initial_iou", label="Validation IoU before")
        outputs.float("best_iou", label="Validation IoU after")
        outputs.int("steps_done", label="Steps")
        outputs.float("seconds", label="Time (s)")
        return types.Property(outputs, view=types.View(label=f"{self.LABEL}: done"))

    def execute(self, ctx):
        """Validates, then trains: streamed to the App with progress, or to the end with
        ``ctx.set_progress`` (delegated runs, headless ``execute_operator``)."""
        from edgetam_kit.fiftyone.checks import resolve_device
        from edgetam_kit.fiftyone.finetune import iter_finetune, parse_finetune_params
        from edgetam_kit.fiftyone.runner import run_steps

        p = parse_finetune_params(dict(ctx.params), ctx.dataset, bool(ctx.selected), ctx.has_custom_view)
        p.device = resolve_device(p.device)
        steps = iter_finetune(_target_view(ctx, p.target), p)
        if _from_app(ctx) and not ctx.delegated:
            return self._stream(ctx, steps)
        return run_steps(steps, _progress(ctx, "steps"))

    def _stream(self, ctx, steps):
        yield ctx.ops.set_progress(progress=0.0, label="preparing: reading the masks, first validation")
        result = yield from _stream_progress(ctx, steps, "steps")
        yield from _stream_result(ctx, self, result)
