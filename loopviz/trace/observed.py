"""The loop of a trace as it was observed, as a `LoopSpec` any loop view can draw; and the measured times every
annotated view puts on a spec.

Both are pure functions of a `TraceData` that read only the reports (`loopviz.trace.reports`): the counts and
times come from `summary`, `by_callback` and `work_pairs`, which add the aggregates kept past the record caps,
so every view shows the numbers the summary shows.

The observed loop: its events (one per event and phase) in the order they first fired; runs of events in one
phase (train, valid) as phases; a stretch of events the loop went back over (a transition from an event to one
that first fired earlier) as a repeated phase, called a batch when it is the innermost holding the adapter's batch
events; the work between events before the event it leads to (unnamed gaps under SMALL_SHARE of the run left
out, with a note); the events fired inside another event (Lightning's closure
inside optimizer_step) in a phase after it; the loops it ran between its events (Lightning's sanity check) as
phases of their own; and at each event the callbacks that really ran there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopviz.model import CallbackInfo, Event, Handler, LoopSpec, Mode, Phase, Step, Timing, Work
from loopviz.trace.batches import batch_events
from loopviz.trace.data import TraceData, callback_of_facts
from loopviz.trace.notes import cap_notes
from loopviz.trace.reports import (
    CLEANUP, SETUP, WORK_FALLBACK, by_callback, firings_df, loops_df, summary, total_ns, work_pairs,
)
from loopviz.trace.select import select_loops

__all__ = ["Timings", "timings", "observed_spec", "sub_loops", "loop_of_phase", "OBSERVED_DOC"]

Key = tuple[str, str]  # (event, phase): one event of the observed loop
SMALL_SHARE = 0.5  # % of the run: unnamed work between two events below this is not drawn (a note counts it)
OBSERVED_DOC = "Seen running here in the trace."


def timing(count: int, total_ms: float, run_ms: float) -> Timing:
    """A step's `Timing`: count, total, mean and share of a run of `run_ms`."""
    return Timing(int(count), float(total_ms), float(total_ms) / count if count else 0.0,
                  100 * float(total_ms) / run_ms if run_ms else 0.0)


@dataclass(frozen=True)
class Timings:
    """The measured times of one selection of a trace, keyed as the loop views look them up."""

    run_ms: float
    events: dict[Key, Timing]  # (event, phase) of the loop's own events
    nested: dict[Key, Timing]  # (event, phase) of events fired inside another event
    work: dict[Key, Timing]  # (work name, phase) at the loop's own level
    nested_work: dict[Key, Timing]
    calls: dict[tuple[str, str, str], Timing]  # (callback class, event, phase): the calls that ran

    def event(self, name: str, phase: str) -> Timing | None:
        """An event's timing: as one of the loop's own events, else as a nested one (run inside another event)."""
        return self.events.get((name, phase)) or self.nested.get((name, phase))


def timings(data: TraceData, run_ms: float | None = None) -> Timings:
    """The counts and times of `data` from its summary and per-callback report; shares of `run_ms` (default: the
    data's own run)."""
    run = total_ns(data) / 1e6 if run_ms is None else run_ms
    by_kind: dict[str, dict[Key, Timing]] = {}
    for row in summary(data).itertuples():
        by_kind.setdefault(row.kind, {})[(str(row.name), str(row.phase))] = timing(row.count, row.total_ms, run)
    calls = {(str(r.callback), str(r.event), str(r.phase)): timing(r.ran, r.total_ms, run)
             for r in by_callback(data).itertuples() if r.ran}
    return Timings(run, by_kind.get("event", {}), by_kind.get("nested event", {}), by_kind.get("work", {}),
                   by_kind.get("nested work", {}), calls)


def sub_loops(data: TraceData, loop: int) -> list[int]:
    """The loops that `loop` ran between its events (Lightning's sanity check), not inside a callback's handler."""
    table = loops_df(data)
    return [int(i) for i, parent, inside in zip(table["loop"], table["parent"], table["inside_event"])
            if parent == loop and inside == ""]


