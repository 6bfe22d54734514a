"""JSON text as loopviz writes it: compact, and never with NaN or Infinity (JSON has neither: Python's json would
write them as bare `NaN`/`Infinity`, which other JSON readers refuse)."""
from __future__ import annotations

import json
import math
from typing import Any

from loopviz.errors import LoopvizError

__all__ = ["compact_json", "nonfinite", "shown_number"]


def compact_json(obj: Any, what: str) -> str:
    """`obj` as compact JSON text; a LoopvizError naming where, if it holds a number that is not finite."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as e:
        found = nonfinite(obj)
        if found is None:
            raise
        where, number = found
        raise LoopvizError(f"cannot write {what} as JSON: {where or 'the value'} is {shown_number(number)}, not a "
                           "finite number (JSON has no NaN or Infinity).") from e


def nonfinite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The first non-finite float in JSON data and where it is (e.g. "traceEvents[3].args.x"); None if none is."""
    stack: list[tuple[Any, str]] = [(obj, path)]
    while stack:  # a stack, not recursion: data handed in (not parsed) can nest deeper than Python recurses
        value, at = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return at, value
        elif isinstance(value, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def shown_number(number: float) -> str:
    """A non-finite float as JSON-ish text would spell it: NaN, Infinity or -Infinity."""
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
