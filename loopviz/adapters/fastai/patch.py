"""Where fastai users meet loopviz: `Learner.show_training_loop` and `Learner.loop_spec`, patched on import."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fastai.learner import Learner
from fastcore.basics import patch

from loopviz.adapters.fastai import dataloop as _dataloop  # noqa: F401  (patches Learner.data_loop, show_data_loop)
from loopviz.adapters.fastai import tracer as _tracer  # noqa: F401  (patches Learner.trace)
from loopviz.adapters.fastai.creation import record_creations
from loopviz.adapters.fastai.spec import LOOPS, as_callbacks, build_spec
from loopviz.annotate import traced_loop as first_traced_loop
from loopviz.checks import check_choice
from loopviz.diff import diff as diff_specs
from loopviz.model import LoopSpec
from loopviz.renderers.text import DEFAULT_WIDTH
from loopviz.view import THEMES, LoopView, check_view_options, show_loop

if TYPE_CHECKING:
    from loopviz.diagram import LoopDiagram

__all__ = ["loop_spec", "show_training_loop"]

record_creations()  # from now on, loopviz knows which callbacks each new Learner received after_create


@patch
def loop_spec(
    self: Learner,
    loop: str = "fit",  # Which loop: 'fit', 'fit_one_cycle', 'fine_tune', 'validate', 'get_preds' or 'lr_find'
    cbs=None,  # Callbacks (instances or classes) to preview as if passed to `fit(cbs=...)`; the learner is not changed
    start_epoch: int = 0,  # As in `fit(n_epoch, start_epoch=...)` (fit loops only): preview the SkipToEpoch fastai adds
) -> LoopSpec:
    "The loop this learner would run, as loopviz's data model: phases, events, callbacks and their docs"
    return build_spec(self, loop=loop, cbs=cbs, start_epoch=start_epoch)


def traced_loop(trace) -> str:
    """The loop a trace recorded first ('fine_tune' for 'fine_tune > fit_one_cycle > fit'); 'fit' when it names none."""
    return first_traced_loop(trace, LOOPS, "fit")


@patch
def show_training_loop(
    self: Learner,
    verbose: bool = False,  # Add each event's description, the work between events, and every callback's order, source and doc
    cbs=None,  # Callbacks (instances or classes) to preview as if passed to `fit(cbs=...)`; the learner is not changed
    loop: str | None = None,  # Which loop: 'fit', 'fit_one_cycle', 'fine_tune', 'validate', 'get_preds' or 'lr_find'; default 'fit', or the loop `trace` recorded (a trace of another loop is an error)
    fmt: str = "text",  # A view from loopviz.formats: 'text', 'rich', 'mermaid' (printed) or 'graphviz' (also 'svg', 'png', 'pdf', 'dot': a diagram to display or `.save()`)
    width: int = DEFAULT_WIDTH,  # Wrap verbose text at this many characters
    hide_empty: bool = False,  # Leave out events where no callback runs
    focus: str | None = None,  # Show only this callback (class name, or fastai name such as 'recorder')
    trace=None,  # A `Trace` of this learner (`with learn.trace() as t`): annotate the loop with measured times
    diff=None,  # Callbacks to compare with: show the loop with them added (+), and what they change
    start_epoch: int = 0,  # As in `fit(n_epoch, start_epoch=...)` (fit loops only): preview the SkipToEpoch fastai adds
    theme: str = "light",  # The diagram's colours: 'light', or 'dark' for dark notebooks and pages (transparent background)
) -> LoopView | "LoopDiagram":
    "Show each step in the training loop, with the callbacks that really run there"
    check_view_options(verbose=verbose, fmt=fmt, width=width, hide_empty=hide_empty, focus=focus)
    check_choice("theme", theme, THEMES)
    from loopviz.trace.trace import check_trace

    check_trace("trace", trace, optional=True)
    if loop is None:
        loop = traced_loop(trace) if trace is not None else "fit"
    spec = build_spec(self, loop=loop, cbs=cbs, start_epoch=start_epoch)
    if diff is not None:
        with_diff = build_spec(self, loop=loop, cbs=[*as_callbacks(cbs), *as_callbacks(diff, "diff")],
                               start_epoch=start_epoch)
        spec = diff_specs(spec, with_diff)
    return show_loop(spec, verbose=verbose, fmt=fmt, width=width, hide_empty=hide_empty, focus=focus, theme=theme,
                     trace=trace)
