"""Argument checks for the public entry points: each names the argument, what it got and what it takes.

Every function here returns the value it checked (so a call can sit where the value is used) or raises a
`LoopvizError`. Booleans are not integers here: `max_calls=True` is a mistake, not a 1.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, Iterable

from loopviz.errors import LoopvizError

__all__ = ["check_int", "check_bool", "check_str", "check_choice", "check_optional_str", "check_type", "got"]


def got(value: Any) -> str:
    """A short description of a value for an error message: its type, and its repr when that is short."""
    text = repr(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {shown}" if not isinstance(value, (str, bool)) and value is not None else shown


def check_int(name: str, value: Any, minimum: int | None = 0) -> int:
    """`value` as an int at least `minimum` (None: any int)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise LoopvizError(f"{name} must be an integer, not {got(value)}.")
    if minimum is not None and value < minimum:
        raise LoopvizError(f"{name} must be {minimum} or more, not {value}.")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """`value` as a bool (True or False, nothing else)."""
    if not isinstance(value, bool):
        raise LoopvizError(f"{name} must be True or False, not {got(value)}.")
    return value


def check_str(name: str, value: Any) -> str:
    """`value` as a non-empty str."""
    if not isinstance(value, str) or not value:
        raise LoopvizError(f"{name} must be a non-empty string, not {got(value)}.")
    return value


def check_optional_str(name: str, value: Any) -> str | None:
    """`value` as a non-empty str, or None."""
    return None if value is None else check_str(name, value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """`value` as one of the strings in `choices`."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise LoopvizError(f"{name} must be one of {', '.join(map(repr, options))}, not {got(value)}.")
    return value


def check_type(name: str, value: Any, kind: type | tuple[type, ...], wanted: str) -> Any:
    """`value` when it is an instance of `kind`; `wanted` says what it should be, for the message."""
    if not isinstance(value, kind):
        raise LoopvizError(f"{name} must be {wanted}, not {got(value)}.")
    return value
