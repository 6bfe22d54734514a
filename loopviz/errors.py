"""The exceptions loopviz raises, in one place."""
from __future__ import annotations

__all__ = ["LoopvizError"]


class LoopvizError(ValueError):
    """Bad input to loopviz: the message says what was wrong and what to do instead."""
