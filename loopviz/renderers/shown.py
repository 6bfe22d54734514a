"""What a view of a loop shows, defined once: which handlers appear at an event, how skipped, switched-off,
diffed and `__call__` handlers are marked, the custom events, and the notes and footers under the loop.

Every view (text, rich, graphviz, Mermaid) takes these items from here and only decides how they look.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from loopviz.model import Event, Handler, LoopSpec

__all__ = [
    "CUSTOM_EVENTS_TITLE", "DIFF_MARKS", "DIFF_KEY", "FooterLine", "handlers_shown", "shows_doc", "status_note",
    "diff_note", "via_note", "time_note", "changes_note", "footer",
]

CUSTOM_EVENTS_TITLE = "Custom events (the loop never fires these itself)"
DIFF_MARKS: dict[str | None, str] = {"added": "+", "removed": "-", "moved": "~", None: ""}
DIFF_KEY = "+ added, - removed, ~ moved"
_VIA = {
    "call": "overrides __call__, so it receives every event",
    "instance": "handler set on the instance, e.g. Callback(before_fit=f)",
    "delegated": "found on the learner through GetAttr",
}


@dataclass(frozen=True)
class FooterLine:
    """One line under the loop: a note, what the times were measured on, or what the loop is compared with."""

    kind: Literal["note", "measured", "compared"]
    text: str


def handlers_shown(event: Event, verbose: bool) -> list[Handler]:
    """The handlers a view lists at an event: those that run, those switched off (run=False) and those a diff
    removed; verbose views add the ones skipped here (run_train/run_valid, added too late...)."""
    return [h for h in event.handlers if verbose or h.runs or h.disabled or h.diff == "removed"]


def handler_doc(handler: Handler) -> str | None:
    """What a verbose view says under a handler: its own docstring, else what it does (its first line of code), else
    that it has none; None for a handler described only by its class's docstring, which a view shows once, with
    the callbacks (`class_docs`), not at every event."""
    if handler.doc_source in ("handler", "inherited"):
        return handler.doc
    if handler.code:
        return f"does: {handler.code}"
    return None if handler.doc_source == "class" else handler.doc


def class_docs(spec: LoopSpec) -> list[tuple[str, str]]:
    """(callback label, the first paragraph of its class docstring) for each callback of the loop that has one: a
    verbose view shows them once."""
    found = []
    for info in spec.callbacks:
        doc = (info.doc or "").strip()
        if doc:
            found.append((info.label, " ".join(doc.split("\n\n")[0].split())))
    return found


def shows_doc(handler: Handler) -> bool:
    """True when a verbose view prints the handler's docstring (not for a handler that is skipped here)."""
    return handler.runs or handler.disabled


def status_note(handler: Handler) -> str | None:
    """`run=False` for a switched-off callback, `skipped here: <why>` for one that does not run at this event."""
    if handler.disabled:
        return "run=False"
    if handler.skipped:
        return f"skipped here: {handler.skipped}"
    return None


def diff_note(handler: Handler) -> str | None:
    """`added`, `removed` or `moved, order was N` when the loop is a diff against another one."""
    if handler.diff == "moved":
        return f"moved, order was {handler.was_order or 0:g}"
    return handler.diff


def via_note(handler: Handler, verbose: bool) -> str | None:
    """How the loop reaches the handler, when it is not a plain method: `__call__` (compact) or a sentence (verbose)."""
    if not verbose:
        return "__call__" if handler.via == "call" else None
    return _VIA.get(handler.via)


def time_note(handler: Handler) -> str | None:
    """`1.2 ms (0.5%)`: a handler's measured total and share of the run, for views short on room."""
    timing = handler.timing
    return f"{timing.total_ms:,.1f} ms ({timing.pct:.1f}%)" if timing else None


def changes_note(handler: Handler) -> str | None:
    """`changes: a, b` when a trace saw this handler change learner state."""
    return f"changes: {', '.join(handler.changes)}" if handler.changes else None


def footer(spec: LoopSpec) -> list[FooterLine]:
    """The lines under the loop, in order: its notes, then what its times were measured on, then the diff."""
    lines = [FooterLine("note", f"Note: {note}") for note in spec.notes]
    if spec.measured:
        lines.append(FooterLine("measured", f"Times [count × mean = total (% of the run)] {spec.measured}."))
    if spec.compared:
        lines.append(FooterLine("compared", f"Diff ({DIFF_KEY}): {spec.compared}."))
    return lines
