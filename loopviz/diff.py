"""Differences: between two loops (which callbacks were added, removed or moved at each event) and
between two traces (what got slower or faster)."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loopviz.checks import check_trace, check_type
from loopviz.errors import LoopvizError
from loopviz.model import Event, Handler, LoopSpec, Phase

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["diff", "diff_traces", "TraceDiff"]


def _index(spec: LoopSpec) -> dict[tuple[str, str | None, int], Event]:
    """Events by (name, mode, how many times that pair came before): how events of two loops are matched."""
    seen: dict[tuple[str, str | None], int] = {}
    out = {}
    for event in [*spec.events(), *spec.custom_events]:
        n = seen.get((event.name, event.mode), 0)
        seen[(event.name, event.mode)] = n + 1
        out[(event.name, event.mode, n)] = event
    return out


def _merge(old: Event | None, new: Event) -> Event:
    """`new`'s handlers marked added, or moved (its `order` changed), against `old`'s; `old`'s missing ones
    are put back, marked removed, where they were."""
    before = {h.callback.cls: h for h in old.handlers} if old else {}
    after = {h.callback.cls for h in new.handlers}
    merged: list[Handler] = []
    for handler in new.handlers:
        cls = handler.callback.cls
        if cls not in before:
            merged.append(replace(handler, diff="added"))
        elif before[cls].callback.order != handler.callback.order:
            merged.append(replace(handler, diff="moved", was_order=before[cls].callback.order))
        else:
            merged.append(handler)
    for position, handler in enumerate(old.handlers if old else []):
        if handler.callback.cls not in after:
            merged.insert(min(position, len(merged)), replace(handler, diff="removed"))
    return replace(new, handlers=merged)


def diff(a: LoopSpec, b: LoopSpec) -> LoopSpec:
    """Loop `b` with every callback marked as added, removed (put back from `a`) or moved, compared with `a`."""
    for argument, spec in (("a", a), ("b", b)):
        check_type(argument, spec, LoopSpec, "a LoopSpec (learn.loop_spec())")
    if a.loop != b.loop:
        raise LoopvizError(f"cannot diff a {a.loop!r} loop with a {b.loop!r} loop; compare two loops of one kind.")
    old = _index(a)
    seen: dict[tuple[str, str | None], int] = {}

    def event(ev: Event, phase: Phase | None) -> Event:
        n = seen.get((ev.name, ev.mode), 0)
        seen[(ev.name, ev.mode)] = n + 1
        return _merge(old.get((ev.name, ev.mode, n)), ev)

    merged = b.map(event=event)
    b_classes = {c.cls for c in b.callbacks}
    removed = [c for c in a.callbacks if c.cls not in b_classes]
    added = [c.cls for c in b.callbacks if c.cls not in {x.cls for x in a.callbacks}]
    summary = (f"compared with the loop before: added {', '.join(added) or 'none'}; "
               f"removed {', '.join(c.cls for c in removed) or 'none'}")
    return replace(merged, callbacks=[*b.callbacks, *removed], compared=summary)


class TraceDiff:
    """Two traces side by side: per event/work and per callback, time before, after and their ratio."""

    def __init__(self, before: Any, after: Any):
        check_trace("before", before)
        check_trace("after", after)
        self.events = _side_by_side(before.summary(), after.summary(), ["kind", "name", "phase"])
        self.callbacks = _side_by_side(before.by_callback(), after.by_callback(), ["callback", "event", "phase"])

    def __str__(self) -> str:
        from loopviz.trace.display import diff_text

        return diff_text(self)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from loopviz.trace.display import diff_html

        return diff_html(self)


def _side_by_side(before: "pd.DataFrame", after: "pd.DataFrame", keys: list[str]) -> "pd.DataFrame":
    """Totals before and after per key, the change in ms and the ratio, biggest regression first."""
    count = "count" if "count" in before.columns else "calls"
    left = before[[*keys, count, "total_ms"]].groupby(keys, as_index=False).sum()
    right = after[[*keys, count, "total_ms"]].groupby(keys, as_index=False).sum()
    merged = left.merge(right, on=keys, how="outer", suffixes=("_before", "_after")).fillna(0)
    merged["change_ms"] = merged["total_ms_after"] - merged["total_ms_before"]
    merged["ratio"] = merged["total_ms_after"] / merged["total_ms_before"].where(merged["total_ms_before"] > 0)
    return merged.sort_values("change_ms", ascending=False, ignore_index=True)


def diff_traces(before: Any, after: Any) -> TraceDiff:
    """Compare two traces (e.g. before and after a data-loader change): the top regressions first."""
    return TraceDiff(before, after)
