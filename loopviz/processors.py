"""Small functions LoopSpec -> LoopSpec that every view can apply: hide empty events, focus on one callback."""
from __future__ import annotations

from dataclasses import replace

from loopviz.errors import LoopvizError
from loopviz.model import Event, LoopSpec, Phase

__all__ = ["hide_empty", "focus", "resolve_callback", "narrow"]


def _shown(event: Event) -> bool:
    """True when an event has a callback that runs there, or one switched off with run=False."""
    return any(h.runs or h.disabled for h in event.handlers)


def hide_empty(spec: LoopSpec) -> LoopSpec:
    """The spec without events where no callback runs (nor is switched off)."""
    return spec.map(event=lambda event, phase: event if _shown(event) else None)


def resolve_callback(spec: LoopSpec, name: str) -> str:
    """The class name of a callback of this loop, given its class name or its fastai-style name."""
    for info in spec.callbacks:
        if name in (info.cls, info.name):
            return info.cls
    known = ", ".join(info.cls for info in spec.callbacks) or "none"
    raise LoopvizError(f"focus={name!r} matches no callback of this loop; its callbacks are: {known}.")


def focus(spec: LoopSpec, name: str) -> LoopSpec:
    """Only one callback: its handlers, the events where it is called, and the work between them."""
    cls = resolve_callback(spec, name)

    def only(event: Event, phase: Phase | None) -> Event | None:
        kept = replace(event, handlers=[h for h in event.handlers if h.callback.cls == cls])
        return kept if _shown(kept) else None

    narrowed = spec.map(event=only)
    return replace(narrowed, callbacks=[c for c in spec.callbacks if c.cls == cls])


def narrow(spec: LoopSpec, hide_empty_events: bool = False, focus_on: str | None = None) -> LoopSpec:
    """The spec as a view asked for it: focused on one callback, and/or without empty events."""
    if focus_on is not None:
        spec = focus(spec, focus_on)
    if hide_empty_events:
        spec = hide_empty(spec)
    return spec
