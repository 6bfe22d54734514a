"""The fastai adapter: builds loop specs from a `Learner` and patches `Learner.show_training_loop`."""
from __future__ import annotations

from loopviz.adapters.fastai.spec import LOOPS, build_spec, preview_callbacks

__all__ = ["LOOPS", "build_spec", "preview_callbacks"]

from loopviz.adapters.fastai import tracer as _tracer  # noqa: E402,F401  (patches Learner.trace)
