"""`Diagnosis`: what `t.diagnose()` returns, the findings of `loopviz.trace.diagnose` with the ways a trace shows
itself (text, rich, HTML in notebooks; the rendering is `loopviz.trace.display`'s)."""
from __future__ import annotations

from typing import Any

from loopviz.trace.diagnose import Finding, Findings

__all__ = ["Diagnosis", "Finding"]


class Diagnosis(Findings):
    """A trace's findings, most severe first, each with its evidence, the culprit, the fix and the most it could save;
    none when nothing slows the run. `str()` and notebooks show them; `to_df()` and `to_json()` give them as data."""

    def __rich__(self) -> Any:
        from loopviz.trace import display

        return display.diagnosis_renderable(self)

    def __str__(self) -> str:
        from loopviz.trace import display

        return display.diagnosis_text(self)

    def _repr_html_(self) -> str:
        from loopviz.trace import display

        return display.as_html(display.diagnosis_renderable(self))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, str]:
        from loopviz.trace import display

        return {"text/plain": display.diagnosis_text(self), "text/html": self._repr_html_()}
