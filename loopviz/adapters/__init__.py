"""The loops loopviz knows, in one table: which objects each adapter recognises, and the module that does the work.

An adapter module provides four functions, imported only when an object of its framework is used:
`loop_spec(obj, loop, cbs) -> LoopSpec`, `trace(obj, **options)` (a context manager giving a `Trace`),
`fit(obj, epochs, cbs)` and `callback(name)` (a callback instance from a name the command line was given),
plus `LOOPS`, the loops it can describe, and `default_target()` (a small built-in object to show when
none is given; only the first adapter's is used). To add an adapter: write `loopviz/adapters/<name>.py`
with those functions and add its row to `ADAPTERS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["Adapter", "ADAPTERS", "adapter_for", "known_loops"]


def _has_base(obj: Any, module: str, name: str) -> bool:
    """True when a class called `module.name` is in the type's MRO (compared by name: nothing is imported)."""
    return any(k.__module__ == module and k.__name__ == name for k in type(obj).__mro__)


def _is_fastai_learner(obj: Any) -> bool:
    return _has_base(obj, "fastai.learner", "Learner")


def _is_miniai_learner(obj: Any) -> bool:
    """A miniai-style learner: dispatches events through `callback(name)`, keeps `cbs`, and can `fit`."""
    return not _is_fastai_learner(obj) and all(callable(getattr(obj, m, None)) for m in ("callback", "fit")) \
        and hasattr(obj, "cbs")


@dataclass(frozen=True)
class Adapter:
    """One framework's loop: its name, how to recognise its trainer objects, and its module."""

    name: str
    describes: str  # what it recognises, for error messages
    recognises: Callable[[Any], bool]
    module: str

    def load(self) -> ModuleType:
        """The adapter's module, imported now (with its framework)."""
        return importlib.import_module(self.module)


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("fastai", "a fastai Learner", _is_fastai_learner, "loopviz.adapters.fastai.entry"),
    Adapter("miniai", "a miniai-style learner", _is_miniai_learner, "loopviz.adapters.miniai"),
)


def adapter_for(obj: Any) -> Adapter | None:
    """The first adapter that recognises `obj`, or None."""
    return next((a for a in ADAPTERS if a.recognises(obj)), None)


def known_loops() -> str:
    """What the adapters recognise, for messages: 'a fastai Learner or a miniai-style learner'."""
    return " or ".join(a.describes for a in ADAPTERS)
