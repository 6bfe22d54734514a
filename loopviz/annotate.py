"""Put a trace's measured times on a loop spec, so every view can show where the time went."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loopviz.checks import check_type
from loopviz.errors import LoopvizError
from loopviz.model import CallbackInfo, Event, Handler, LoopSpec, Phase, Timing, Work
from loopviz.trace.notes import cap_notes, check_recorded_a_loop

if TYPE_CHECKING:  # the analysis imports pandas: `import loopviz` stays light
    from loopviz.trace.observed import Timings

__all__ = ["annotate", "matching_loops", "spec_loop_of", "traced_loop", "check_loop_matches"]

_UNSEEN_DOC = "Not among the callbacks this view was built with; the trace saw it run here (e.g. passed to fit(cbs=...))."


def _outermost(trace: Any) -> Any:
    """The trace's loops that no other loop or event ran (a fit, a validate... called by the user)."""
    check_recorded_a_loop(trace.data, so="there are no times to put on the loop")
    loops = trace.loops_df()
    return loops[loops["outermost"]]


def spec_loop_of(label: str, known: Any) -> str | None:
    """The spec loop a trace's loop label ran: its outermost entry point loopviz knows ('fine_tune > fit_one_cycle >
    fit' -> 'fine_tune'), or None."""
    return next((name for name in label.split(" > ") if name in known), None)


def traced_loop(trace: Any, known: Any, default: str) -> str:
    """The first loop of `known` (an adapter's LOOPS) the trace ran ('fine_tune' for 'fine_tune > fit_one_cycle >
    fit'); `default` when it ran none of them."""
    for label in _outermost(trace)["label"]:
        found = spec_loop_of(str(label), known)
        if found is not None:
            return found
    return default


def matching_loops(spec: LoopSpec, trace: Any) -> list[int]:
    """Indices of the trace's outermost loops that ran the spec's loop: its label, or one of the entry points its
    label chains ('fit_one_cycle > fit' ran fit_one_cycle and fit)."""
    return _matching(spec, _outermost(trace))


def _matching(spec: LoopSpec, outer: Any) -> list[int]:
    return [int(i) for i, label in zip(outer["loop"], outer["label"]) if spec.loop in str(label).split(" > ")]


