"""An adapter for miniai-style learners (the fastai course's hand-written Learner), built on `loopviz.generic`.

Such a learner dispatches every event by name through `learn.callback(name)`; `with_cbs(nm)` wraps
each phase as before_nm, the body, after_nm (skipped when Cancel{Nm}Exception is raised) and
cleanup_nm (always); callbacks run in `order`, and their handlers take the learner. The training
steps (predict, get_loss, backward, step, zero_grad) are themselves events dispatched to callbacks,
unless the learner's class defines them as methods; then they are work between events.

    spec = miniai_spec(learn)              # every view: render_text(spec, verbose=True), LoopDiagram(spec)...
    with trace_miniai(learn) as t:         # a Trace, like a fastai one
        learn.fit(1)
"""
from __future__ import annotations

import importlib
from operator import attrgetter
from typing import Any, Sequence

from loopviz.errors import LoopvizError
from loopviz.generic import DispatchTracer, cancel, event, phase, work
from loopviz.generic import loop_spec as generic_loop_spec
from loopviz.model import LoopSpec, Mode, Phase, Step
from loopviz.trace.trace import Trace

__all__ = ["miniai_spec", "trace_miniai", "STEPS", "LOOPS", "loop_spec", "trace", "fit", "callback"]

LOOPS = ("fit",)

STEPS = ("predict", "get_loss", "backward", "step", "zero_grad")
_DESCRIPTIONS = {
    "before_fit": "Start of fit: learn.epochs and learn.opt are set.",
    "after_fit": "End of fit; skipped when CancelFitException was raised.",
    "cleanup_fit": "Always runs last, cancelled or not (a finally block).",
    "before_epoch": "Start of a pass over learn.dl, once for training and once for validation (see learn.training).",
    "after_epoch": "End of the pass; skipped when CancelEpochException was raised.",
    "cleanup_epoch": "Always runs at the end of the pass.",
    "before_batch": "learn.batch holds the batch; learn.iter its index.",
    "after_predict": "learn.preds holds the predictions.",
    "after_loss": "learn.loss holds the loss.",
    "after_backward": "Training only: gradients are computed.",
    "after_step": "Training only: the optimizer stepped.",
    "after_batch": "End of the batch; skipped when CancelBatchException was raised.",
    "cleanup_batch": "Always runs at the end of the batch.",
}
_STEP_CODE = {"predict": "learn.preds = learn.model(learn.batch[0])", "get_loss": "learn.loss = learn.loss_func(...)",
              "backward": "learn.loss.backward()", "step": "learn.opt.step()", "zero_grad": "learn.opt.zero_grad()"}


def _own_step(learn: Any, name: str) -> bool:
    """True when the learner's class defines the step as a method (then it is work, not an event)."""
    return any(name in klass.__dict__ for klass in type(learn).__mro__ if klass is not object)


def miniai_spec(learn: Any, cbs: Sequence[Any] = (), base: type | None = None) -> LoopSpec:
    """The loop a miniai-style learner runs in `fit`, with `cbs` previewed (nothing is attached)."""
    callbacks = sorted([*learn.cbs, *cbs], key=attrgetter("order"))

    def ev(name: str, mode: Mode | None, role: str = "body") -> Any:
        return event(name, _DESCRIPTIONS.get(name, "Dispatched to the callbacks by learn.callback."), callbacks,
                     mode=mode, role=role, base=base)  # type: ignore[arg-type]

    def step(name: str, mode: Mode) -> Step:
        if _own_step(learn, name):
            return work(name, f"learn.{name}()", f"{type(learn).__name__}.{name} does this step itself.")
        return event(name, f"A training step, dispatched to the callbacks ({_STEP_CODE[name]} in TrainCB).", callbacks,
                     mode=mode, base=base)

    def with_cbs(nm: str, label: str, body: list[Step], mode: Mode | None, repeat: str | None = None) -> Phase:
        path = cancel(f"Cancel{nm.title()}Exception", f"cleanup_{nm}",
                      description=f"the rest of the {nm} and after_{nm} are skipped")
        steps = [ev(f"before_{nm}", mode, "enter"), *body, ev(f"after_{nm}", mode), ev(f"cleanup_{nm}", mode, "exit")]
        return phase(nm, label, steps, repeat=repeat, cancel=path, mode=mode)

    def batch(mode: Mode) -> Phase:
        body: list[Step] = [step("predict", mode), ev("after_predict", mode), step("get_loss", mode), ev("after_loss", mode)]
        if mode == "train":
            body += [step("backward", mode), ev("after_backward", mode), step("step", mode), ev("after_step", mode),
                     step("zero_grad", mode)]
        return with_cbs("batch", "Batch Loop", body, mode, repeat=f"for each batch of learn.dl ({mode})")

    epochs = phase("epochs", "Epoch Loop", [
        with_cbs("epoch", "Epoch (train)", [batch("train")], "train"),
        with_cbs("epoch", "Epoch (valid)", [batch("valid")], "valid"),
    ], repeat="for each epoch in learn.epochs")
    fit = with_cbs("fit", "Fit", [epochs], None)
    return generic_loop_spec("fit", "miniai-style learner", callbacks, [fit], base=base)


