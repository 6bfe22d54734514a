r"""Strings from user code (callback class names, docstrings, file names) made safe to show, defined once.

One rule for every view: a character a terminal would obey (C0 and C1 controls, DEL, so ESC sequences too),
one XML 1.0 cannot carry (lone surrogates, U+FFFE, U+FFFF) and one that reorders text on screen (bidi
overrides and isolates) is shown as its Python escape, `\x1b`, `\x08`, `\ud800`, `\u202e`, as `ascii()`
writes it. Multi-line text keeps its newlines and tabs; names are one line. Diagrams also cut names and texts
past a limit with an ellipsis. Renderers apply these where they write; the model keeps the true strings.
Data put inside an HTML `<script>` element goes through `json_island`, which leaves no `<`, `>` or `&` in it.
"""
from __future__ import annotations

import json
import re
from dataclasses import fields, is_dataclass, replace
from typing import TypeVar

__all__ = ["NAME_LIMIT", "TEXT_LIMIT", "visible", "one_line", "cut", "cut_words", "visible_spec", "json_island"]

NAME_LIMIT = 120  # characters of a name a diagram shows
TEXT_LIMIT = 1200  # characters of one docstring or description a diagram shows
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# fields of the model whose text may run over several lines; every other string is a name, shown on one line
_MULTILINE = frozenset({"doc", "description", "note", "notes", "code", "measured", "compared"})
T = TypeVar("T")
# what could end a <script> element or start a comment or markup inside one: as JSON escapes it is the same data
_ISLAND = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ISLAND_CHARS = re.compile("[<>&\u2028\u2029]")


def _escape(char: str) -> str:
    """One character as `ascii()` writes it inside a string literal."""
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str, keep: str = "\n\t") -> str:
    """`text` with every unprintable character but those in `keep` as a visible escape (CRLF as a newline)."""
    if "\n" in keep:
        text = text.replace("\r\n", "\n")
    return _UNPRINTABLE.sub(lambda m: m[0] if m[0] in keep else _escape(m[0]), text)


def one_line(text: str) -> str:
    """`text` as one line: newlines and tabs escaped too."""
    return visible(text, keep="")


def cut(text: str, limit: int = NAME_LIMIT) -> str:
    """`text` cut to `limit` characters, the last an ellipsis, when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut_words(text: str, limit: int = NAME_LIMIT) -> str:
    """`text` with every run of more than `limit` non-space characters (a name inside a sentence) cut as `cut` cuts a
    name."""
    return re.sub(rf"\S{{{limit + 1},}}", lambda word: cut(word.group(0), limit), text)


def visible_spec(spec: T) -> T:
    """A copy of a spec (or of any part of one) with every string visible, names on one line, for printed views."""
    return _copy(spec, multiline=False)


def _copy(value: T, multiline: bool) -> T:
    """`value` with its strings made visible, through lists, tuples and dataclasses."""
    if isinstance(value, str):
        return visible(value) if multiline else one_line(value)  # type: ignore[return-value]
    if type(value) in (list, tuple):
        return type(value)(_copy(v, multiline) for v in value)  # type: ignore[return-value]
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _copy(getattr(value, f.name), f.name in _MULTILINE)  # type: ignore[type-var]
                                 for f in fields(value) if f.init})
    return value


def json_island(obj: object) -> str:
    """`obj` as JSON safe inside `<script type="application/json">`: ASCII, with no `<`, `>` or `&` (so no
    `</script>`, `<!--` or `-->`), and refusing NaN and infinities, which JSON cannot carry."""
    try:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    except ValueError as e:
        from loopviz.errors import LoopvizError

        raise LoopvizError(f"cannot write data into the page: {e}; every number must be finite") from None
    return _ISLAND_CHARS.sub(lambda m: _ISLAND[m[0]], text)
