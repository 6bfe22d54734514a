"""Put a trace's measured times on a loop spec, so every view can show where the time went."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from loopviz.errors import LoopvizError
from loopviz.model import Event, LoopSpec, Phase, Timing, Work
from loopviz.trace.notes import cap_notes

__all__ = ["annotate"]


def _timing(count: int, total_ms: float, run_ms: float) -> Timing:
    return Timing(int(count), float(total_ms), float(total_ms) / count if count else 0.0,
                  100 * float(total_ms) / run_ms if run_ms else 0.0)


def matching_loops(spec: LoopSpec, trace: Any) -> list[str]:
    """The trace's loops that ran the spec's loop: its label, or entry points it leads ('fit_one_cycle > fit')."""
    return [label for label in dict.fromkeys(trace.loops) if label == spec.loop or label.startswith(f"{spec.loop} > ")]


def annotate(spec: LoopSpec, trace: Any, loops: Any = "auto") -> LoopSpec:
    """A copy of `spec` whose events, handlers and work carry the trace's counts and times.

    `loops='auto'` uses the trace's loops that ran this spec's loop (all of them if none does);
    `None` uses every loop; a list of labels or indices picks those.
    """
    if trace.framework and spec.framework and trace.framework.split()[0] != spec.framework.split()[0]:
        raise LoopvizError(f"this trace is of {trace.framework}, the loop of {spec.framework}: they cannot be matched.")
    if loops == "auto":
        loops = matching_loops(spec, trace) or None
    used = list(dict.fromkeys(trace.loops)) if loops is None else [trace.loops[k] if isinstance(k, int) else k for k in loops]
    if loops is not None:
        trace = trace.select(loops)
    run_ms = trace.total_ns() / 1e6
    summary = list(trace.summary().itertuples())
    events = {(row.name, row.phase): _timing(row.count, row.total_ms, run_ms) for row in summary if row.kind == "event"}
    work = {(row.name, row.phase): _timing(row.count, row.total_ms, run_ms) for row in summary if row.kind == "work"}
    calls = {(row.callback, row.event, row.phase): _timing(row.ran, row.total_ms, run_ms)
             for row in trace.by_callback().itertuples() if row.ran}
    changed: dict[tuple[str, str, str], tuple[str, ...]] = {}
    if trace.tracked_changes:
        for row in trace.changes().itertuples():
            key = (row.callback, row.event, row.phase)
            changed[key] = (*changed.get(key, ()), row.attribute)

    def event(ev: Event, phase: Phase | None) -> Event:
        mode = ev.mode or ""
        handlers = [replace(h, timing=calls.get((h.callback.cls, ev.name, mode)),
                            changes=changed.get((h.callback.cls, ev.name, mode), ())) for h in ev.handlers]
        return replace(ev, handlers=handlers, timing=events.get((ev.name, mode)))

    def work_timing(step: Work, phase: Phase) -> Work:
        return replace(step, timing=work.get((step.name, phase.mode or "")))

    loops = ", ".join(dict.fromkeys(used)) or "no loop"
    annotated = spec.map(event=event, work=work_timing)
    return replace(annotated, notes=[*spec.notes, *cap_notes(trace.data)],
                   measured=f"measured: {trace.clock} clock, {run_ms:,.1f} ms over {len(used)} loop label(s) ({loops})")