def observed_spec(data: TraceData, loop: int) -> LoopSpec:
    """The loop `loop` of `data` as it ran (see the module's doc), with each event, piece of work and handler timed."""
    own = select_loops(data, [loop])
    run_ms = total_ns(own) / 1e6
    scope = select_loops(data, [loop, *_descendants(data, loop)])
    pairs = work_pairs(scope)
    small: list[Work] = []  # unnamed work left out: too small to draw
    root = _loop_phase(data, loop, run_ms, pairs, small)
    label = data.loops[loop]
    notes = [*_handler_loop_notes(data, loop), *_small_work_notes(small, run_ms), *cap_notes(data)]
    return LoopSpec(loop=label, framework=data.framework or "unknown framework", phases=[root],
                    callbacks=_callbacks(data), notes=notes,
                    measured=f"observed: {data.clock} clock, {run_ms:,.1f} ms (loop {loop} {label!r})")


def _small_work_notes(small: list[Work], run_ms: float) -> list[str]:
    """One note on the unnamed gaps between events too small to draw: how many, and their time."""
    if not small:
        return []
    total = sum(w.timing.total_ms for w in small if w.timing)
    return [f"{len(small)} gaps between events that the adapter names no work for, each under {SMALL_SHARE:g} % of the "
            f"run ({total:,.1f} ms in all, {100 * total / run_ms if run_ms else 0:.1f} %), are not drawn; "
            "t.summary()'s 'between events' rows hold them."]


def _handler_loop_notes(data: TraceData, loop: int) -> list[str]:
    """One note per loop a callback's handler ran inside an event of `loop` (its time is that event's)."""
    table = loops_df(data)
    inside = table[(table["parent"] == loop) & (table["inside_event"] != "")]
    return [f"A loop ran inside {event} ({label}, loop {int(i)}): its time is part of {event}'s, and it is not drawn "
            f"here." for i, label, event in zip(inside["loop"], inside["label"], inside["inside_event"])]


def _descendants(data: TraceData, loop: int) -> list[int]:
    """The loops run between the events of `loop`, and those run between theirs, and so on."""
    found: list[int] = []
    for child in sub_loops(data, loop):
        found += [child, *_descendants(data, child)]
    return found


def _callbacks(data: TraceData) -> list[CallbackInfo]:
    """The callbacks the trace saw, once per class, in call order."""
    seen: dict[str, CallbackInfo] = {}
    for facts in data.callbacks:
        cls = str(facts.get("cls", ""))
        if cls and cls not in seen:
            seen[cls] = callback_of_facts(facts)
    return sorted(seen.values(), key=lambda info: info.order)


# -- one loop -------------------------------------------------------------------------------------


@dataclass
class _Level:
    """One nesting level of a loop: its events in first-firing order, the transitions between them, and what ran
    inside each event."""

    keys: list[Key]
    pairs: list[tuple[Key, Key, str]]  # (from, to, work name), in the order they first ran
    nested: bool
    children: dict[Key, "_Level"] = field(default_factory=dict)
    loops: dict[int, int] = field(default_factory=dict)  # sub-loop -> how many of `keys` first fired before it


def _loop_phase(data: TraceData, loop: int, run_ms: float, pairs: pd.DataFrame, small: list[Work]) -> Phase:
    """One loop (and, as phases of their own, the loops it ran between its events) as a phase; unnamed work too small
    to draw goes to `small`."""
    own = select_loops(data, [loop])
    times = timings(own, run_ms)
    firings = firings_df(own)
    label = data.loops[loop]
    seen = _keys(firings[firings["parent"] == -1])
    keys = seen + [key for key in times.events if key not in seen]  # with the events seen only past the cap
    top = (firings["parent"] == -1).to_numpy()
    level = _Level(keys, _transitions(keys, firings[top], pairs[(pairs["loop"] == label) & ~pairs["nested"]]), False)
    level.loops = _sub_loop_places(data, loop, firings)
    _nest_levels(level, firings, pairs[(pairs["loop"] == label) & pairs["nested"]])
    steps = _Writer(data, times, run_ms, pairs, label, small).steps(level)
    # an entry point's own work before and after: outermost loops only (a loop inside another has none of its own)
    outermost = loop not in {int(i) for i in loops_df(data).query("not outermost")["loop"]}
    setup, cleanup = (times.work.get((SETUP, "")), times.work.get((CLEANUP, ""))) if outermost else (None, None)
    if setup:
        steps.insert(0, Work(SETUP, "", "The entry point's own work before the loop's first event.", timing=setup))
    if cleanup:
        steps.append(Work(CLEANUP, "", "The entry point's own work after the loop's last event.", timing=cleanup))
    return Phase(f"{_LOOP_PHASE}{loop}", label, steps)


