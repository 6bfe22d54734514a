"""`LoopDiagram`: a loop's graphviz diagram that saves by file extension and shows inline in Jupyter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import graphviz

from loopviz.errors import GraphvizNotFound, LoopvizError
from loopviz.model import LoopSpec
from loopviz.renderers.dot import dot_graph
from loopviz.renderers.text import render_text

__all__ = ["LoopDiagram"]

_BINARY_FORMATS = {"svg", "png", "pdf"}
_SOURCE_FORMATS = {"dot", "gv"}


class LoopDiagram:
    """The loop drawn by graphviz: `.source` (DOT), `.pipe(fmt)`, `.save(path)`, inline SVG in notebooks."""

    def __init__(self, spec: LoopSpec, verbose: bool = False):
        self.spec = spec
        self.verbose = verbose
        self.graph = dot_graph(spec, verbose=verbose)

    @property
    def source(self) -> str:
        """The DOT text of the diagram."""
        return self.graph.source

    def pipe(self, fmt: str = "svg") -> bytes:
        """The diagram rendered by `dot` as `fmt` ('svg', 'png' or 'pdf')."""
        if fmt not in _BINARY_FORMATS:
            raise LoopvizError(f"format {fmt!r} is not one loopviz renders; use one of: {', '.join(sorted(_BINARY_FORMATS))}.")
        try:
            return self.graph.pipe(format=fmt)
        except graphviz.ExecutableNotFound as e:
            raise GraphvizNotFound(fmt.upper()) from e

    def svg(self) -> str:
        """The diagram as SVG text."""
        return self.pipe("svg").decode("utf-8")

    def save(self, path: str | Path) -> Path:
        """Write the diagram to `path`; the extension picks the format: .svg, .png, .pdf, .dot or .gv."""
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt in _SOURCE_FORMATS:
            path.write_text(self.source, encoding="utf-8")
        elif fmt in _BINARY_FORMATS:
            path.write_bytes(self.pipe(fmt))
        else:
            known = ", ".join(f".{f}" for f in sorted(_BINARY_FORMATS | _SOURCE_FORMATS))
            raise LoopvizError(f"cannot tell the format of {str(path)!r} from its extension; use one of: {known}.")
        return path

    def _repr_mimebundle_(self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **_: Any) -> dict[str, str]:
        """Jupyter display: SVG plus a text version; text alone (with a hint) when `dot` is missing."""
        text = render_text(self.spec, verbose=self.verbose)
        bundle = {"text/plain": text}
        try:
            bundle["image/svg+xml"] = self.svg()
        except GraphvizNotFound as e:
            bundle["text/plain"] = f"{text}\n\n(no diagram: {e})"
        if include is not None:
            bundle = {k: v for k, v in bundle.items() if k in set(include)}
        if exclude is not None:
            bundle = {k: v for k, v in bundle.items() if k not in set(exclude)}
        return bundle

    def __repr__(self) -> str:
        return f"<LoopDiagram: {self.spec.loop} loop, {len(self.spec.event_names())} events; .save('loop.svg') or .source for DOT>"
