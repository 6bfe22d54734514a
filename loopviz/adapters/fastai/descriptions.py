"""What each fastai event, cancel path and piece of loop work means, in loopviz's own words.

Checked against fastai 2.8.12 (`fastai/learner.py`, `fastai/callback/core.py`). Where fastai's
docs are wrong (after_cancel_train resumes at after_train; the event is after_cancel_validate),
these texts follow the code.
"""
from __future__ import annotations

from loopviz.model import Work

__all__ = ["EVENT_DESCRIPTIONS", "WORK", "WORK_BETWEEN", "CANCEL_DESCRIPTIONS", "describe_event"]

EVENT_DESCRIPTIONS: dict[str, str] = {
    "after_create": (
        "Fires once, at the end of Learner.__init__. Callbacks added later (add_cb, fit(cbs=...)) "
        "never receive it."
    ),
    "before_fit": (
        "Start of fit: the optimizer exists and lr/wd are set, nothing is trained yet. "
        "validate() and get_preds() fire it too, on entering `with learn:`. From here a callback can switch "
        "itself off (run=False) until after_fit; loopviz marks the fastai callbacks known to do so in "
        "before_fit (trackers and ShowGraphCallback under lr_find and get_preds), not what other code "
        "decides at run time."
    ),
    "before_epoch": "Start of an epoch; learn.epoch holds its index.",
    "before_train": (
        "Start of the training part of the epoch; learn.dl is dls.train. "
        "TrainEvalCallback switches the model to train mode here."
    ),
    "before_batch": (
        "A batch was drawn, moved to the model's device and split into learn.xb and learn.yb; "
        "learn.iter is set. Callbacks may replace xb/yb here (augmentation, casting)."
    ),
    "after_pred": "The model ran: learn.pred = learn.model(*learn.xb). Callbacks may change learn.pred.",
    "after_loss": (
        "The loss was computed (only when there are targets): learn.loss_grad keeps the graph, "
        "learn.loss is a clone for logging. In validation, and with no targets, the batch ends after this."
    ),
    "before_backward": "Training only: just before learn.loss_grad.backward(); loss_grad may still be changed.",
    "after_cancel_backward": (
        "Only when CancelBackwardException is raised in before_backward or during backward: "
        "the backward pass was cut short; goes on to after_backward."
    ),
    "after_backward": "Training only: gradients are computed; the optimizer has not stepped yet.",
    "before_step": "Training only: just before learn.opt.step(); gradients can be clipped or inspected.",
    "after_cancel_step": (
        "Only when CancelStepException is raised in before_step (MixedPrecision does so when the "
        "grad scaler skips a step): the step was skipped; goes on to after_step, and zero_grad still runs."
    ),
    "after_step": "Training only: the optimizer stepped; learn.opt.zero_grad() follows, with no event.",
    "after_cancel_batch": (
        "Only when CancelBatchException is raised during the batch: the rest of the batch, zero_grad "
        "included, was skipped; goes on to after_batch."
    ),
    "after_batch": (
        "End of a batch, cancelled or not. TrainEvalCallback and Recorder update counters and the "
        "smoothed loss here."
    ),
    "after_cancel_train": (
        "Only when CancelTrainException is raised during the training part: goes on to after_train "
        "(not to after_epoch, as fastai's docs say)."
    ),
    "after_train": "End of the training part of the epoch; validation comes next.",
    "before_validate": (
        "Start of validation: learn.dl is the validation DataLoader and gradients are off "
        "(torch.no_grad). TrainEvalCallback switches the model to eval mode here."
    ),
    "after_cancel_validate": (
        "Only when CancelValidException is raised during validation (LRFinder does so in "
        "before_validate): goes on to after_validate."
    ),
    "after_validate": "End of validation; the epoch's metrics are final.",
    "after_cancel_epoch": "Only when CancelEpochException is raised during the epoch: goes on to after_epoch.",
    "after_epoch": (
        "End of an epoch, cancelled or not. Recorder logs the epoch's results; trackers such as "
        "SaveModelCallback and EarlyStoppingCallback act here."
    ),
    "after_cancel_fit": (
        "Only when CancelFitException is raised during fit (EarlyStoppingCallback, LRFinder, "
        "TerminateOnNaNCallback): goes on to after_fit."
    ),
    "after_fit": (
        "End of fit, cancelled or not. Callbacks switched off with run=False are switched back on; "
        "then fastai clears dl, xb, yb, pred and loss."
    ),
}

