"""fastai's side of callback introspection: its `Callback` base class, its delegation to the learner and
its run predicate. The reading itself (handlers, docs, sources) is `loopviz.introspect`'s."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from fastai.callback.core import Callback

from loopviz import introspect
from loopviz.model import CallbackInfo, Handler, Mode

__all__ = ["BASE_CLASSES", "callback_info", "delegates", "find_handler", "has_handler", "overrides_call",
           "handler_names", "skip_reason"]

# fastai's callback base class: its docs (and its parents') describe fastai, never a callback.
BASE_CLASSES: tuple[type, ...] = (Callback,)


def delegates(learn: Any) -> tuple[Any, ...]:
    """Where a callback's unknown public attribute goes (fastcore `GetAttr`): the learner, then its model."""
    if learn is None:
        return ()
    model = getattr(learn, "model", None)
    return (learn,) if model is None else (learn, model)


def overrides_call(cb: Callback) -> bool:
    """True when the callback's class replaces `Callback.__call__` (it then receives every event)."""
    return introspect.overrides_call(cb, Callback)


def callback_info(cb: Callback) -> CallbackInfo:
    """The static facts about one callback instance."""
    return introspect.callback_info(cb, base_classes=BASE_CLASSES)


def has_handler(cb: Callback, event: str, learn: Any) -> bool:
    """True when fastai's call of `cb` for `event` reaches a handler: own, inherited, delegated to the
    learner or its model, or a replaced `__call__`."""
    return introspect.has_handler(cb, event, delegates=delegates(learn), call_base=Callback)


def skip_reason(run: bool, run_train: bool, run_valid: bool, event: str, training: bool | None,
                inner_loop: Iterable[str]) -> str | None:
    """Why fastai's `Callback.__call__` would not run a handler (its `_run` predicate), or None when it runs.

    `training` is None outside the train/valid batch loops, where run_train/run_valid do not apply.
    """
    if not run:
        return "run=False"
    if event in inner_loop and training is True and not run_train:
        return "run_train=False"
    if event in inner_loop and training is False and not run_valid:
        return "run_valid=False"
    return None


def find_handler(
    cb: Callback, info: CallbackInfo, event: str, mode: Mode | None, inner_loop: Iterable[str], learn: Any
) -> Handler | None:
    """The callback's handler for `event` in `mode`, or None when the callback has none."""
    handler = introspect.handler_for(cb, event, info, base_classes=BASE_CLASSES, delegates=delegates(learn),
                                     call_base=Callback)
    if handler is None or handler.via == "call":
        return handler
    training = None if mode is None else mode == "train"
    skipped = skip_reason(info.run, info.run_train, info.run_valid, event, training, inner_loop)
    return handler if skipped is None else replace(handler, skipped=skipped)


def handler_names(cb: Callback) -> set[str]:
    """Names of the callback's event-like handlers (`before_*`/`after_*`), own or inherited."""
    return introspect.handler_names(cb, BASE_CLASSES)
