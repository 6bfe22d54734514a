"""loopviz: see what a training loop does — its events, the callbacks at each, in order, with their docs.

Importing loopviz patches fastai's `Learner` with `show_training_loop(verbose=..., cbs=..., loop=...)`,
`loop_spec(...)` and `trace(...)`: at once when fastai is already imported, else as soon as it is. Importing
loopviz itself is cheap: fastai, torch, pandas, matplotlib and graphviz are imported only by the
features that need them, so `loopviz --help`, `report` and `diff` start fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from loopviz.adapters.fastai.hook import patch_fastai_when_imported
from loopviz.annotate import annotate  # eager: a lazy name would lose to the submodule of the same name
from loopviz.diff import TraceDiff, diff, diff_traces  # likewise
from loopviz.errors import FormatError, GraphvizNotFound, LoopvizError
from loopviz.model import CallbackInfo, CancelPath, Event, Handler, LoopSpec, Phase, SourceRef, Work

__version__ = "0.1.0"

# Public names defined in modules that are imported on first use: name -> module.
_LAZY: dict[str, str] = {
    "LoopDiagram": "loopviz.diagram",
    "focus": "loopviz.processors", "hide_empty": "loopviz.processors",
    "dot_graph": "loopviz.renderers.dot",
    "render_mermaid": "loopviz.renderers.mermaid",
    "RichLoop": "loopviz.renderers.rich_tree", "rich_tree": "loopviz.renderers.rich_tree",
    "render_text": "loopviz.renderers.text",
    "CudaEventClock": "loopviz.trace.clock", "HostClock": "loopviz.trace.clock", "SyncClock": "loopviz.trace.clock",
    "Recorder": "loopviz.trace.record",
    "Trace": "loopviz.trace.trace",
    "Loop": "loopviz.loop",
    "MergedTrace": "loopviz.trace.merge", "merge": "loopviz.trace.merge",
    "LoopView": "loopviz.view", "show_loop": "loopviz.view",
    "show": "loopviz.targets", "tracing": "loopviz.targets", "spec_of": "loopviz.targets",
}

__all__ = [
    "CallbackInfo", "CancelPath", "Event", "FormatError", "GraphvizNotFound", "Handler", "LoopSpec", "LoopvizError",
    "Phase", "SourceRef", "Work", "TraceDiff", "annotate", "diff", "diff_traces", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loopviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext loopviz` in IPython or Jupyter: `%%loopviz` traces what a cell runs and shows the trace."""
    from loopviz.magics import load_ipython_extension as load

    load(ipython)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


patch_fastai_when_imported()