_LOOP_PHASE = "loop "  # the name of an observed loop's phase, before its index


def loop_of_phase(phase: Phase, default: int) -> int:
    """The loop an observed spec's phase stands for (its root, or a loop it ran between its events), else `default`."""
    rest = phase.name.removeprefix(_LOOP_PHASE)
    return int(rest) if rest != phase.name and rest.isdigit() else default


def _sub_loop_places(data: TraceData, loop: int, firings: pd.DataFrame) -> dict[int, int]:
    """Per loop `loop` ran between its events: how many of its own events had first fired when that loop began."""
    top = firings[firings["parent"] == -1]
    first = top.assign(name=top["event"].astype(str)).groupby(["name", "phase"], sort=False)["start"].min()
    starts = loops_df(data).set_index("loop")["start"]
    return {child: int((first < int(starts.loc[child])).sum()) for child in sub_loops(data, loop)}


def _keys(firings: pd.DataFrame) -> list[Key]:
    """(event, phase) of the firings, in the order they first fired."""
    first = firings[["event", "phase"]].astype(str).drop_duplicates()
    return list(zip(first["event"], first["phase"]))


def _level(firings: pd.DataFrame, mask: Any, pairs: pd.DataFrame, nested: bool) -> _Level:
    """The events of the firings under `mask` in first-firing order, and the transitions in `pairs` between them."""
    keys = _keys(firings[mask])
    return _Level(keys, _transitions(keys, firings[mask], pairs), nested)


def _transitions(keys: list[Key], siblings: pd.DataFrame, pairs: pd.DataFrame) -> list[tuple[Key, Key, str]]:
    """The transitions between two of `keys`, named as `pairs` names their work: those between consecutive raw
    `siblings` (firings of one parent), then the pairs seen only past the cap, whose earlier event is taken in the
    later one's phase when it fired there, else in the first phase it fired in."""
    names = {(str(a), str(b), str(ph)): str(w) for w, a, b, ph in
             zip(pairs["work"], pairs["after"], pairs["before"], pairs["phase"])}
    order = list(zip(siblings["event"].astype(str), siblings["phase"].astype(str)))
    parent = siblings["parent"].to_numpy()
    seen = dict.fromkeys((order[i - 1], order[i]) for i in range(1, len(order)) if parent[i] == parent[i - 1])
    out = [(a, b, names[(a[0], b[0], b[1])]) for a, b in seen if (a[0], b[0], b[1]) in names]
    covered = {(a[0], b) for a, b, _ in out}
    for (after, before, phase), work in names.items():
        to = (before, phase)
        start = (after, phase) if (after, phase) in keys else next((k for k in keys if k[0] == after), None)
        if to in keys and start is not None and (after, to) not in covered:
            out.append((start, to, work))
    return out


def _nest_levels(level: _Level, firings: pd.DataFrame, nested_pairs: pd.DataFrame) -> None:
    """The events fired inside each event of `level`, as levels of their own, recursively."""
    names = firings["event"].astype(str).to_numpy()
    phases = firings["phase"].astype(str).to_numpy()
    parents = firings["parent"].to_numpy()
    inside = parents >= 0
    of = np.where(inside, parents, 0)  # the parent firing of each nested firing (0 for the others, masked out)
    parent_names, parent_phases = names[of], phases[of]

    def fill(into: _Level, path: tuple[Key, ...]) -> None:
        for key in into.keys:
            mask = inside & (parent_names == key[0]) & (parent_phases == key[1])
            if mask.any() and key not in path:  # an event fired inside itself is drawn once
                child = _level(firings, mask, nested_pairs, True)
                into.children[key] = child
                fill(child, (*path, key))

    if inside.any():
        fill(level, ())


# -- steps: phases from the order, work before the events ---------------------------------------


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    mode: str  # the phase of every event in it, or ''
    repeats: bool
    batch: bool = False  # the innermost repeated stretch holding the batch events


