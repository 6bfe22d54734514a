"""loopviz: see what a training loop does — its events, the callbacks at each, in order, with their docs.

Importing loopviz patches fastai's `Learner` with `show_training_loop(verbose=..., cbs=..., loop=...)`
and `loop_spec(...)`.
"""
from __future__ import annotations

from loopviz.errors import LoopvizError
from loopviz.model import CallbackInfo, CancelPath, Event, Handler, LoopSpec, Phase, SourceRef, Work
from loopviz.renderers.text import render_text
from loopviz.view import LoopView

__version__ = "0.1.0"

__all__ = [
    "CallbackInfo", "CancelPath", "Event", "Handler", "LoopSpec", "LoopView", "LoopvizError", "Phase",
    "SourceRef", "Work", "render_text", "__version__",
]

try:
    import fastai.learner  # noqa: F401  (only to know whether fastai is installed)
except ImportError:  # pragma: no cover - fastai is a core dependency; other loops still work without it
    pass
else:
    from loopviz.adapters.fastai import patch as _fastai_patch  # noqa: F401  (applies the Learner patch)
