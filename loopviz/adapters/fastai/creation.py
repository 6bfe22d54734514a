"""Which callbacks each fastai `Learner` was built with: the only ones its after_create reached.

fastai fires after_create once, at the end of `Learner.__init__`; callbacks added later (`add_cb`) never
receive it. `record_creations()` wraps `Learner.__init__` so that loopviz remembers, for every learner
created from then on, the callbacks it held at the end of `__init__`. They are kept in a module-level
weak mapping: nothing is stored on the learner, so `learn.export()` pickles no loopviz object, and a
learner that is garbage-collected is forgotten.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

from fastai.callback.core import Callback
from fastai.learner import Learner

__all__ = ["record_creations", "built_with"]

_BUILT_WITH: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Callback]] = weakref.WeakKeyDictionary()
_MARK = "_loopviz_records_creation"


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """`Learner.__init__`, then a note of the callbacks it ended with; same signature and docs as `init`."""

    @functools.wraps(init)
    def __init__(self: Learner, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        _BUILT_WITH[self] = weakref.WeakSet(self.cbs)

    setattr(__init__, _MARK, True)
    return __init__


def record_creations() -> None:
    """Wrap `Learner.__init__` to remember the callbacks of every learner created from now on (idempotent)."""
    if not getattr(Learner.__init__, _MARK, False):
        Learner.__init__ = _recording(Learner.__init__)  # type: ignore[method-assign]


def built_with(learn: Any) -> weakref.WeakSet[Callback] | None:
    """The callbacks `learn` held when its `Learner.__init__` fired after_create, or None when loopviz did not
    see it created (made before loopviz patched fastai, or loaded with `load_learner`)."""
    try:
        return _BUILT_WITH.get(learn)
    except TypeError:  # not weak-referenceable, so not a learner loopviz saw created
        return None
