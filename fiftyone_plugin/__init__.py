"""FiftyOne plugin ``@edgetam/edgetam-kit``: EdgeTAM masks from the App or headless.

Operators (thin adapters over ``edgetam_kit.fiftyone``; the engine is imported on first use,
so loading the plugin stays cheap for the App server):

- ``segment_with_prompts``: boxes (Detections) or points (Keypoints) -> instance masks
- ``auto_segment``: masks for everything in each image
- ``track_objects``: prompts on any frames of videos -> tracks on every frame, both directions
- ``finetune``: fine-tune a checkpoint on a Detections-with-masks field; the folder it writes is
  registered with the dataset and offered as a checkpoint by the other operators

Common parameters: ``checkpoint``, ``target`` (DATASET, CURRENT_VIEW, SELECTED_SAMPLES),
``prompt_field``, ``label_field``, ``output_dir``, ``skip_existing`` (default true),
``batch_size``, ``device``; scale-out: ``num_shards`` (queue that many delegated runs, one per
shard) and ``shard`` (the shard one run processes); ``delegate`` forces delegated execution.
"""

from __future__ import annotations

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

_DESCRIPTIONS = {
    "segment_with_prompts": "Instance masks from the boxes or keypoints of a prompt field",
    "auto_segment": "Masks for everything in each image (automatic mask generator)",
    "track_objects": "Track objects prompted on any video frames through every frame, both directions",
    "finetune": "Fine-tune EdgeTAM on the instance masks of a Detections field",
}


