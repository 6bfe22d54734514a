"""The exceptions loopviz raises, in one place."""
from __future__ import annotations

__all__ = ["LoopvizError", "GraphvizNotFound", "FormatError"]


class LoopvizError(ValueError):
    """Bad input to loopviz: the message says what was wrong and what to do instead."""


class GraphvizNotFound(RuntimeError):
    """Graphviz's `dot` program is needed (for SVG, PNG or PDF) but is not on PATH."""

    def __init__(self, wanted: str):
        super().__init__(
            f"Rendering {wanted} needs Graphviz's `dot` program, which is not on PATH. Install it "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: conda install "
            "graphviz) or save the diagram as .dot, which needs no program."
        )


class FormatError(LoopvizError):
    """An output format loopviz does not have, or one that contradicts the file name it is written to."""
