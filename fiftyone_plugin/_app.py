"""Helpers the plugin's operators share: results and their App view, progress, targets, and the
checkpoint box (kept apart so each module of the plugin stays small)."""

from __future__ import annotations

import time

import fiftyone.operators.types as types


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


def _target_view(ctx, target):
    if target == "SELECTED_SAMPLES":
        return ctx.view.select(ctx.selected)
    if target == "CURRENT_VIEW":
        return ctx.view
    return ctx.dataset


class _Every:
    """Throttle: ``due(done, total)`` is true at most once per ``every_s`` seconds, and always for
    the last step."""

    def __init__(self, every_s):
        self.every_s, self.last = every_s, float("-inf")

    def due(self, done, total):
        now = time.monotonic()
        if done == total or now - self.last >= self.every_s:
            self.last = now
            return True
        return False


def _progress_args(done, total, what):
    """``set_progress`` keyword arguments for ``done`` of ``total`` ``what``."""
    return {"progress": done / total if total else 1.0, "label": f"{done}/{total} {what}"}


def _progress(ctx, what, every_s=1.0):
    """A progress(done, total) callback that tells the context at most once per ``every_s``."""
    every = _Every(every_s)

    def report(done, total):
        if every.due(done, total):
            ctx.set_progress(**_progress_args(done, total, what))

    return report


def _checkpoint_input(inputs, ctx):
    """The checkpoint box: a named one, the dataset's fine-tuned folders, or any path / hub id."""
    from edgetam_kit.fiftyone.registry import checkpoint_choices

    choices = types.AutocompleteView()
    for value, label in checkpoint_choices(ctx.dataset):
        choices.add_choice(value, label=label)
    inputs.str("checkpoint", label="Checkpoint", default="edgetam", view=choices,
               description="A registered name (edgetam), a folder fine-tuned on this dataset, a local HF folder / "
                           "edgetam.pt path, or a hub id")


def _stream_progress(ctx, steps, what, every_s=0.5):
    """Drain a generator of (done, total) as App progress messages, at most one per ``every_s``
    (and the last); returns the generator's return value (use with ``yield from``)."""
    every = _Every(every_s)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if every.due(done, total):
            yield ctx.ops.set_progress(**_progress_args(done, total, what))