class _EdgeTamOperator(foo.Operator):
    """Shared inputs, validation, delegation, progress and results of the three operators."""

    NAME = ""
    LABEL = ""
    VIDEO = False

    @property
    def config(self):
        return foo.OperatorConfig(
            name=self.NAME,
            label=self.LABEL,
            description=_DESCRIPTIONS[self.NAME],
            dynamic=True,
            execute_as_generator=True,  # the App streams progress; headless/delegated runs return the summary
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            view_target=False,  # our own ``target`` parameter
        )

    # ---------------------------------------------------------------- where the operator shows
    def resolve_placement(self, ctx):
        """A button over the samples grid, only on datasets whose media the operator handles."""
        if ctx.dataset is None or ctx.dataset.media_type != ("video" if self.VIDEO else "image"):
            return None
        return types.Placement(types.Places.SAMPLES_GRID_SECONDARY_ACTIONS,
                               types.Button(label=self.LABEL, prompt=True))

    def resolve_delegation(self, ctx):
        return True if ctx.params.get("delegate", False) else None

    def resolve_run_name(self, ctx):
        """Names queued runs by what they do and where: 'EdgeTAM segment_with_prompts -> masks (shard 2/4)'."""
        params = ctx.params
        label_field = params.get("label_field") or _default_label_field(self.NAME)
        name = f"EdgeTAM {self.NAME} -> {'frames.' if self.VIDEO else ''}{label_field}"
        shard, num = params.get("shard"), params.get("num_shards") or 1
        if shard is not None and shard != "" and num > 1:
            name += f" (shard {int(shard) + 1}/{num})"
        return name

    # ---------------------------------------------------------------- inputs
    def resolve_input(self, ctx):
        inputs = types.Object()
        video = self.VIDEO
        _checkpoint_input(inputs, ctx)
        targets = types.RadioGroup()
        targets.add_choice("DATASET", label="Entire dataset")
        if ctx.has_custom_view:
            targets.add_choice("CURRENT_VIEW", label="Current view")
        if ctx.selected:
            targets.add_choice("SELECTED_SAMPLES", label="Selected samples")
        inputs.str("target", label="Target", view=targets,
                   default="SELECTED_SAMPLES" if ctx.selected else ("CURRENT_VIEW" if ctx.has_custom_view
                                                                    else "DATASET"))
        if self.NAME != "auto_segment":
            choices = types.AutocompleteView()
            for name in _prompt_fields(ctx.dataset, video, ctx.params.get("label_field")):
                choices.add_choice(name, label=name)
            inputs.str("prompt_field", label="Prompt field", required=False, view=choices,
                       description="Detections (boxes) or Keypoints (points)"
                                   + ("; a frames.<name> field, prompts on any frame" if video else ""))
        inputs.str("label_field", label="Label field", default=_default_label_field(self.NAME),
                   description="Where masks are written (Detections)" + (" (frames.<label_field>)" if video else ""))
        inputs.str("output_dir", label="Mask folder", required=False,
                   description="Write masks as PNG files here (mask_path); empty: store masks in the database")
        inputs.bool("skip_existing", label="Skip samples already labelled", default=True)
        if not video:
            inputs.int("batch_size", label="Batch size", default=1, min=1,
                       description="Images encoded per engine call")
        inputs.str("device", label="Device", default="auto",
                   description="auto (CUDA when the machine running it has it, else CPU), cpu, cuda, cuda:1, mps; "
                               "checked where the run executes")
        if self.NAME == "auto_segment":
            inputs.int("points_per_side", label="Points per side", default=32, min=1)
            inputs.float("pred_iou_thresh", label="Predicted IoU threshold", default=0.8, min=0, max=1)
            inputs.float("stability_score_thresh", label="Stability threshold", default=0.95, min=0, max=1)
            inputs.int("min_mask_region_area", label="Min region area (pixels)", default=0, min=0)
        inputs.int("num_shards", label="Shards", default=1, min=1,
                   description="Split a delegated run into this many operations (one per worker)")
        inputs.int("shard", label="Shard", required=False, min=0,
                   description="Process only this shard (0..num_shards-1); empty with Shards > 1: queue all")
        inputs.bool("delegate", label="Delegate", default=False,
                    description="Queue for `fiftyone delegated launch` workers instead of running now")
        try:
            p, _ = _parse(ctx, self.NAME)
        except ValueError as e:
            _mark_error(inputs, str(e))
        else:
            from edgetam_kit.fiftyone.checks import check_device_name, cuda_here

            device = check_device_name(p.device)
            if device.startswith("cuda") and not ctx.params.get("delegate") and not cuda_here():
                inputs.view("notice", types.Warning(
                    label="No CUDA on this App server",
                    description=f"device {device!r}: tick Delegate so that a GPU worker runs it "
                                "(the device is checked where the run executes)"))
        return types.Property(inputs, view=types.View(label=self.LABEL))

    def resolve_output(self, ctx):
        outputs = types.Object()
        results = ctx.results or {}
        if "queued" in results:
            outputs.str("message", label="Queued")
            outputs.list("queued", types.String(), label="Delegated operations")
            return types.Property(outputs, view=types.View(label="EdgeTAM: runs queued"))
        outputs.str("message", label="Summary")
        for key, label in _SUMMARY_FIELDS:
            if key == "frames" and not self.VIDEO:
                continue
            outputs.float(key, label=label) if key in ("seconds", "per_second") else outputs.int(key, label=label)
        if results.get("hint"):
            outputs.view("hint", types.Warning(label="No masks", description=results["hint"]))
        return types.Property(outputs, view=types.View(label=f"{self.LABEL}: done"))

    # ---------------------------------------------------------------- execution
    def execute(self, ctx):
        """Validates (nothing is written on failure), then either queues one delegated run per
        shard, or runs: streamed to the App with progress (immediate App runs), or to the end
        with ``ctx.set_progress`` (delegated runs, headless ``execute_operator``)."""
        from edgetam_kit.fiftyone.checks import resolve_device
        from edgetam_kit.fiftyone.params import queue_shards

        p, view = _parse(ctx, self.NAME)
        if p.num_shards > 1 and p.shard is None:
            ids = queue_shards(self.uri, view, p)
            result = {"queued": ids, "num_shards": p.num_shards,
                      "message": f"{len(ids)} runs queued, one per shard: start `fiftyone delegated launch` workers"}
            return _stream_result(ctx, self, result) if _from_app(ctx) else result
        p.device = resolve_device(p.device)  # where the run executes: the worker, or this App server
        steps = self.steps(ctx, view, p)
        if _from_app(ctx) and not ctx.delegated:
            return self._stream(ctx, steps, p)
        from edgetam_kit.fiftyone.runner import run_steps

        summary = run_steps(steps, _progress(ctx, "videos" if self.VIDEO else "images"))
        try:
            ctx.trigger("reload_dataset")
        except ValueError:  # no executor (some headless contexts)
            pass
        return _result(self, summary, p)

    def _stream(self, ctx, steps, p):
        """The run as a generator of App messages: progress bar, then reload, notification, summary."""
        what = "videos" if self.VIDEO else "images"
        last = float("-inf")
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                summary = stop.value
                break
            now = time.monotonic()
            if done == total or now - last >= 0.5:
                last = now
                yield ctx.ops.set_progress(progress=done / total if total else 1.0, label=f"{done}/{total} {what}")
        result = _result(self, summary, p)
        yield ctx.ops.reload_dataset()
        yield from _stream_result(ctx, self, result)

    def steps(self, ctx, view, p):
        raise NotImplementedError


