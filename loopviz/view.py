"""`LoopView`: what `show_training_loop` returns, a printed loop whose `str()` is the text."""
from __future__ import annotations

from loopviz.model import LoopSpec
from loopviz.renderers.text import DEFAULT_WIDTH, render_text

__all__ = ["LoopView"]


class LoopView:
    """A `LoopSpec` rendered as text; `str(view)` is the text, `view.spec` the data behind it."""

    def __init__(self, spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH):
        self.spec = spec
        self.verbose = verbose
        self.width = width
        self.text = render_text(spec, verbose=verbose, width=width)
        self.printed = False

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        if self.printed:
            n_events = len(self.spec.event_names())
            return f"<LoopView: {self.spec.loop} loop, {n_events} events, {len(self.spec.callbacks)} callbacks; print() it for the text>"
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoopView) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def show(self) -> "LoopView":
        """Print the text (once is what `show_training_loop` does) and return self."""
        print(self.text)
        self.printed = True
        return self

    def _ipython_display_(self) -> None:
        """In notebooks: show the text, unless `show_training_loop` already printed it."""
        if not self.printed:
            print(self.text)
