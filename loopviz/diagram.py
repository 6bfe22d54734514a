"""`LoopDiagram`: a loop's graphviz diagram that saves by file extension and shows inline in Jupyter."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterable

from loopviz.checks import check_output_path, check_spec
from loopviz.errors import GraphvizNotFound, LoopvizError
from loopviz.formats import LOOP_FORMATS, Format, for_path, known_endings
from loopviz.model import LoopSpec
from loopviz.renderers.sanitise import cut, one_line
from loopviz.renderers.text import DEFAULT_WIDTH, render_text

__all__ = ["LoopDiagram", "render_dot", "render_svg", "render_png", "render_pdf", "run_dot"]

DOT_TIMEOUT = 120  # seconds; dot draws a loop in well under one, so this only stops a hang
_WHAT_TO_DO = "save the diagram as .dot to keep its source, and please report this as a loopviz bug."


def _diagram_formats() -> tuple[Format, ...]:
    """The formats of the graphviz view, from the one table of formats."""
    return tuple(f for f in LOOP_FORMATS if f.view == "graphviz")


class LoopDiagram:
    """The loop drawn by graphviz: `.source` (DOT), `.pipe(fmt)`, `.save(path)`, inline SVG in notebooks."""

    def __init__(self, spec: LoopSpec, verbose: bool = False, theme: str = "light", ids: bool = False):
        """`theme`: 'light' (the default), or 'dark' for dark notebooks and pages (transparent background); `ids`: give
        each event's and work's node the SVG id `loopviz.renderers.dot.step_ids` names (for pages that script it)."""
        check_spec("spec", spec)
        from loopviz.renderers.dot import dot_graph

        self.spec = spec
        self.verbose = verbose
        self.theme = theme
        self.graph = dot_graph(spec, verbose=verbose, theme=theme, ids=ids)

    @property
    def source(self) -> str:
        """The DOT text of the diagram."""
        return self.graph.source

    def pipe(self, fmt: str = "svg") -> bytes:
        """The diagram rendered by `dot` as `fmt` (one of the formats that need `dot`: 'svg', 'png' or 'pdf')."""
        drawn = [f.name for f in _diagram_formats() if f.needs_dot]
        if fmt not in drawn:
            raise LoopvizError(f"format {fmt!r} is not one loopviz renders with dot; use one of: {', '.join(drawn)}.")
        return run_dot(self.source, fmt)

    def svg(self) -> str:
        """The diagram as SVG text."""
        return self.pipe("svg").decode("utf-8", errors="replace")

    def render(self, fmt: str) -> str | bytes:
        """The diagram in one of its formats: DOT source or SVG as text, PNG or PDF as bytes."""
        if fmt == "dot":
            return self.source
        return self.svg() if fmt == "svg" else self.pipe(fmt)

    def save(self, path: str | Path) -> Path:
        """Write the diagram to `path`; its ending picks the format (.svg, .png, .pdf, .dot or .gv)."""
        path = check_output_path("path", path)
        fmt = for_path(_diagram_formats(), path)
        if fmt is None:
            raise LoopvizError(f"cannot tell the format of {str(path)!r} from its extension; use one of: "
                               f"{known_endings(_diagram_formats())}.")
        from loopviz.trace.files import write_bytes

        out = self.render(fmt.name)
        return write_bytes(out if isinstance(out, bytes) else out.encode("utf-8"), path)

    def _repr_mimebundle_(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **_: Any) -> dict[str, str]:
        """Jupyter display: SVG and a text version; the text alone, with a note, when `dot` is missing or fails."""
        text = render_text(self.spec, verbose=self.verbose)
        bundle = {"text/plain": text}
        try:
            bundle["image/svg+xml"] = self.svg()
        except (GraphvizNotFound, LoopvizError) as e:
            bundle["text/plain"] = f"{text}\n\n(no diagram: {e})"
        if include is not None:
            bundle = {k: v for k, v in bundle.items() if k in set(include)}
        if exclude is not None:
            bundle = {k: v for k, v in bundle.items() if k not in set(exclude)}
        return bundle

    def __repr__(self) -> str:
        return f"<LoopDiagram: {self.spec.loop} loop, {len(self.spec.event_names())} events; .save('loop.svg') or .source for DOT>"


def run_dot(source: str, fmt: str) -> bytes:
    """DOT `source` drawn by Graphviz's `dot` as `fmt`; a failure or hang of `dot` as a one-line LoopvizError."""
    try:
        done = subprocess.run(["dot", f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                              timeout=DOT_TIMEOUT, check=False)
    except FileNotFoundError as e:
        raise GraphvizNotFound(fmt.upper()) from e
    except subprocess.TimeoutExpired as e:
        raise LoopvizError(f"Graphviz's dot did not finish drawing {fmt.upper()} within {DOT_TIMEOUT} s; "
                           f"{_WHAT_TO_DO}") from e
    except OSError as e:
        raise LoopvizError(f"Graphviz's dot could not be run ({cut(one_line(str(e)), 200)}); {_WHAT_TO_DO}") from e
    if done.returncode != 0:
        raise LoopvizError(f"Graphviz's dot could not draw this diagram as {fmt.upper()} "
                           f"({_first_error(done.stderr, done.returncode)}); {_WHAT_TO_DO}")
    return done.stdout


def _first_error(stderr: bytes, returncode: int) -> str:
    """The line of dot's stderr that says what went wrong (its first `Error` line), visible and short."""
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")] or lines
    return cut(one_line(errors[0]), 200) if errors else f"exit status {returncode}"


def render_dot(spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, theme: str = "light") -> str:
    """The loop's diagram as Graphviz DOT source."""
    return LoopDiagram(spec, verbose, theme).source


def render_svg(spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, theme: str = "light") -> str:
    """The loop's diagram as SVG text (needs `dot`)."""
    return LoopDiagram(spec, verbose, theme).svg()


def render_png(spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, theme: str = "light") -> bytes:
    """The loop's diagram as PNG bytes (needs `dot`)."""
    return LoopDiagram(spec, verbose, theme).pipe("png")


def render_pdf(spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH, theme: str = "light") -> bytes:
    """The loop's diagram as PDF bytes (needs `dot`)."""
    return LoopDiagram(spec, verbose, theme).pipe("pdf")