_SUMMARY_FIELDS = (("processed", "Samples labelled"), ("skipped", "Skipped (already labelled)"),
                   ("in_shard", "Samples in this shard"), ("masks", "Masks written"), ("frames", "Frames labelled"),
                   ("seconds", "Time (s)"), ("per_second", "Samples per second"))


def _result(op, summary, p):
    """The run's result dict: the summary's numbers, a one-line message, and a hint when automatic
    masks found nothing."""
    d = summary.to_dict()
    what = "videos" if op.VIDEO else "images"
    msg = (f"{op.LABEL}: {summary.processed} {what} labelled, {summary.skipped} skipped, {summary.masks} masks "
           f"in {summary.seconds:.1f} s ({summary.per_second:.2f} {what}/s)")
    if p.num_shards > 1:
        msg += f", shard {summary.shard + 1}/{summary.num_shards}"
    d["message"] = msg
    if op.NAME == "auto_segment" and summary.processed and not summary.masks:
        d["hint"] = (f"No masks passed the thresholds (pred_iou_thresh={p.auto['pred_iou_thresh']}, "
                     f"stability_score_thresh={p.auto['stability_score_thresh']}, min_mask_region_area="
                     f"{p.auto['min_mask_region_area']}): lower them, or raise points_per_side")
    return d


def _stream_result(ctx, op, result):
    yield ctx.ops.notify(result["message"] + (" - " + result["hint"] if result.get("hint") else ""),
                         variant="warning" if result.get("hint") else "success")
    outputs = op.resolve_output(_WithResults(ctx, result))
    yield ctx.ops.show_output(outputs.to_json(), result)


class _WithResults:
    """The context as ``resolve_output`` sees it after a run (``ctx.results`` set)."""

    def __init__(self, ctx, results):
        self._ctx, self.results = ctx, results

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _from_app(ctx):
    """Whether the request came from the App (its requests carry ``operator_uri``), where generator
    operators stream their messages; headless ``execute_operator`` exhausts generators and keeps
    no result, so it gets the plain result dict."""
    return "operator_uri" in ctx.request_params


def _mark_error(inputs, message):
    """Mark the parameter the message names (its first word) and show the message on top; either
    blocks execution (FiftyOne validates the resolved inputs before running)."""
    name = message.split(" ", 1)[0].rstrip(":")
    prop = inputs.properties.get(name)
    if prop is not None:
        prop.invalid = True
        prop.error_message = message
    banner = inputs.view("error", types.Error(label="Cannot run", description=message))
    banner.invalid = True
    banner.error_message = message


def _default_label_field(name):
    from edgetam_kit.fiftyone.params import DEFAULT_LABEL_FIELD

    return DEFAULT_LABEL_FIELD[name]


def _prompt_fields(dataset, video, label_field=None):
    """Detections/Keypoints fields to offer as prompts, without the fields edgetam-kit wrote."""
    if dataset is None:
        return []
    import fiftyone.core.labels as fol

    from edgetam_kit.fiftyone.checks import is_ours

    kinds = (fol.Detections, fol.Keypoints)
    schema = (dataset.get_frame_field_schema(embedded_doc_type=kinds) or {}) if video else \
        dataset.get_field_schema(embedded_doc_type=kinds)
    skip = {label_field}
    return [f"frames.{k}" if video else k for k, f in schema.items() if not is_ours(f) and k not in skip]


