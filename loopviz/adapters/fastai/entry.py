"""The fastai adapter's entry points, as `loopviz.adapters.ADAPTERS` expects them (this module imports fastai)."""
from __future__ import annotations

from typing import Any, Sequence

import fastai.callback.all  # noqa: F401  (as in a notebook: ProgressCallback joins the default callbacks)
from fastai.callback.core import Callback
from fastai.learner import Learner

from loopviz.adapters.fastai import patch as _patch  # noqa: F401  (patches Learner)
from loopviz.adapters.fastai.spec import LOOPS, build_spec
from loopviz.adapters.fastai.tracer import TraceSession
from loopviz.errors import LoopvizError
from loopviz.model import LoopSpec
from loopviz.trace.trace import Trace

__all__ = ["LOOPS", "loop_spec", "trace", "fit", "callback", "default_target"]


def loop_spec(learn: Learner, loop: str = "fit", cbs: Sequence[Any] = ()) -> LoopSpec:
    """The loop `learn` would run, with `cbs` previewed."""
    return build_spec(learn, loop=loop, cbs=list(cbs))


def trace(learn: Learner, **options: Any) -> Trace:
    """`learn.trace(**options)`: the `Trace` of what runs inside `with` it (or between its start() and stop())."""
    return TraceSession(learn, **options).trace


def fit(learn: Learner, epochs: int, cbs: Sequence[Any] = ()) -> None:
    """`learn.fit(epochs, cbs=cbs)`."""
    learn.fit(epochs, cbs=list(cbs))


def callback(name: str) -> Callback:
    """A callback instance from `module:Class`, or a fastai callback class name such as GradientClip."""
    import importlib

    module_name, _, cls_name = name.rpartition(":")
    try:
        module = importlib.import_module(module_name or "fastai.callback.all")
    except ImportError as e:
        raise LoopvizError(f"--cbs {name}: cannot import module {module_name!r} ({e}).") from e
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        raise LoopvizError(f"--cbs {name}: not a fastai Callback class (use module:Class, or a fastai callback name).")
    try:
        return cls()
    except TypeError as e:
        raise LoopvizError(f"--cbs {name}: cannot create {cls_name}() without arguments ({e}).") from e


def default_target() -> Learner:
    """fastai's synthetic regression learner: tiny, on the CPU, no download."""
    from fastai.test_utils import synth_learner

    return synth_learner()
