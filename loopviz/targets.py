"""`loopviz.show(obj)` and `loopviz.tracing(obj)`: any loop loopviz has an adapter for (a fastai Learner, a
miniai-style learner, a Hugging Face Trainer, a Lightning Trainer), through the adapter that recognises it.

    loopviz.show(trainer)                           # the loop as text; fmt='rich', 'mermaid', 'graphviz'...
    loopviz.show(trainer, loop='evaluate', verbose=True, cbs=[MyCallback()])
    with loopviz.tracing(trainer) as t:             # every event, callback call and the work between them
        trainer.train()
    loopviz.show(trainer, fmt='graphviz', trace=t)  # the loop it ran, with its counts and times
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from loopviz.adapters import Adapter, adapter_for, known_loops
from loopviz.errors import LoopvizError
from loopviz.model import LoopSpec
from loopviz.renderers.text import DEFAULT_WIDTH

__all__ = ["show", "tracing", "spec_of", "adapter_of"]


def adapter_of(obj: Any) -> Adapter:
    """The adapter that recognises `obj`; a clear error naming what loopviz knows when none does."""
    adapter = adapter_for(obj)
    if adapter is None:
        raise LoopvizError(f"loopviz has no adapter for a {type(obj).__name__}: it shows and traces {known_loops()}.")
    return adapter


def spec_of(obj: Any, loop: str | None = None, cbs: Sequence[Any] = (), model: Any = None) -> LoopSpec:
    """The loop `obj` runs (`loop`: one of its adapter's `LOOPS`, the first by default), with `cbs` previewed;
    `model`: the model a trainer that holds none yet will run (Lightning)."""
    adapter = adapter_of(obj)
    module = adapter.load()
    chosen = loop or next(iter(module.LOOPS))
    if model is None:
        return module.loop_spec(obj, chosen, list(cbs))
    if "model" not in inspect.signature(module.loop_spec).parameters:
        raise LoopvizError(f"model= is for a trainer that runs a model it does not hold yet (a Lightning Trainer); "
                           f"{adapter.describes} holds its own model: leave model= out.")
    return module.loop_spec(obj, chosen, list(cbs), model=model)


def show(obj: Any, loop: str | None = None, cbs: Sequence[Any] = (), verbose: bool = False, fmt: str = "text",
         width: int = DEFAULT_WIDTH, hide_empty: bool = False, focus: str | None = None, theme: str = "light",
         trace: Any = None, model: Any = None) -> Any:
    """Show the loop `obj` runs, as `learn.show_training_loop` does for fastai: text, rich and mermaid are printed
    and returned; graphviz (svg, png, pdf, dot) is returned as a diagram to display or save. `trace`: a trace of
    `obj` (`with loopviz.tracing(obj) as t`) whose counts and times the view shows; `loop` is then the loop it ran,
    unless given (a trace of another loop is an error naming both). `model`: with a Lightning Trainer that has not
    run it yet, the module its loop will run (`loopviz.show(trainer, model=model)`)."""
    from loopviz.annotate import traced_loop
    from loopviz.trace.trace import check_trace
    from loopviz.view import check_view_options, show_loop

    check_view_options(verbose=verbose, fmt=fmt, width=width, hide_empty=hide_empty, focus=focus)
    check_trace("trace", trace, optional=True)
    if loop is None and trace is not None:
        known = adapter_of(obj).load().LOOPS
        loop = traced_loop(trace, known, next(iter(known)))
    return show_loop(spec_of(obj, loop, cbs, model), verbose=verbose, fmt=fmt, width=width, hide_empty=hide_empty,
                     focus=focus, theme=theme, trace=trace)


def tracing(obj: Any, **options: Any) -> Any:
    """A context manager recording what `obj` runs inside it; `with loopviz.tracing(obj) as t:` gives the `Trace`
    (`loopviz.trace` is the package of traces, so the function has this name).
    The options are those of the adapter (for fastai, `learn.trace`'s: clock, changes, ranges, waits...)."""
    return adapter_of(obj).load().trace(obj, **options)