def _parse(ctx, name):
    """(OperatorParams, target view), or ValueError naming the bad parameter."""
    from edgetam_kit.fiftyone.checks import check_target_media
    from edgetam_kit.fiftyone.params import parse_params

    p = parse_params(dict(ctx.params), name, ctx.dataset, has_selection=bool(ctx.selected),
                     has_view=ctx.has_custom_view)
    view = _target_view(ctx, p.target)
    check_target_media(view, name, name == "track_objects")
    return p, view


def _target_view(ctx, target):
    if target == "SELECTED_SAMPLES":
        return ctx.view.select(ctx.selected)
    if target == "CURRENT_VIEW":
        return ctx.view
    return ctx.dataset


def _progress(ctx, what, every_s=1.0):
    """A progress(done, total) callback that tells the context at most once per ``every_s``."""
    last = [float("-inf")]

    def report(done, total):
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            ctx.set_progress(progress=done / total if total else 1.0, label=f"{done}/{total} {what}")

    return report


def _image_steps(view, p, **model_options):
    """Steps of labelling the images of ``view`` with an ``EdgeTamImageModel(**model_options)``."""
    from edgetam_kit.fiftyone import EdgeTamImageModel
    from edgetam_kit.fiftyone.models import cached_model
    from edgetam_kit.fiftyone.runner import iter_label_images

    model = EdgeTamImageModel(checkpoint=p.checkpoint, model=cached_model(p.checkpoint, p.device), device=p.device,
                              **model_options)
    return iter_label_images(view, model, p.label_field, prompt_field=model_options.get("prompt_field"),
                             output_dir=p.output_dir, skip_existing=p.skip_existing, batch_size=p.batch_size,
                             shard=p.shard or 0, num_shards=p.num_shards)


class SegmentWithPrompts(_EdgeTamOperator):
    NAME = "segment_with_prompts"
    LABEL = "EdgeTAM: segment with prompts"

    def steps(self, ctx, view, p):
        return _image_steps(view, p, prompt_field=p.prompt_field)


class AutoSegment(_EdgeTamOperator):
    NAME = "auto_segment"
    LABEL = "EdgeTAM: segment everything"

    def steps(self, ctx, view, p):
        return _image_steps(view, p, mode="auto", auto=p.auto)


class TrackObjects(_EdgeTamOperator):
    NAME = "track_objects"
    LABEL = "EdgeTAM: track objects"
    VIDEO = True

    def steps(self, ctx, view, p):
        from edgetam_kit.fiftyone import EdgeTamVideoModel
        from edgetam_kit.fiftyone.models import cached_model
        from edgetam_kit.fiftyone.runner import iter_label_videos

        model = EdgeTamVideoModel(checkpoint=p.checkpoint, model=cached_model(p.checkpoint, p.device), device=p.device,
                                  prompt_field=p.prompt_field)
        return iter_label_videos(view, model, p.label_field, prompt_field=p.prompt_field, output_dir=p.output_dir,
                                 skip_existing=p.skip_existing, shard=p.shard or 0, num_shards=p.num_shards)


def _checkpoint_input(inputs, ctx):
    """The checkpoint box: a named one, the dataset's fine-tuned folders, or any path / hub id."""
    from edgetam_kit.fiftyone.registry import checkpoint_choices

    choices = types.AutocompleteView()
    for value, label in checkpoint_choices(ctx.dataset):
        choices.add_choice(value, label=label)
    inputs.str("checkpoint", label="Checkpoint", default="edgetam", view=choices,
               description="A registered name (edgetam), a folder fine-tuned on this dataset, a local HF folder / "
                           "edgetam.pt path, or a hub id")


class Finetune(foo.Operator):
    """Fine-tune a checkpoint on a Detections-with-masks field (``edgetam_kit.fiftyone.finetune``)."""

    NAME = "finetune"
    LABEL = "EdgeTAM: fine-tune on my masks"

    @property
    def config(self):
        return foo.OperatorConfig(name=self.NAME, label=self.LABEL, description=_DESCRIPTIONS[self.NAME],
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
        while True:
            try:
                done, total = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            yield ctx.ops.set_progress(progress=done / total if total else 1.0, label=f"step {done}/{total}")
        yield from _stream_result(ctx, self, result)


def register(p):
    p.register(SegmentWithPrompts)
    p.register(AutoSegment)
    p.register(TrackObjects)
    p.register(Finetune)