def _mode(learn: Any, name: str) -> int:
    if name.endswith("_fit"):
        return 0
    return 1 if learn.training else 2


def trace_miniai(learn: Any, **kwargs: Any) -> DispatchTracer:
    """A context manager tracing `learn.callback` and the callbacks' handlers; gives a `Trace`."""
    names = {("before_batch", "after_predict"): "predict", ("after_predict", "after_loss"): "loss",
             ("after_loss", "after_backward"): "backward", ("after_backward", "after_step"): "step",
             ("after_step", "after_batch"): "zero_grad", ("cleanup_batch", "before_batch"): "draw",
             ("before_epoch", "before_batch"): "draw", ("cleanup_batch", "after_epoch"): "draw"}
    return DispatchTracer(learn, "callback", callbacks=lambda: learn.cbs, framework="miniai-style learner",
                          loop_start=("before_fit",), mode=_mode, work_names=names, **kwargs)


# -- the adapter's entry points (see loopviz.adapters) -------------------------------------------


def loop_spec(learn: Any, loop: str = "fit", cbs: Sequence[Any] = ()) -> LoopSpec:
    """The loop a miniai-style learner runs (only `fit`), with `cbs` previewed."""
    if loop not in LOOPS:
        raise LoopvizError(f"loop={loop!r}: a miniai-style learner has only these loops: {', '.join(LOOPS)}.")
    return miniai_spec(learn, cbs)


def trace(learn: Any, clock: str = "auto", changes: bool = False, waits: bool = False, live: bool = False,
          **options: Any) -> Trace:
    """The `Trace` of the learner's dispatch inside `with` it (or between its start() and stop()) (`clock` as for
    fastai; no state changes, waits or live view)."""
    from loopviz.trace.clock import make_clock

    if live:
        raise LoopvizError("the live view (live=True) shows on fastai's, Lightning's and the Trainer's progress bars; "
                           "a miniai-style learner has none: trace it without live, and read the trace after.")
    if changes:
        raise LoopvizError("state changes are recorded for fastai learners only; trace without changes.")
    if waits:
        raise LoopvizError("waits for the GPU are recorded for fastai learners only; trace without waits.")
    return trace_miniai(learn, clock=make_clock(clock), **options).trace


def fit(learn: Any, epochs: int, cbs: Sequence[Any] = ()) -> None:
    """`learn.fit(epochs, cbs=cbs)`."""
    learn.fit(epochs, cbs=list(cbs))


def callback(name: str) -> Any:
    """A callback instance from `module:Class`."""
    module_name, _, cls_name = name.rpartition(":")
    if not module_name:
        raise LoopvizError(f"--cbs {name}: give a miniai-style callback as module:Class.")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if not isinstance(cls, type):
        raise LoopvizError(f"--cbs {name}: {module_name} has no class {cls_name}.")
    return cls()