class _Writer:
    """Turns a level into steps: events, the work before them, repeated stretches and phases as `Phase`s."""

    def __init__(self, data: TraceData, times: Timings, run_ms: float, pairs: pd.DataFrame, label: str,
                 small: list[Work]):
        self.data = data
        self.times = times
        self.batch = batch_events(data)
        self.run_ms = run_ms
        self.pairs = pairs  # of this loop and those it ran between its events
        self.mine = pairs[pairs["loop"] == label]
        self.small = small
        self.placed: set[tuple[str, str, bool]] = set()  # (work name, phase, nested) already drawn
        self.infos = {info.cls: info for info in _callbacks(data)}

    def steps(self, level: _Level) -> list[Step]:
        """The level's steps, its sub-loops where they ran."""
        steps = self.nest(level, 0, len(level.keys) - 1, _spans(level, self.batch))
        for child, position in sorted(level.loops.items(), key=lambda item: -item[1]):
            inner = _loop_phase(self.data, child, self.run_ms, self.pairs, self.small)
            steps.insert(self.index_of(steps, level, position), inner)
        return steps

    def index_of(self, steps: list[Step], level: _Level, position: int) -> int:
        """Where a sub-loop goes in the top steps: after the steps holding the first `position` events."""
        if position >= len(level.keys):
            return len(steps)
        wanted = level.keys[position]
        for i, step in enumerate(steps):
            events = [step] if isinstance(step, Event) else step.events() if isinstance(step, Phase) else []
            if any((e.name, e.mode or "") == wanted for e in events):
                while i > 0 and isinstance(steps[i - 1], Work):
                    i -= 1  # before the work that leads to it
                return i
        return len(steps)

    def nest(self, level: _Level, lo: int, hi: int, spans: list[_Span]) -> list[Step]:
        """The steps of events lo..hi, the spans inside it as phases."""
        steps: list[Step] = []
        i = lo
        while i <= hi:
            here = [s for s in spans if s.start == i]
            if here:
                outer = max(here, key=lambda s: (s.end, s.repeats))
                inner = [s for s in spans if s != outer and outer.start <= s.start and s.end <= outer.end]
                steps.append(self.phase(level, outer, self.nest(level, outer.start, outer.end, inner)))
                i = outer.end + 1
                continue
            steps += self.event_steps(level, level.keys[i])
            i += 1
        return steps

    def phase(self, level: _Level, span: _Span, steps: list[Step]) -> Phase:
        """A repeated stretch (a batch when it opens with the batch event), or a run of events of one phase."""
        first = level.keys[span.start]
        mode: Mode | None = span.mode or None  # type: ignore[assignment]
        if not span.repeats:
            name = {"train": "train", "valid": "valid"}.get(span.mode, span.mode)
            return Phase(name, {"train": "Training", "valid": "Validation"}.get(span.mode, span.mode), steps,
                         mode=mode)
        count = self.event_timing(level, first)
        repeat = f"ran {count.count:,}×" if count else "repeated"
        if span.batch:
            label = f"Batch ({span.mode})" if span.mode else "Batch"
            return Phase("batch", label, steps, repeat=repeat, mode=mode)
        last = level.keys[span.end]
        return Phase("repeat", f"{first[0]} … {last[0]}", steps, repeat=repeat, mode=mode)

    def event_timing(self, level: _Level, key: Key) -> Timing | None:
        return (self.times.nested if level.nested else self.times.events).get(key)

    def event_steps(self, level: _Level, key: Key) -> list[Step]:
        """The work that leads to an event, the event, and what ran inside it."""
        steps: list[Step] = [*self.work_before(level, key), self.event(level, key)]
        child = level.children.get(key)
        if child is not None:
            inner = self.nest(child, 0, len(child.keys) - 1, _spans(child, self.batch))
            mode: Mode | None = key[1] or None  # type: ignore[assignment]
            steps.append(Phase(f"inside_{key[0]}", f"Inside {key[0]}", inner, mode=mode, minor=True))
        return steps

    def event(self, level: _Level, key: Key) -> Event:
        name, phase = key
        handlers = [Handler(info, OBSERVED_DOC, "none", timing=t) for info, t in self.handlers(name, phase)]
        where = "inside another event" if level.nested else "at the loop's own level"
        mode: Mode | None = phase or None  # type: ignore[assignment]
        return Event(name, f"{name} ({phase or 'no phase'}), fired {where}.", handlers, mode=mode,
                     timing=self.event_timing(level, key))

    def handlers(self, event: str, phase: str) -> list[tuple[CallbackInfo, Timing]]:
        """The callbacks that ran at this event, in call order, with their times."""
        found = [(self.infos[cls], t) for (cls, ev, ph), t in self.times.calls.items()
                 if ev == event and ph == phase and cls in self.infos]
        return sorted(found, key=lambda pair: pair[0].order)

    def work_before(self, level: _Level, key: Key) -> list[Work]:
        """The work leading to `key`: each named piece once (where it first leads), and unnamed work from the
        event just before it."""
        out: list[Work] = []
        index = level.keys.index(key)
        for start, to, name in level.pairs:
            if to != key:
                continue
            if name == WORK_FALLBACK:
                if index and start == level.keys[index - 1]:
                    gap = self.unnamed(level, start, key)
                    big = gap.timing is not None and gap.timing.pct >= SMALL_SHARE
                    (out if big else self.small).append(gap)
                continue
            mark = (name, key[1], level.nested)
            if mark in self.placed:
                continue
            self.placed.add(mark)
            t = (self.times.nested_work if level.nested else self.times.work).get((name, key[1]))
            out.append(Work(name, "", f"Work the loop did before {key[0]} ({key[1] or 'no phase'}).", timing=t))
        return out

    def unnamed(self, level: _Level, start: Key, to: Key) -> Work:
        """Work between two events that the adapter has no name for, timed from that pair alone."""
        pairs = self.mine
        rows = pairs[(pairs["after"] == start[0]) & (pairs["before"] == to[0]) & (pairs["phase"] == to[1])
                     & (pairs["nested"] == level.nested) & (pairs["work"] == WORK_FALLBACK)]
        t = timing(int(rows["count"].sum()), float(rows["total_ms"].sum()), self.run_ms) if len(rows) else None
        return Work(WORK_FALLBACK, "", f"Between {start[0]} and {to[0]} ({to[1] or 'no phase'}).", timing=t)


