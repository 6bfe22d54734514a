"""Argument checks for the public entry points: each names the argument, what it got and what it takes.

Every function here returns the value it checked (so a call can sit where the value is used) or raises a
`LoopvizError`. Booleans are not integers here: `max_calls=True` is a mistake, not a 1.
"""
from __future__ import annotations

import os
from numbers import Integral
from pathlib import Path
from typing import Any, Iterable

from loopviz.errors import LoopvizError

__all__ = ["check_int", "check_bool", "check_str", "check_choice", "check_optional_str", "check_type", "check_spec",
           "check_output_path", "got"]


def got(value: Any) -> str:
    """A short description of a value for an error message: its type, and its repr when that is short."""
    text = repr(value)
    shown = text if len(text) <= 40 else text[:37] + "..."
    return "None" if value is None else f"{type(value).__name__} {shown}"


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
        shown = repr(value) if isinstance(value, str) else got(value)
        raise LoopvizError(f"{name} must be one of {', '.join(map(repr, options))}, not {shown}.")
    return value


def check_type(name: str, value: Any, kind: type | tuple[type, ...], wanted: str) -> Any:
    """`value` when it is an instance of `kind`; `wanted` says what it should be, for the message."""
    if not isinstance(value, kind):
        raise LoopvizError(f"{name} must be {wanted}, not {got(value)}.")
    return value


def check_spec(argument: str, value: Any) -> Any:
    """`value` when it is a `LoopSpec`."""
    from loopviz.model import LoopSpec

    return check_type(argument, value, LoopSpec, "a LoopSpec (learn.loop_spec(), or Loop.spec())")


def check_output_path(argument: str, value: Any) -> Path:
    """`value` as a path a file can be written to: a str or path whose folder exists and that is not a folder."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise LoopvizError(f"{argument} must be a file path (str or pathlib.Path), not {got(value)}.")
    path = Path(value)
    folder = path.parent
    if not folder.is_dir():
        raise LoopvizError(f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist; create it first.")
    if path.is_dir():
        raise LoopvizError(f"cannot write {str(path)!r}: it is a folder; give a file name inside it.")
    return path
