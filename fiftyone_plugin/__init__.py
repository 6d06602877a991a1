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

import fiftyone.operators as foo
import fiftyone.operators.types as types

from ._app import (_checkpoint_input, _from_app, _mark_error, _progress, _result, _stream_progress, _stream_result,
                   _target_view)
from .finetune_operator import Finetune

_DESCRIPTIONS = {
    "segment_with_prompts": "Instance masks from the boxes or keypoints of a prompt field",
    "auto_segment": "Masks for everything in each image (automatic mask generator)",
    "track_objects": "Track objects prompted on any video frames through every frame, both directions",
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
        summary = yield from _stream_progress(ctx, steps, "videos" if self.VIDEO else "images")
        result = _result(self, summary, p)
        yield ctx.ops.reload_dataset()
        yield from _stream_result(ctx, self, result)

    def steps(self, ctx, view, p):
        raise NotImplementedError


_SUMMARY_FIELDS = (("processed", "Samples labelled"), ("skipped", "Skipped (already labelled)"),
                   ("in_shard", "Samples in this shard"), ("masks", "Masks written"), ("frames", "Frames labelled"),
                   ("seconds", "Time (s)"), ("per_second", "Samples per second"))


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


def register(p):
    p.register(SegmentWithPrompts)
    p.register(AutoSegment)
    p.register(TrackObjects)
    p.register(Finetune)
