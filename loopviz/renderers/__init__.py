"""Renderers: each reads a `LoopSpec` and knows nothing of any framework."""
from __future__ import annotations

from loopviz.renderers.text import render_text

__all__ = ["render_text"]
