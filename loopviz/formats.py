"""Every output loopviz writes, in one table each: the views of a loop and the reports of a trace.

A row names a format once for Python (`show_training_loop(fmt='svg')`) and the command line
(`--format svg`), with the file endings it writes, whether it is bytes, whether it needs Graphviz's
`dot`, and the function that renders it ("module:function", imported only when that format is used,
so reading this table costs nothing). `show_training_loop`, `LoopDiagram.save` and every `-o` of the
command line choose their format here. To add a view: write `loopviz/renderers/<name>.py` with a
function `(spec, verbose, width) -> str | bytes` and add its row to `LOOP_FORMATS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from loopviz.errors import FormatError

__all__ = ["Format", "LOOP_FORMATS", "REPORT_FORMATS", "loop_views", "names", "find", "for_path", "known_endings", "choose",
           "renderer"]


@dataclass(frozen=True)
class Format:
    """One output: its name, the view it belongs to, the file endings it writes and how it is made."""

    name: str  # what users type: fmt='svg' in Python, --format svg on the command line
    view: str  # the view it is a form of (several formats can draw one view: graphviz as svg, png, pdf, dot)
    extensions: tuple[str, ...]  # file endings it writes, longest first where they overlap ('.perfetto.json', '.json')
    render: str  # "module:function" making it: (spec, verbose, width) for loops, (trace) for reports
    binary: bool = False  # bytes (png, pdf) rather than text: never printed to a terminal
    needs_dot: bool = False  # rendered by Graphviz's `dot` program
    merged: bool = False  # reports only: also made from several traces merged (one per rank)
    help: str = ""


LOOP_FORMATS: tuple[Format, ...] = (
    Format("text", "text", (".txt",), "loopviz.renderers.text:render_text", help="fastai's shape, plain text"),
    Format("rich", "rich", (".txt",), "loopviz.renderers.rich_tree:render_rich_text", help="a rich tree, coloured when printed"),
    Format("mermaid", "mermaid", (".mmd", ".mermaid"), "loopviz.renderers.mermaid:render_mermaid", help="a Mermaid flowchart"),
    Format("dot", "graphviz", (".dot", ".gv"), "loopviz.diagram:render_dot", help="the diagram's Graphviz source"),
    Format("svg", "graphviz", (".svg",), "loopviz.diagram:render_svg", needs_dot=True, help="the diagram as SVG"),
    Format("png", "graphviz", (".png",), "loopviz.diagram:render_png", binary=True, needs_dot=True, help="the diagram as PNG"),
    Format("pdf", "graphviz", (".pdf",), "loopviz.diagram:render_pdf", binary=True, needs_dot=True, help="the diagram as PDF"),
)

REPORT_FORMATS: tuple[Format, ...] = (
    Format("table", "table", (".txt",), "loopviz.trace.outputs:table", merged=True, help="the report's tables"),
    Format("csv", "csv", (".csv",), "loopviz.trace.outputs:spans_csv", help="every span, one row each"),
    Format("chrome", "chrome", (".perfetto.json", ".json"), "loopviz.trace.outputs:chrome_json", merged=True,
           help="a Chrome/Perfetto trace for ui.perfetto.dev"),
    Format("svg", "plot", (".svg",), "loopviz.trace.outputs:plot_svg", help="time per batch and the slowest batch, plotted"),
    Format("html", "html", (".html", ".htm"), "loopviz.trace.outputs:html_page", needs_dot=True,
           help="an interactive report in one self-contained page"),
)


def loop_views() -> list[str]:
    """The views of a loop, in table order: text, rich, mermaid, graphviz."""
    return list(dict.fromkeys(f.view for f in LOOP_FORMATS))


def names(table: tuple[Format, ...]) -> list[str]:
    """Every name a user may give for this table: its formats, then views that are not also a format's name."""
    formats = [f.name for f in table]
    return formats + [v for v in dict.fromkeys(f.view for f in table) if v not in formats]


def find(table: tuple[Format, ...], name: str) -> Format:
    """The format called `name`, or the first format of the view called `name`; a clear error otherwise."""
    for fmt in table:
        if fmt.name == name:
            return fmt
    for fmt in table:
        if fmt.view == name:
            return fmt
    raise FormatError(f"{name!r} is not a format loopviz writes here; choose one of: {', '.join(names(table))}.")


def _ending(fmt: Format, path: Path) -> str | None:
    """The extension of `fmt` that `path` ends with (case-insensitive), if any."""
    lower = path.name.lower()
    return next((ext for ext in fmt.extensions if lower.endswith(ext)), None)


def for_path(table: tuple[Format, ...], path: str | Path) -> Format | None:
    """The format a file name asks for (the longest matching ending; the first row on a tie), or None."""
    matches = [(len(ext), -i, fmt) for i, fmt in enumerate(table) if (ext := _ending(fmt, Path(path)))]
    return max(matches, key=lambda m: m[:2])[2] if matches else None


def known_endings(table: tuple[Format, ...], sep: str = ", ") -> str:
    """Every file ending the table's formats write, in table order: '.txt, .mmd, .mermaid, ...'."""
    return sep.join(dict.fromkeys(ext for fmt in table for ext in fmt.extensions))


def choose(table: tuple[Format, ...], name: str | None, path: str | Path | None) -> Format:
    """The format to write: `name` if given (a format, or a view whose format the file name picks), checked against
    the file name's ending; else the one the ending asks for. FormatError when they disagree or nothing fits."""
    inferred = for_path(table, path) if path is not None else None
    if name is None:
        if path is None:
            return table[0]
        if inferred is None:
            raise FormatError(f"cannot tell the format of {str(path)!r} from its ending; use one of: "
                              f"{known_endings(table)}, or give --format.")
        return inferred
    chosen = find(table, name)
    if path is None:
        return chosen
    if chosen.name != name:  # a view's name: the file's ending picks among its formats
        same_view = [f for f in table if f.view == chosen.view and _ending(f, Path(path))]
        if same_view:
            return same_view[0]
    if inferred is not None and _ending(chosen, Path(path)) is None:
        raise FormatError(f"--format {name} contradicts the file name {str(path)!r}, which asks for {inferred.name}; "
                          f"name the file *{chosen.extensions[0]}, or drop --format.")
    return chosen


def renderer(fmt: Format) -> Callable[..., Any]:
    """The function that makes `fmt`, imported now."""
    module, _, attr = fmt.render.partition(":")
    return getattr(importlib.import_module(module), attr)
