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
    return not _is_fastai_learner(obj) and not _is_lightning(obj) and all(callable(getattr(obj, m, None)) for m in ("callback", "fit")) \
        and hasattr(obj, "cbs")


def _is_hf_trainer(obj: Any) -> bool:
    return _has_base(obj, "transformers.trainer", "Trainer")


def _is_lightning(obj: Any) -> bool:
    """A Lightning Trainer or LightningModule (`lightning.pytorch` or the older `pytorch_lightning` package)."""
    return any(_has_base(obj, f"{package}.{module}", name) for package in ("lightning.pytorch", "pytorch_lightning")
               for module, name in (("trainer.trainer", "Trainer"), ("core.module", "LightningModule")))


@dataclass(frozen=True)
class Adapter:
    """One framework's loop: its name, how to recognise its trainer objects, and its module."""

    name: str
    describes: str  # what it recognises, for error messages
    recognises: Callable[[Any], bool]
    module: str
    extra: str = ""  # the pip extra that installs its framework: `pip install loopviz[extra]`

    def load(self) -> ModuleType:
        """The adapter's module, imported now (with its framework); a clear error saying what to install when the
        framework is missing."""
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            if not self.extra or e.name is None or e.name.startswith("loopviz"):
                raise
            from loopviz.errors import LoopvizError

            raise LoopvizError(f"loopviz's {self.name} adapter needs {e.name!r}, which is not installed: "
                               f"pip install 'loopviz[{self.extra}]'.") from None


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("fastai", "a fastai Learner", _is_fastai_learner, "loopviz.adapters.fastai.entry"),
    Adapter("miniai", "a miniai-style learner", _is_miniai_learner, "loopviz.adapters.miniai"),
    Adapter("transformers", "a Hugging Face Trainer", _is_hf_trainer, "loopviz.adapters.transformers", "transformers"),
    Adapter("lightning", "a Lightning Trainer or LightningModule", _is_lightning, "loopviz.adapters.lightning",
            "lightning"),
)


def adapter_for(obj: Any) -> Adapter | None:
    """The first adapter that recognises `obj`, or None."""
    return next((a for a in ADAPTERS if a.recognises(obj)), None)


def known_loops() -> str:
    """What the adapters recognise, for messages: 'a fastai Learner, ... or a Lightning Trainer or LightningModule'."""
    named = [a.describes for a in ADAPTERS]
    return ", ".join(named[:-1]) + f" or {named[-1]}" if len(named) > 1 else named[0]