def check_loop_matches(spec: LoopSpec, trace: Any) -> None:
    """A clear error when the trace ran loops but none of them is the spec's: its times would be another loop's."""
    outer = _outermost(trace)
    labels = list(dict.fromkeys(str(label) for label in outer["label"]))
    if labels and not _matching(spec, outer):
        ran = " and ".join(repr(label) for label in labels)
        entry = labels[0].split(" > ")[0]
        raise LoopvizError(f"this trace ran {ran}; the view asks for {spec.loop!r}: pass loop={entry!r} or trace "
                           f"{spec.loop}.")


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

    `loops='auto'` uses the trace's loops that ran this spec's loop (an error naming both when the trace ran other
    loops only); `None` uses every loop; a list of labels or indices picks those. Each loop is counted once: a loop
    run between another's events (Lightning's sanity check) times the spec's phase of its name only, and loops a
    callback's handler ran (FetchPredsCallback's get_preds) are not mixed in: the notes describe them. Events fired
    inside another event (Lightning's closure inside optimizer_step) are timed as run. Callbacks the trace saw run
    that the spec lacks are added where they ran.
    """
    from loopviz.trace.observed import timings
    from loopviz.trace.trace import check_trace

    check_type("spec", spec, LoopSpec, "a LoopSpec (learn.loop_spec())")
    check_trace("trace", trace)
    if trace.framework and spec.framework and trace.framework.split()[0] != spec.framework.split()[0]:
        raise LoopvizError(f"this trace is of {trace.framework}, the loop of {spec.framework}: they cannot be matched.")
    check_recorded_a_loop(trace.data, so="there are no times to put on the loop")
    table = trace.loops_df()
    every = table[table["outermost"]]
    if loops == "auto":
        check_loop_matches(spec, trace)
        loops = _matching(spec, every) or None
    if loops is None:
        loops = [int(i) for i in every["loop"]]
    else:
        from loopviz.trace.select import loop_indices

        loops = sorted(loop_indices(trace.loops, loops))
    whole = trace.select(_with_descendants(table, loops, through_events=True))
    chosen = _with_descendants(table, loops, through_events=False)
    trace = trace.select(chosen)
    run_ms = trace.total_ns() / 1e6
    inner = _phase_loops(spec, table, chosen)  # loops run between another's events, timed on their own phase
    times = timings(trace.select([i for i in chosen if not any(i in group for group in inner.values())]).data, run_ms)
    by_phase = {name: timings(trace.select(group).data, run_ms) for name, group in inner.items()}
    owner = _owners(spec, by_phase)
    outer = _outermost(trace)
    used, n_loops = list(dict.fromkeys(outer["label"])), len(outer)
    changed: dict[tuple[str, str, str], tuple[str, ...]] = {}
    if trace.tracked_changes:
        for row in trace.changes().itertuples():
            key = (row.callback, row.event, row.phase)
            changed[key] = (*changed.get(key, ()), row.attribute)
    unseen = _unseen_callbacks(spec, trace, times.calls)

    def event(ev: Event, phase: Phase | None) -> Event:
        mode, measured = ev.mode or "", owner.get(id(ev), times)
        handlers = [replace(h, timing=measured.calls.get((h.callback.cls, ev.name, mode)),
                            changes=changed.get((h.callback.cls, ev.name, mode), ())) for h in ev.handlers]
        shown = {h.callback.cls for h in handlers}
        for info in unseen:
            timing = measured.calls.get((info.cls, ev.name, mode))
            if timing is not None and info.cls not in shown:
                handlers.append(Handler(info, _UNSEEN_DOC, "none", timing=timing,
                                        changes=changed.get((info.cls, ev.name, mode), ())))
        handlers.sort(key=lambda h: h.callback.order)  # stable: fastai's call order
        return replace(ev, handlers=handlers, timing=measured.event(ev.name, mode))

    data_timing = _data_timing(trace)

    def work_timing(step: Work, phase: Phase) -> Work:
        measured, key = owner.get(id(step), times), (step.name, phase.mode or "")
        timed = measured.work.get(key) or measured.nested_work.get(key)
        loop = step.data_loop
        if loop is not None and loop.name in data_timing:
            loop = replace(loop, timing=data_timing[loop.name])
        return replace(step, timing=timed, data_loop=loop)

    labels = ", ".join(used) or "no loop"
    annotated = spec.map(event=event, work=work_timing)
    notes = [*spec.notes, *_unseen_notes(unseen), *_nested_notes(whole, run_ms), *_other_loops_notes(every, loops),
             *cap_notes(trace.data)]
    return replace(annotated, callbacks=[*spec.callbacks, *unseen], notes=notes,
                   measured=f"measured: {trace.clock} clock, {run_ms:,.1f} ms over {n_loops} loop(s) ({labels})"
                   + (", added up at each step" if n_loops > 1 else ""))


def _data_timing(trace: Any) -> dict[str, tuple[tuple[str, str, float, float], ...]]:
    """Per loader the trace timed (data=True): (stage, step, ms per batch, % of its work) of each stage and step."""
    if not trace.data_work:
        return {}
    table = trace.data_summary()
    out: dict[str, tuple[tuple[str, str, float, float], ...]] = {}
    for loader, rows in table.groupby("loader", sort=False):
        out[str(loader)] = tuple((str(r.stage), str(r.step), float(r.ms_per_batch), float(r.pct))
                                 for r in rows.itertuples())
    return out


def _phase_loops(spec: LoopSpec, table: Any, chosen: list[int]) -> dict[str, list[int]]:
    """Per phase name of the spec, the chosen loops of that label run between another loop's events (not inside a
    handler): Lightning's sanity check, drawn as a phase of fit."""
    names = {p.name for top in spec.phases for p in [top, *top.phases()]}
    found: dict[str, list[int]] = {}
    for i, label, parent, inside in zip(table["loop"], table["label"], table["parent"], table["inside_event"]):
        if int(i) in chosen and parent in chosen and inside == "" and label in names:
            found.setdefault(str(label), []).append(int(i))
    return found


def _owners(spec: LoopSpec, by_phase: dict[str, Timings]) -> dict[int, Timings]:
    """The timings of each event and piece of work (by id()) inside a phase that a loop of its own ran."""
    out: dict[int, Timings] = {}
    for top in spec.phases:
        for phase in [top, *top.phases()]:
            if phase.name in by_phase:
                out.update({id(step): by_phase[phase.name] for _, step in phase.walk() if not isinstance(step, Phase)})
    return out


def _unseen_callbacks(spec: LoopSpec, trace: Any, calls: dict[tuple[str, str, str], Timing]) -> list[CallbackInfo]:
    """Callbacks the trace saw run that the spec does not list, as the trace describes them."""
    from loopviz.trace.data import callback_of_facts

    listed = {info.cls for info in spec.callbacks}
    ran = {cls for cls, _, _ in calls}
    out: dict[str, CallbackInfo] = {}
    for facts in trace.callbacks:
        cls = str(facts.get("cls", ""))
        if cls and cls in ran and cls not in listed and cls not in out:
            out[cls] = callback_of_facts(facts)
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