CANCEL_DESCRIPTIONS: dict[str, str] = {
    "fit": "the rest of fit is skipped",
    "epoch": "the rest of this epoch is skipped, validation included",
    "train": "the rest of the training part of this epoch is skipped",
    "validate": "the rest of validation is skipped",
    "batch": "the rest of this batch is skipped",
    "backward": "the backward pass is cut short",
    "step": "the optimizer step is skipped",
}

WORK: dict[str, Work] = {
    "draw": Work(
        "draw", "b = next(dl); learn.xb, learn.yb = split(to_device(b))",
        "Data loading: the next batch from learn.dl, moved to the model's device and split into "
        "xb/yb. No event marks it, and a CancelBatchException cannot skip it.",
    ),
    "forward": Work("forward", "learn.pred = learn.model(*learn.xb)", "The model's forward pass."),
    "loss": Work(
        "loss", "learn.loss_grad = learn.loss_func(learn.pred, *learn.yb); learn.loss = learn.loss_grad.clone()",
        "The loss, kept with its graph for backward, and a clone for logging.",
        condition="only when the batch has targets (len(yb) > 0)",
    ),
    "backward": Work("backward", "learn.loss_grad.backward()", "Gradients of the loss."),
    "step": Work("step", "learn.opt.step()", "The optimizer updates the parameters."),
    "zero_grad": Work(
        "zero_grad", "learn.opt.zero_grad()", "Gradients are reset, with no event of its own.",
        condition="skipped when the batch is cancelled",
    ),
    "freeze": Work("freeze", "learn.freeze()", "Only the last parameter group will train."),
    "unfreeze": Work("unfreeze", "learn.unfreeze()", "Every parameter group will train."),
    "cleanup": Work(
        "cleanup", "learn._end_cleanup()", "learn.dl, xb, yb, pred and loss are cleared.",
        condition="skipped when after_fit raises",
    ),
}


# The work fastai does between two consecutive events (same loop, same nesting level), as a trace sees it.
WORK_BETWEEN: dict[tuple[str, str], str] = {
    ("before_batch", "after_pred"): "forward",
    ("after_pred", "after_loss"): "loss",
    ("before_backward", "after_backward"): "backward",
    ("before_backward", "after_cancel_backward"): "backward",
    ("before_step", "after_step"): "step",
    ("before_step", "after_cancel_step"): "step",
    ("after_step", "after_batch"): "zero_grad",
    ("after_batch", "before_batch"): "draw",
    ("before_train", "before_batch"): "draw",
    ("before_validate", "before_batch"): "draw",
    ("after_batch", "after_train"): "draw",  # the data loader's last next(), which ends the loop
    ("after_batch", "after_validate"): "draw",
    ("before_train", "after_train"): "draw",
    ("before_validate", "after_validate"): "draw",
}


def _work_after() -> dict[str, str]:
    """The work that follows each event, where only one can (after before_batch, always forward)."""
    names: dict[str, set[str]] = {}
    for (first, _), name in WORK_BETWEEN.items():
        names.setdefault(first, set()).add(name)
    return {first: next(iter(found)) for first, found in names.items() if len(found) == 1}


# event -> the work after it (a range opened as that work starts, before the next event is known, is named so)
WORK_AFTER: dict[str, str] = _work_after()


def describe_event(name: str) -> str:
    """Our description of a fastai event; a clear stand-in for events fastai added after 2.8."""
    return EVENT_DESCRIPTIONS.get(name, f"An event of this fastai version that loopviz has no description for: {name}.")
