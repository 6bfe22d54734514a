"""loopviz: see what a training loop does — its events, the callbacks at each, in order, with their docs.

Importing loopviz patches fastai's `Learner` with `show_training_loop(verbose=..., cbs=..., loop=...)`
and `loop_spec(...)`.
"""
from __future__ import annotations

from loopviz.diagram import LoopDiagram
from loopviz.errors import GraphvizNotFound, LoopvizError
from loopviz.model import CallbackInfo, CancelPath, Event, Handler, LoopSpec, Phase, SourceRef, Work
from loopviz.processors import focus, hide_empty
from loopviz.renderers.dot import dot_graph
from loopviz.renderers.mermaid import render_mermaid
from loopviz.renderers.rich_tree import RichLoop, rich_tree
from loopviz.renderers.text import render_text
from loopviz.trace.clock import CudaEventClock, HostClock, SyncClock
from loopviz.trace.record import Recorder
from loopviz.trace.trace import Trace
from loopviz.annotate import annotate
from loopviz.diff import TraceDiff, diff, diff_traces
from loopviz.loop import Loop
from loopviz.trace.merge import MergedTrace, merge
from loopviz.view import LoopView, show_loop

__version__ = "0.1.0"

__all__ = [
    "CallbackInfo", "CancelPath", "Event", "GraphvizNotFound", "Handler", "LoopDiagram", "LoopSpec",
    "LoopView", "LoopvizError", "Phase", "RichLoop", "SourceRef", "Work", "dot_graph", "focus",
    "hide_empty", "render_mermaid", "render_text", "rich_tree", "show_loop", "__version__",
    "Trace", "Recorder", "HostClock", "SyncClock", "CudaEventClock", "annotate", "diff", "diff_traces", "TraceDiff", "Loop", "merge", "MergedTrace",
]

try:
    import fastai.learner  # noqa: F401  (only to know whether fastai is installed)
except ImportError:  # pragma: no cover - fastai is a core dependency; other loops still work without it
    pass
else:
    from loopviz.adapters.fastai import patch as _fastai_patch  # noqa: F401  (applies the Learner patch)
