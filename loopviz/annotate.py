"""Put a trace's measured times on a loop spec, so every view can show where the time went."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from loopviz.checks import check_type
from loopviz.errors import LoopvizError
from loopviz.model import CallbackInfo, Event, Handler, LoopSpec, Phase, Timing, Work
from loopviz.trace.notes import cap_notes

__all__ = ["annotate", "matching_loops", "spec_loop_of"]

_UNSEEN_DOC = "Not among the callbacks this view was built with; the trace saw it run here (e.g. passed to fit(cbs=...))."


def _timing(count: int, total_ms: float, run_ms: float) -> Timing:
    return Timing(int(count), float(total_ms), float(total_ms) / count if count else 0.0,
                  100 * float(total_ms) / run_ms if run_ms else 0.0)


def _outermost(trace: Any) -> Any:
    """The trace's loops that no other loop or event ran (a fit, a validate... called by the user)."""
    loops = trace.loops_df()
    return loops[loops["outermost"]]


def spec_loop_of(label: str, known: Any) -> str | None:
    """The spec loop a trace's loop label ran: its outermost entry point loopviz knows ('fine_tune > fit_one_cycle >
    fit' -> 'fine_tune'), or None."""
    return next((name for name in label.split(" > ") if name in known), None)


def matching_loops(spec: LoopSpec, trace: Any) -> list[int]:
    """Indices of the trace's outermost loops that ran the spec's loop: its label, or entry points it leads."""
    return _matching(spec, _outermost(trace))


def _matching(spec: LoopSpec, outer: Any) -> list[int]:
    return [int(i) for i, label in zip(outer["loop"], outer["label"])
            if label == spec.loop or label.startswith(f"{spec.loop} > ")]


def _with_descendants(table: Any, loops: list[int], through_events: bool) -> list[int]:
    """The loops and the loops that ran inside them (`table`: the trace's `loops_df()`); `through_events=False`
    leaves out those a callback's handler ran (their time is inside that handler's call, and their calls would
    blur the outer loop's)."""
    parent = dict(zip(table["loop"], table["parent"]))
    in_event = set(table["loop"][table["inside_event"] != ""])
    keep = set(loops)
    while True:
        extra = {int(i) for i, p in parent.items()
                 if p in keep and i not in keep and (through_events or i not in in_event)}
        if not extra:
            return sorted(keep)
        keep |= extra


def annotate(spec: LoopSpec, trace: Any, loops: Any = "auto") -> LoopSpec:
    """A copy of `spec` whose events, handlers and work carry the trace's counts and times.

    `loops='auto'` uses the trace's loops that ran this spec's loop (every loop if none did); `None` uses every
    loop; a list of labels or indices picks those. Loops a callback's handler ran (FetchPredsCallback's get_preds)
    are not mixed in: the notes describe them. Callbacks the trace saw run that the spec lacks are added where
    they ran.
    """
    check_type("spec", spec, LoopSpec, "a LoopSpec (learn.loop_spec())")
    from loopviz.trace.trace import check_trace

    check_trace("trace", trace)
    if trace.framework and spec.framework and trace.framework.split()[0] != spec.framework.split()[0]:
        raise LoopvizError(f"this trace is of {trace.framework}, the loop of {spec.framework}: they cannot be matched.")
    table = trace.loops_df()
    every = table[table["outermost"]]
    if loops == "auto":
        loops = _matching(spec, every) or None
    if loops is None:
        loops = [int(i) for i in every["loop"]]
    else:
        from loopviz.trace.select import loop_indices

        loops = sorted(loop_indices(trace.loops, loops))
    whole = trace.select(_with_descendants(table, loops, through_events=True))
    trace = trace.select(_with_descendants(table, loops, through_events=False))
    outer = _outermost(trace)
    used, n_loops = list(dict.fromkeys(outer["label"])), len(outer)
    run_ms = trace.total_ns() / 1e6
    summary = list(trace.summary().itertuples())
    events = {(row.name, row.phase): _timing(row.count, row.total_ms, run_ms) for row in summary if row.kind == "event"}
    work = {(row.name, row.phase): _timing(row.count, row.total_ms, run_ms) for row in summary if row.kind == "work"}
    by_callback = trace.by_callback()
    calls = {(row.callback, row.event, row.phase): _timing(row.ran, row.total_ms, run_ms)
             for row in by_callback.itertuples() if row.ran}
    changed: dict[tuple[str, str, str], tuple[str, ...]] = {}
    if trace.tracked_changes:
        for row in trace.changes().itertuples():
            key = (row.callback, row.event, row.phase)
            changed[key] = (*changed.get(key, ()), row.attribute)
    unseen = _unseen_callbacks(spec, trace, calls)

    def event(ev: Event, phase: Phase | None) -> Event:
        mode = ev.mode or ""
        handlers = [replace(h, timing=calls.get((h.callback.cls, ev.name, mode)),
                            changes=changed.get((h.callback.cls, ev.name, mode), ())) for h in ev.handlers]
        shown = {h.callback.cls for h in handlers}
        for info in unseen:
            timing = calls.get((info.cls, ev.name, mode))
            if timing is not None and info.cls not in shown:
                handlers.append(Handler(info, _UNSEEN_DOC, "none", timing=timing,
                                        changes=changed.get((info.cls, ev.name, mode), ())))
        handlers.sort(key=lambda h: h.callback.order)  # stable: fastai's call order
        return replace(ev, handlers=handlers, timing=events.get((ev.name, mode)))

    def work_timing(step: Work, phase: Phase) -> Work:
        return replace(step, timing=work.get((step.name, phase.mode or "")))

    labels = ", ".join(used) or "no loop"
    annotated = spec.map(event=event, work=work_timing)
    notes = [*spec.notes, *_unseen_notes(unseen), *_nested_notes(whole, run_ms), *_other_loops_notes(every, loops),
             *cap_notes(trace.data)]
    return replace(annotated, callbacks=[*spec.callbacks, *unseen], notes=notes,
                   measured=f"measured: {trace.clock} clock, {run_ms:,.1f} ms over {n_loops} loop(s) ({labels})"
                   + (", added up at each step" if n_loops > 1 else ""))


