"""`LoopView`: what `show_training_loop` returns for the printed views (text, rich, Mermaid), and `show_loop`,
the one place that turns a spec into any of loopviz's views, chosen from `loopviz.formats.LOOP_FORMATS`."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Union

from loopviz import formats
from loopviz.checks import check_bool, check_choice, check_int, check_optional_str, check_type
from loopviz.errors import FormatError, LoopvizError
from loopviz.model import LoopSpec
from loopviz.processors import narrow
from loopviz.renderers.text import DEFAULT_WIDTH, render_text

if TYPE_CHECKING:
    from loopviz.diagram import LoopDiagram

__all__ = ["LoopView", "show_loop", "check_view_options", "MIN_WIDTH"]

MIN_WIDTH = 20  # narrower than this, verbose text cannot wrap a callback's name and order


class LoopView:
    """A loop shown as text, a rich tree or Mermaid: `str(view)` is the text, `view.spec` the data behind it."""

    def __init__(self, spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, fmt: str = "text"):
        self.spec = spec
        self.verbose = verbose
        self.width = width
        chosen = formats.find(formats.LOOP_FORMATS, fmt)
        self.fmt = chosen.name
        # the rich view's text is the plain text view: rich draws its tree itself when printed
        self.text = render_text(spec, verbose, width) if self.fmt == "rich" else _render(chosen, spec, verbose, width)
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

    def __rich__(self) -> Any:
        from loopviz.renderers.rich_tree import RichLoop

        return RichLoop(self.spec, verbose=self.verbose)

    _shown_in: int | None = None  # the IPython cell (execution count) that showed the view, if any

    def show(self) -> "LoopView":
        """Print the view (a rich tree through rich's console, else the text) and return self; in a notebook, show
        it as one output (text and HTML)."""
        self._emit()
        self.printed = True
        return self

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, str]:
        """The view as text and HTML (a monospace <pre>, the rich tree's colours for fmt='rich'), in one bundle; the
        Mermaid view as text and Markdown, a ```mermaid block, which JupyterLab (4.1 and later) draws as the chart
        (elsewhere the block shows its source)."""
        if self.fmt == "mermaid":
            return {"text/plain": self.text, "text/markdown": mermaid_markdown(self.text)}
        from loopviz.trace.display import as_html, pre_html

        page = as_html(self.__rich__(), self.width) if self.fmt == "rich" else pre_html(self.text)
        return {"text/plain": self.text, "text/html": page}

    def _ipython_display_(self) -> None:
        """In IPython: show the view once per cell. `show_training_loop()` as a cell's last line has shown it
        already, so the cell's value adds nothing; a view kept in a variable shows again in a later cell."""
        shell = _ipython()
        if shell is None or self._shown_in != shell.execution_count:
            self._emit()

    def _emit(self) -> None:
        """Put the view out once: in a notebook as one display (a bundle), elsewhere printed."""
        shell = _ipython()
        self._shown_in = shell.execution_count if shell is not None else None
        if shell is not None and getattr(shell, "kernel", None) is not None:  # a notebook's kernel, not a terminal
            from IPython.display import display

            display(self._repr_mimebundle_(), raw=True)
        elif self.fmt == "rich":
            from rich.console import Console

            Console(width=_console_width(self.width)).print(self.__rich__())
        else:
            print(self.text)


def mermaid_markdown(chart: str) -> str:
    """A Mermaid chart as a Markdown ```mermaid block (fenced longer than any run of backticks in it)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", chart)), default=0))
    return f"{fence}mermaid\n{chart}\n{fence}\n"


def _console_width(width: int) -> int:
    """The width a rich view is printed at: the one asked for, no wider than a terminal it is printed to (piped, rich
    would take 80 columns whatever was asked)."""
    import shutil
    import sys

    if sys.stdout.isatty():
        return min(width, shutil.get_terminal_size().columns)
    return width


def _ipython() -> Any:
    """The running IPython shell, or None (plain Python; IPython is then not imported)."""
    import sys

    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


THEMES = ("light", "dark")  # the diagram's themes (loopviz.renderers.dot.THEMES; not imported: it needs graphviz)


def _render(fmt: formats.Format, spec: LoopSpec, verbose: bool, width: int) -> str:
    """A printed view's text, from the format table's renderer."""
    out = formats.renderer(fmt)(spec, verbose=verbose, width=width)
    return out if isinstance(out, str) else out.decode("utf-8")


def check_view_options(verbose: Any = False, fmt: Any = "text", width: Any = DEFAULT_WIDTH, hide_empty: Any = False,
                       focus: Any = None) -> formats.Format:
    """The view `fmt` names, once every option of a view is checked (a clear error naming the first wrong one)."""
    check_bool("verbose", verbose)
    check_int("width", width, MIN_WIDTH)
    check_bool("hide_empty", hide_empty)
    check_optional_str("focus", focus)
    try:
        return formats.find(formats.LOOP_FORMATS, fmt)
    except FormatError:
        raise LoopvizError(f"fmt={fmt!r} is not a view loopviz has; choose one of: {', '.join(formats.names(formats.LOOP_FORMATS))}.") from None


def show_loop(
    spec: LoopSpec, verbose: bool = False, fmt: str = "text", width: int = DEFAULT_WIDTH,
    hide_empty: bool = False, focus: str | None = None, theme: str = "light", trace: Any = None,
) -> Union[LoopView, "LoopDiagram"]:
    """Any view of a spec: text, rich and mermaid are printed and returned; graphviz (or one of its file formats,
    svg, png, pdf, dot) is returned as a diagram to display or save, drawn for a light or a dark page (`theme`).
    `trace`: a trace of this loop, whose counts and times the view shows (`loopviz.annotate`; a trace of another loop
    is an error naming both)."""
    check_type("spec", spec, LoopSpec, "a LoopSpec (learn.loop_spec(), or Loop.spec())")
    chosen = check_view_options(verbose=verbose, fmt=fmt, width=width, hide_empty=hide_empty, focus=focus)
    check_choice("theme", theme, THEMES)
    if trace is not None:
        from loopviz.annotate import annotate

        spec = annotate(spec, trace)
    spec = narrow(spec, hide_empty, focus)
    if chosen.view == "graphviz":
        from loopviz.diagram import LoopDiagram

        return LoopDiagram(spec, verbose=verbose, theme=theme)
    return LoopView(spec, verbose=verbose, width=width, fmt=chosen.name).show()
