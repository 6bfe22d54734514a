"""Where fastai users meet loopviz: `Learner.show_training_loop` and `Learner.loop_spec`, patched on import."""
from __future__ import annotations

from fastai.learner import Learner
from fastcore.basics import patch

from loopviz.adapters.fastai.spec import build_spec
from loopviz.model import LoopSpec
from loopviz.renderers.text import DEFAULT_WIDTH
from loopviz.view import LoopView

__all__ = ["loop_spec", "show_training_loop"]


@patch
def loop_spec(
    self: Learner,
    loop: str = "fit",  # Which loop: 'fit', 'fit_one_cycle', 'fine_tune', 'validate', 'get_preds' or 'lr_find'
    cbs=None,  # Callbacks (instances or classes) to preview as if passed to `fit(cbs=...)`; the learner is not changed
) -> LoopSpec:
    "The loop this learner would run, as loopviz's data model: phases, events, callbacks and their docs"
    return build_spec(self, loop=loop, cbs=cbs)


@patch
def show_training_loop(
    self: Learner,
    verbose: bool = False,  # Add each event's description, the work between events, and every callback's order, source and doc
    cbs=None,  # Callbacks (instances or classes) to preview as if passed to `fit(cbs=...)`; the learner is not changed
    loop: str = "fit",  # Which loop: 'fit', 'fit_one_cycle', 'fine_tune', 'validate', 'get_preds' or 'lr_find'
    width: int = DEFAULT_WIDTH,  # Wrap verbose text at this many characters
) -> LoopView:
    "Show each step in the training loop, with the callbacks that really run there"
    return LoopView(build_spec(self, loop=loop, cbs=cbs), verbose=verbose, width=width).show()