def _unseen_callbacks(spec: LoopSpec, trace: Any, calls: dict[tuple[str, str, str], Timing]) -> list[CallbackInfo]:
    """Callbacks the trace saw run that the spec does not list, as the trace describes them."""
    listed = {info.cls for info in spec.callbacks}
    ran = {cls for cls, _, _ in calls}
    out: dict[str, CallbackInfo] = {}
    for facts in trace.callbacks:
        cls = str(facts.get("cls", ""))
        if cls and cls in ran and cls not in listed and cls not in out:
            out[cls] = CallbackInfo(str(facts.get("name", "")), cls, str(facts.get("module", "")),
                                    float(facts.get("order", 0) or 0))
    return list(out.values())


def _unseen_notes(unseen: list[CallbackInfo]) -> list[str]:
    if not unseen:
        return []
    names = ", ".join(info.cls for info in unseen)
    return [f"The trace saw {names} run, which the learner did not hold when this view was built "
            "(passed to fit(cbs=...) or added by an entry point): shown where the trace saw them run."]


def _other_loops_notes(outermost: Any, used: list[int]) -> list[str]:
    """What the trace holds that this view leaves out: its other loops, by label."""
    others = [str(label) for i, label in zip(outermost["loop"], outermost["label"]) if int(i) not in used]
    if not others:
        return []
    listed = ", ".join(f"{label} (×{n})" if n > 1 else label for label, n in
                       ((label, others.count(label)) for label in dict.fromkeys(others)))
    return [f"The trace also ran {listed}, which this view leaves out: choose it with loop=..."]


def _nested_notes(trace: Any, run_ms: float) -> list[str]:
    """One note per kind of loop a callback's handler ran (FetchPredsCallback's get_preds inside after_validate)."""
    loops = trace.loops_df()
    inside = loops[loops["inside_event"] != ""]
    if not len(inside):
        return []
    out = []
    for (label, event), group in inside.groupby(["label", "inside_event"], sort=False):
        total = float(group["dur_ms"].sum())
        share = f" ({100 * total / run_ms:.1f}% of the run)" if run_ms else ""
        indices = ", ".join(str(int(i)) for i in group["loop"][:5]) + (", ..." if len(group) > 5 else "")
        out.append(f"A nested loop ran inside {event}, {len(group)}× ({label}), {total:,.1f} ms{share}: its time is "
                   f"part of {event}'s; this view does not draw it. See it with trace.select([{indices}]).")
    return out
