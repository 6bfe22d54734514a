"""Reading fastai callbacks: flags, handlers, docstrings and source locations, without calling them."""
from __future__ import annotations

import functools
import inspect
import re
import types
from typing import Any, Iterable

from fastai.callback.core import Callback

from loopviz.model import CallbackInfo, Handler, Mode, SourceRef

__all__ = ["callback_info", "find_handler", "overrides_call", "handler_names", "skip_reason"]

# Docstrings that say nothing about what a handler does: the base classes' and functools.partial's.
_GENERIC_DOCS = {
    inspect.cleandoc(doc)
    for doc in (
        functools.partial.__doc__, Callback.__doc__, Callback.__call__.__doc__, object.__doc__,
        type.__doc__, types.MethodType.__doc__, types.FunctionType.__doc__,
    )
    if doc
}
_BASE_CLASSES = {cls for cls in Callback.__mro__}
_EVENT_LIKE = re.compile(r"^(before|after)_[a-z0-9_]+$")


def _clean_doc(doc: str | None) -> str:
    """A docstring tidied for display, or '' when it is missing or generic."""
    if not doc:
        return ""
    doc = inspect.cleandoc(doc)
    return "" if doc in _GENERIC_DOCS else doc


def _own_doc(obj: Any) -> str:
    """The object's own docstring (not inherited), or '' when missing or generic."""
    return _clean_doc(getattr(obj, "__doc__", None) if not isinstance(obj, type) else obj.__dict__.get("__doc__"))


def _target_function(handler: Any) -> Any:
    """The user-written function behind a handler: unwraps bound methods, partials and decorators.

    For `partial(helper, f)` (as fastai's `before_batch_cb(f)` builds) whose helper has no docstring,
    the wrapped `f` is the meaningful target.
    """
    obj = handler
    for _ in range(10):  # wrappers nest a few levels at most; the bound guards against cycles
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            inner = [a for a in obj.args if callable(a) and not isinstance(a, type)]
            obj = obj.func if _own_doc(obj.func) or not inner else inner[0]
        elif hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__
        else:
            break
    return obj


def _source(obj: Any) -> SourceRef | None:
    """File and first line of a function's code, or None for builtins and C callables."""
    code = getattr(obj, "__code__", None)
    if code is None and callable(obj) and not isinstance(obj, type):
        code = getattr(getattr(type(obj), "__call__", None), "__code__", None)
    if code is None:
        return None
    return SourceRef(code.co_filename, code.co_firstlineno)


def _class_doc(cls: type) -> str:
    """The callback class's docstring, inherited from a parent callback if needed, never the base's."""
    for klass in cls.__mro__:
        if klass in _BASE_CLASSES:
            break
        doc = _own_doc(klass)
        if doc:
            return doc
    return ""


def overrides_call(cb: Callback) -> bool:
    """True when the callback's class replaces `Callback.__call__` (it then receives every event)."""
    return type(cb).__call__ is not Callback.__call__


def callback_info(cb: Callback) -> CallbackInfo:
    """The static facts about one callback instance."""
    cls = type(cb)
    return CallbackInfo(
        name=str(getattr(cb, "name", cls.__name__)),
        cls=cls.__name__,
        module=cls.__module__,
        order=getattr(cb, "order", 0),
        run=bool(getattr(cb, "run", True)),
        run_train=bool(getattr(cb, "run_train", True)),
        run_valid=bool(getattr(cb, "run_valid", True)),
        doc=_class_doc(cls),
        overrides_call=overrides_call(cb),
    )


def _lookup(cb: Callback, event: str, learn: Any) -> tuple[Any, str] | None:
    """The handler fastai would call for `event`, and how it was found; None when there is none."""
    if event in cb.__dict__:
        return cb.__dict__[event], "instance"
    for klass in type(cb).__mro__:
        if event in klass.__dict__:
            return getattr(cb, event), "method"
    # Callback inherits GetAttr: an unknown public name is looked up on the learner (then the model).
    if not event.startswith("_") and learn is not None and hasattr(learn, event):
        return getattr(learn, event), "delegated"
    return None


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


def _describe(info: CallbackInfo, handler: Any, bound: Any) -> tuple[str, str, SourceRef | None]:
    """Docstring, where it came from, and source location for one handler."""
    target = _target_function(handler)
    doc = _own_doc(target)
    if doc:
        return doc, "handler", _source(target)
    inherited = _clean_doc(inspect.getdoc(bound)) if isinstance(bound, types.MethodType) else ""
    if inherited and not isinstance(handler, functools.partial):
        return inherited, "inherited", _source(target)
    if info.doc:
        return info.doc, "class", _source(target)
    return "(no docstring)", "none", _source(target)


def find_handler(
    cb: Callback, info: CallbackInfo, event: str, mode: Mode | None, inner_loop: Iterable[str], learn: Any
) -> Handler | None:
    """The callback's handler for `event` in `mode`, or None when the callback has none."""
    if info.overrides_call:
        call = type(cb).__call__
        doc = _own_doc(call) or info.doc or "(no docstring)"
        source = "handler" if _own_doc(call) else ("class" if info.doc else "none")
        return Handler(info, doc, source, _source(call), via="call")  # type: ignore[arg-type]
    found = _lookup(cb, event, learn)
    if found is None:
        return None
    handler, via = found
    raw = handler.__func__ if isinstance(handler, types.MethodType) else handler
    doc, doc_source, src = _describe(info, raw, handler)
    training = None if mode is None else mode == "train"
    skipped = skip_reason(info.run, info.run_train, info.run_valid, event, training, inner_loop)
    return Handler(info, doc, doc_source, src, via=via, skipped=skipped)  # type: ignore[arg-type]


def handler_names(cb: Callback) -> set[str]:
    """Names of the callback's event-like handlers (`before_*`/`after_*`), own or inherited."""
    names = {n for n in cb.__dict__ if _EVENT_LIKE.match(n) and callable(cb.__dict__[n])}
    for klass in type(cb).__mro__:
        if klass in _BASE_CLASSES:
            break
        names |= {n for n, v in klass.__dict__.items() if _EVENT_LIKE.match(n) and _is_callable_attr(v)}
    return names


def _is_callable_attr(value: Any) -> bool:
    """True for functions, methods and other callables stored on a class (not properties)."""
    return isinstance(value, (staticmethod, classmethod)) or (callable(value) and not isinstance(value, type))