def _spans(level: _Level, batch: tuple[str, str]) -> list[_Span]:
    """The level's repeated stretches (merged until they nest) and, at a loop's own level, its runs of one phase, cut
    where they cross them."""
    index = {key: i for i, key in enumerate(level.keys)}
    loops: set[tuple[int, int]] = {(index[to], index[start]) for start, to, _ in level.pairs
                                   if index[to] <= index[start]}
    loops = _laminar(loops)
    modes = {i: key[1] for i, key in enumerate(level.keys)}
    holding = {(s, e) for s, e in loops if set(batch) <= {level.keys[i][0] for i in range(s, e + 1)}}
    batches = {a for a in holding if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in holding)}
    spans = [_Span(s, e, _mode_of(modes, s, e), True, (s, e) in batches) for s, e in sorted(loops)]
    if level.nested:
        return spans  # inside an event: in its phase
    for lo, hi in _runs(modes):  # cut where a repeated stretch crosses the run's ends
        cuts = sorted({lo, hi + 1, *(e + 1 for s, e in loops if s < lo <= e < hi),
                       *(s for s, e in loops if lo < s <= hi < e)})
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a >= 2 and (a, b - 1) not in loops:
                spans.append(_Span(a, b - 1, modes[a], False))
    return spans


def _laminar(spans: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Spans merged where two overlap without one holding the other, until every two are nested or apart."""
    spans = set(spans)
    while True:
        clash = next(((a, b) for a in spans for b in spans if a[0] < b[0] <= a[1] < b[1]), None)
        if clash is None:
            return spans
        a, b = clash
        spans -= {a, b}
        spans.add((a[0], b[1]))


def _runs(modes: dict[int, str]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive events in one phase (train or valid)."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(modes) + 1):
        if i == len(modes) or modes[i] != modes[start]:
            if modes[start]:
                runs.append((start, i - 1))
            start = i
    return runs


def _mode_of(modes: dict[int, str], start: int, end: int) -> str:
    found = {modes[i] for i in range(start, end + 1)}
    return found.pop() if len(found) == 1 else ""
