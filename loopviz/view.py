"""`LoopView`: what `show_training_loop` returns for text, rich and Mermaid output, and `show_loop`,
the one place that turns a spec into any of loopviz's views."""
from __future__ import annotations

from typing import Union

from rich.console import Console

from loopviz.diagram import LoopDiagram
from loopviz.errors import LoopvizError
from loopviz.model import LoopSpec
from loopviz.processors import narrow
from loopviz.renderers.mermaid import render_mermaid
from loopviz.renderers.rich_tree import RichLoop
from loopviz.renderers.text import DEFAULT_WIDTH, render_text

__all__ = ["LoopView", "FORMATS", "show_loop"]

FORMATS = ("text", "rich", "graphviz", "mermaid")


class LoopView:
    """A loop shown as text, a rich tree or Mermaid: `str(view)` is the text, `view.spec` the data behind it."""

    def __init__(self, spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, fmt: str = "text"):
        self.spec = spec
        self.verbose = verbose
        self.width = width
        self.fmt = fmt
        if fmt == "mermaid":
            self.text = render_mermaid(spec, verbose=verbose)
        else:
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
        return isinstance(other, LoopView) and (self.fmt, self.text) == (other.fmt, other.text)

    def __hash__(self) -> int:
        return hash((self.fmt, self.text))

    def __rich__(self) -> RichLoop:
        return RichLoop(self.spec, verbose=self.verbose)

    def show(self) -> "LoopView":
        """Print the view (a rich tree through rich's console, else the text) and return self."""
        if self.fmt == "rich":
            Console().print(self.__rich__())
        else:
            print(self.text)
        self.printed = True
        return self

    def _ipython_display_(self) -> None:
        """In notebooks: show the view, unless `show_training_loop` already did."""
        if not self.printed:
            self.show()


def show_loop(
    spec: LoopSpec, verbose: bool = False, fmt: str = "text", width: int = DEFAULT_WIDTH,
    hide_empty: bool = False, focus: str | None = None,
) -> Union[LoopView, LoopDiagram]:
    """Any view of a spec: text, rich and mermaid are printed and returned; graphviz is returned to display or save."""
    if fmt not in FORMATS:
        raise LoopvizError(f"fmt={fmt!r} is not a view loopviz has; choose one of: {', '.join(FORMATS)}.")
    spec = narrow(spec, hide_empty, focus)
    if fmt == "graphviz":
        return LoopDiagram(spec, verbose=verbose)
    return LoopView(spec, verbose=verbose, width=width, fmt=fmt).show()
