"""Reports on trace data, as pandas DataFrames: the raw tables, where the time went, what changed.

Each report is a function of a `TraceData`; `Trace` calls them. Aggregates kept past the raw-record cap
are split by loop in the data and added up over loops here, so reports count every record once.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from loopviz.checks import got
from loopviz.errors import LoopvizError
from loopviz.trace.data import Aggregate, TraceData, is_outermost, merged_changes, without_loop
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_STATUS, CALL_FIELDS, CH_ATTR, CH_CALLBACK, CH_FIRING, F_DEV_END, F_DEV_START,
    F_END, F_EPOCH, F_EVENT, F_ITER, F_LOOP, F_MODE, F_PARENT, F_START, F_STATUS, FIRING_FIELDS, MODES, NCH,
    STATUS,
)

__all__ = ["firing_matrix", "call_matrix", "change_matrix", "firings_df", "timeline", "calls_df", "work_df", "total_ns", "summary",
           "by_callback", "RowDurations", "row_durations", "to_df", "changes", "who_changed", "gpu_waits", "wait_lines", "to_unix_ns", "origin_ns", "root_loops", "outermost_spans", "roots_of", "sibling_pairs", "loops_df",
           "work_pairs"]

WORK_FALLBACK = "between events"  # the work between two events its adapter names no work for
SETUP = "setup"  # an outermost loop's entry point before its first event (fastai's fit: callbacks, optimizer)
CLEANUP = "cleanup"  # after its last event, until the entry point returns
_NO_DURATIONS = np.zeros(0, np.int64)
_SKIPPED = ("no_handler", "skipped", "skipped_in_train", "skipped_in_valid")


# -- the flat records as matrices -------------------------------------------------------------


def _matrix(buffer: Any, width: int) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.int64).reshape(-1, width) if buffer else np.zeros((0, width), np.int64)


def firing_matrix(data: TraceData) -> np.ndarray:
    """The firings as an (n, NF) int64 matrix in FIRING_FIELDS order."""
    return data.firings.matrix()


def call_matrix(data: TraceData) -> np.ndarray:
    """The callback calls as an (n, NC) int64 matrix in CALL_FIELDS order."""
    return data.calls.matrix()


def change_matrix(data: TraceData) -> np.ndarray:
    """The logged state changes as an (n, NCH) int64 matrix (a view, not a copy)."""
    return _matrix(data.change_log, NCH)


# -- raw tables -------------------------------------------------------------------------------


def firings_df(data: TraceData) -> pd.DataFrame:
    """One row per event firing: event, phase, epoch, iter, loop, start/end (ns, host), duration, status, and
    `tl_start`/`tl_dur`: on the timeline the work between events is on (the device's with clock 'cuda' or 'sync',
    where the firing has device times; else the host's)."""
    m = firing_matrix(data)
    df = pd.DataFrame(m, columns=list(FIRING_FIELDS))
    df["event"] = pd.Categorical.from_codes(m[:, F_EVENT], categories=data.events) if len(m) else pd.Series([], dtype=str)
    df["phase"] = _names(MODES, m[:, F_MODE])
    df["loop"] = _names(data.loops, m[:, F_LOOP])
    df["dur"] = df["end"] - df["start"]
    start, end = timeline(m)
    df["tl_start"], df["tl_dur"] = start, end - start
    df["status"] = _names(("ok", *STATUS[1:]), m[:, F_STATUS])
    df["loop_index"] = m[:, F_LOOP]
    return df


def timeline(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each firing's (row of a firing matrix) start and end on the timeline the work between events is on: the
    device's where the firing has device times (clock 'cuda' or 'sync'), else the host's."""
    on_device = (m[:, F_DEV_START] >= 0) & (m[:, F_DEV_END] >= 0)
    return np.where(on_device, m[:, F_DEV_START], m[:, F_START]), np.where(on_device, m[:, F_DEV_END], m[:, F_END])


def calls_df(data: TraceData) -> pd.DataFrame:
    """One row per callback call: the firing it is in, callback, start (ns), duration, status."""
    m = call_matrix(data)
    firings = firing_matrix(data)
    df = pd.DataFrame(m, columns=list(CALL_FIELDS))
    df["callback"] = _names([c["cls"] for c in data.callbacks], m[:, C_CALLBACK])
    df["status"] = _names(STATUS, m[:, C_STATUS])
    df["event"] = _names(data.events, firings[m[:, C_FIRING], F_EVENT])
    df["phase"] = _names(MODES, firings[m[:, C_FIRING], F_MODE])
    return df


def root_loops(data: TraceData) -> np.ndarray:
    """Per loop, the outermost loop it runs in (itself when outermost): the run is tiled loop by outermost loop."""
    roots = np.arange(len(data.loops))
    for index, span in enumerate(data.loop_spans[:len(roots)]):
        parent = span[2]
        while 0 <= parent < len(roots) and parent != roots[parent]:
            parent = roots[parent]
        if 0 <= parent < len(roots) and span[3] == -1:
            roots[index] = parent
    return roots


def roots_of(data: TraceData, loops: np.ndarray) -> np.ndarray:
    """The outermost loop each of `loops` (loop indices, as firings hold them) runs in; -1 for none (a firing outside
    any loop, or a loop this trace does not hold)."""
    roots = root_loops(data)
    if not len(roots):
        return np.full(len(loops), -1)
    return np.where((loops >= 0) & (loops < len(roots)), roots[np.clip(loops, 0, len(roots) - 1)], -1)


def sibling_pairs(roots: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): the row indices of each pair of consecutive firings at one level (the same outermost loop and parent
    firing), given each firing's outermost loop and parent in firing order: the work between them is `b`'s start
    less `a`'s end."""
    order = np.lexsort((np.arange(len(roots)), parents, roots))  # by outermost loop, parent, firing order
    a, b = order[:-1], order[1:]
    keep = (roots[a] == roots[b]) & (parents[a] == parents[b])
    return a[keep], b[keep]


def outermost_spans(data: TraceData) -> list[tuple[int, list[int]]]:
    """(loop, span) of the loops not inside another loop or firing, that this trace holds."""
    return [(i, span) for i, span in enumerate(data.loop_spans)
            if span[0] >= 0 and span[1] >= span[0] and is_outermost(span)]


def work_df(data: TraceData) -> pd.DataFrame:
    """The work between consecutive firings at one nesting level of one outermost loop (draw, forward, loss...),
    plus each outermost loop's setup before its first event and cleanup after its last; `nested` marks the work
    done inside another firing (already part of that firing's time)."""
    m = firing_matrix(data)
    columns = ["work", "after", "before", "phase", "epoch", "iter", "loop", "start", "dur", "nested"]
    frames = [_edges_df(data, m)]
    if len(m) >= 2:
        frames.append(_pairs_df(data, m))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns].sort_values("start", kind="stable", ignore_index=True)


def _pairs_df(data: TraceData, m: np.ndarray) -> pd.DataFrame:
    """The work between consecutive raw firings that share a parent firing and an outermost loop."""
    start, end = timeline(m)
    a, b = sibling_pairs(roots_of(data, m[:, F_LOOP]), m[:, F_PARENT])
    named = _work_names_by_id(data)  # looked up per pair: a table of every pair grows with events squared
    work = [named.get(pair, WORK_FALLBACK) for pair in zip(m[a, F_EVENT].tolist(), m[b, F_EVENT].tolist())]
    return pd.DataFrame({
        "work": np.array(work, dtype=object), "after": _names(data.events, m[a, F_EVENT]),
        "before": _names(data.events, m[b, F_EVENT]), "phase": _names(MODES, m[b, F_MODE]), "epoch": m[b, F_EPOCH],
        "iter": m[b, F_ITER], "loop": _names(data.loops, m[b, F_LOOP]), "start": end[a], "dur": start[b] - end[a],
        "nested": m[b, F_PARENT] != -1,
    })


def _edges_df(data: TraceData, m: np.ndarray) -> pd.DataFrame:
    """Each outermost loop's setup (its entry point's call to its first event) and cleanup (last event to return)."""
    rows = []
    for loop, (start, end, _, _, first, last) in outermost_spans(data):
        if first < 0:  # not recorded (a loop that was nested before a select, an old file): from its raw firings
            own = m[(m[:, F_LOOP] == loop) & (m[:, F_PARENT] == -1)]
            if not len(own):
                continue
            first, last = int(own[:, F_START].min()), int(own[:, F_END].max())
        rows.append((SETUP, "", "", "", -1, -1, data.loops[loop], start, max(first - start, 0), False))
        if last < end:
            rows.append((CLEANUP, "", "", "", -1, -1, data.loops[loop], last, end - last, False))
    return pd.DataFrame(rows, columns=["work", "after", "before", "phase", "epoch", "iter", "loop", "start", "dur",
                                       "nested"])


def loops_df(data: TraceData) -> pd.DataFrame:
    """One row per loop this trace holds: index, label, start/end (ns), duration (ms), the loop it ran in (-1: none),
    the event whose handler ran it ('' when it ran between events), and whether it is outermost (part of the run)."""
    m = firing_matrix(data)
    rows = []
    for index, span in enumerate(data.loop_spans):
        start, end, parent, firing, _, _ = span
        if start < 0:
            continue
        inside = ""
        if 0 <= firing < len(m):
            inside = data.events[m[firing, F_EVENT]]
        elif firing == -2:
            inside = "(an event past the record cap)"
        rows.append((index, data.loops[index], start, end, (end - start) / 1e6, parent, inside, is_outermost(span)))
    return pd.DataFrame(rows, columns=["loop", "label", "start", "end", "dur_ms", "parent", "inside_event", "outermost"])


# -- where the time went ----------------------------------------------------------------------


def total_ns(data: TraceData) -> int:
    """Wall time of the run: each outermost loop from its entry point's call to its return, summed. Exact past
    the record caps (loop spans are kept whatever the cap)."""
    spans = outermost_spans(data)
    if spans:
        return int(sum(span[1] - span[0] for _, span in spans))
    m = firing_matrix(data)  # a trace without loops: its top-level firings' extent
    if not len(m):
        return sum(a.total for a in data.overflow_firings.values())
    top = m[m[:, F_PARENT] == -1]
    return int(top[:, F_END].max() - top[:, F_START].min()) if len(top) else 0


def summary(data: TraceData) -> pd.DataFrame:
    """Where the time went: per event and phase, and per kind of work, count, total, mean, p50, p95, max (ms)
    and % of the run.

    Rows of kind 'event' (the loops' own events) and 'work' (between them, plus each loop's setup and cleanup)
    tile the run: their shares add up to 100 %. The other kinds break down time already inside an event:
    'nested event' and 'nested work' (a loop or event run by a callback's handler, e.g. FetchPredsCallback's
    get_preds) and 'dispatch' (the loop's own cost of calling every callback).
    """
    firings = firings_df(data)
    nested = (firings["parent"] != -1).to_numpy() if len(firings) else np.zeros(0, bool)
    rows = _event_rows(data, firings[~nested], without_loop(data.overflow_firings), "event")
    rows += _event_rows(data, firings[nested], without_loop(data.overflow_nested), "nested event")
    rows += _work_rows(data, work_df(data))
    rows += _dispatch_rows(data, firings[~nested])
    df = pd.DataFrame(rows, columns=["kind", "name", "phase", "count", "total_ms", "mean_ms", "p50_ms", "p95_ms", "max_ms",
                                     "approx"])
    total = total_ns(data) / 1e6
    df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
    return df


def _event_rows(data: TraceData, firings: pd.DataFrame, overflow: dict[tuple[int, ...], Aggregate],
                kind: str) -> list[tuple[Any, ...]]:
    """Rows of one kind of event: the raw firings per (event, phase), with the aggregates past the cap."""
    raw = {(data.events.index(str(event)), MODES.index(phase)): group["tl_dur"].to_numpy()  # on work's timeline
           for (event, phase), group in firings.groupby(["event", "phase"], observed=True, sort=False)}
    return _stat_rows(raw, overflow, lambda key: (kind, data.events[key[0]], MODES[key[1]]))


def _work_rows(data: TraceData, work: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows of work per (name, phase): raw pairs and loop edges, with the work aggregated past the cap."""
    names = _work_names_by_id(data)
    overflow: dict[tuple[str, str, bool], Aggregate] = {}
    for (_, before, after, mode, inside), agg in data.overflow_work.items():
        key = (names.get((before, after), WORK_FALLBACK), MODES[mode], bool(inside))
        overflow[key] = overflow[key].plus(agg) if key in overflow else agg
    raw = {(name, phase, bool(inside)): group["dur"].to_numpy()
           for (name, phase, inside), group in work.groupby(["work", "phase", "nested"], sort=False)}
    return _stat_rows(raw, overflow, lambda key: ("nested work" if key[2] else "work", key[0], key[1]))


def work_pairs(data: TraceData) -> pd.DataFrame:
    """The work between each pair of consecutive sibling firings (after, before, phase and loop of `before`, nested
    or not): its name, count, total, mean, p50, p95, max (ms) and whether the percentiles are approximate, the pairs past
    the cap included; in the order the pairs first ran (past the cap: first counted). The observed loop's edges."""
    names = _work_names_by_id(data)
    overflow: dict[tuple[str, str, str, str, bool, str], Aggregate] = {}
    for (loop, earlier, later, mode, inside), agg in data.overflow_work.items():
        key = (names.get((earlier, later), WORK_FALLBACK), data.events[earlier], data.events[later], MODES[mode],
               bool(inside), data.loops[loop] if 0 <= loop < len(data.loops) else "")
        overflow[key] = overflow[key].plus(agg) if key in overflow else agg
    work = work_df(data)
    work = work[(work["after"] != "") & (work["before"] != "")]
    raw = {(str(name), str(after), str(before), str(phase), bool(inside), str(loop)): group["dur"].to_numpy()
           for (name, after, before, phase, inside, loop), group in
           work.groupby(["work", "after", "before", "phase", "nested", "loop"], sort=False)}
    rows = [(*key, *_stats(raw.get(key, _NO_DURATIONS), overflow.get(key)))
            for key in [*raw, *(key for key in overflow if key not in raw)]]
    return pd.DataFrame(rows, columns=["work", "after", "before", "phase", "nested", "loop", "count", "total_ms",
                                       "mean_ms", "p50_ms", "p95_ms", "max_ms", "approx"])


def _stat_rows(raw: dict[Any, np.ndarray], overflow: dict[Any, Aggregate],
               label: Callable[[Any], tuple[str, str, str]]) -> list[tuple[Any, ...]]:
    """One row per key: its (kind, name, phase) label and the stats of its raw durations with its aggregate past
    the cap; keys with raw records first, in their order, then those only past the cap."""
    keys = [*raw, *(key for key in overflow if key not in raw)]
    return [(*label(key), *_stats(raw.get(key, _NO_DURATIONS), overflow.get(key))) for key in keys]


def _work_names_by_id(data: TraceData) -> dict[tuple[int, int], str]:
    """`work_names` keyed by the ids of the two events (those this trace has)."""
    ids = {event: i for i, event in enumerate(data.events)}
    return {(ids[before], ids[after]): work for (before, after), work in data.work_names.items()
            if before in ids and after in ids}


def _dispatch_rows(data: TraceData, top: pd.DataFrame) -> list[tuple[Any, ...]]:
    """One row: the time inside the loop's own events that no callback's call accounts for (the loop calling every
    callback). Past the cap its count and total are exact (the events' total less the calls' total) but no firing's
    own share is known, so its p50, p95 and max are the recorded firings' only: marked approx."""
    if not len(top) and not data.overflow_firings:
        return []
    per_firing = _dispatch_per_firing(data, top)
    name = _dispatch_label(data)
    if not (data.overflow_firings or data.overflow_calls):
        return [("dispatch", name, "", *_stats(per_firing, None))]
    extra_total = sum(a.total for a in data.overflow_firings.values()) - sum(a.total for a in data.overflow_calls.values())
    count = len(per_firing) + sum(a.count for a in data.overflow_firings.values())
    total = int(per_firing.sum()) + extra_total
    mean = total / count if count else 0.0
    biggest = int(per_firing.max()) if len(per_firing) else 0
    p50, p95 = _exact_percentiles(per_firing)
    return [("dispatch", name, "", count, total / 1e6, mean / 1e6, p50 / 1e6, p95 / 1e6, biggest / 1e6, True)]


def _dispatch_per_firing(data: TraceData, top: pd.DataFrame) -> np.ndarray:
    """Per recorded top-level firing, its time that no callback's call accounts for (ns)."""
    calls = call_matrix(data)
    direct = pd.Series(calls[:, C_DUR]).groupby(calls[:, C_FIRING]).sum() if len(calls) else pd.Series(dtype=np.int64)
    return top["dur"].to_numpy() - direct.reindex(top.index, fill_value=0).to_numpy()


def _dispatch_label(data: TraceData) -> str:
    """The dispatch row's name: the adapter's (files before it gave one: see files.py)."""
    return data.meta.get("dispatch_label", "dispatch")


_TALLY = {"ran": 0, **{name: 1 for name in _SKIPPED}, "cancelled": 2, "error": 3}  # by_callback's status columns


def by_callback(data: TraceData) -> pd.DataFrame:
    """Per callback, event and phase: calls, how many ran/skipped/cancelled/raised, total, mean and p95 time, and
    `approx`: whether the p95 is from the sketch of calls past the cap (`_stats`)."""
    raw: dict[tuple[str, str, str], np.ndarray] = {}
    tallies: dict[tuple[str, str, str], list[int]] = {}  # ran, skipped, cancelled, errors
    for key, group in calls_df(data).groupby(["callback", "event", "phase"], sort=False):
        status = group["status"]
        raw[key] = group["dur"].to_numpy()
        tallies[key] = [int((status == "ran").sum()), int(status.isin(_SKIPPED).sum()),
                        int((status == "cancelled").sum()), int((status == "error").sum())]
    overflow: dict[tuple[str, str, str], Aggregate] = {}
    for (eid, mode, cid, st), agg in without_loop(data.overflow_calls).items():
        key = (data.callbacks[cid]["cls"], data.events[eid] if eid >= 0 else "", MODES[mode])
        overflow[key] = overflow[key].plus(agg) if key in overflow else agg
        tallies.setdefault(key, [0, 0, 0, 0])[_TALLY[STATUS[st]]] += agg.count
    rows = []
    for key in [*raw, *(key for key in overflow if key not in raw)]:
        count, total_ms, mean_ms, _, p95_ms, _, approx = _stats(raw.get(key, _NO_DURATIONS), overflow.get(key))
        rows.append((*key, count, *tallies[key], total_ms, mean_ms * 1e3, p95_ms * 1e3, approx))
    df = pd.DataFrame(rows, columns=["callback", "event", "phase", "calls", "ran", "skipped", "cancelled", "errors",
                                     "total_ms", "mean_us", "p95_us", "approx"])
    total = total_ns(data) / 1e6
    df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
    return df.sort_values("total_ms", ascending=False, ignore_index=True)


class RowDurations(NamedTuple):
    """The raw durations (ns) behind the rows of `summary` and `by_callback`, keyed as their rows are ((kind, name,
    phase) and (callback, event, phase)), and each batch's step time (ns): what a comparison of two traces tests.
    Records past the raw-record cap are in the rows' aggregates only, not here."""

    summary: dict[tuple[str, str, str], np.ndarray]
    by_callback: dict[tuple[str, str, str], np.ndarray]
    steps: np.ndarray


def row_durations(data: TraceData) -> RowDurations:
    """Per row of `summary` and of `by_callback`, the raw duration of each occurrence (a firing, a piece of work,
    a call: for batch events and work, one per batch), and the step times: from one batch's opening event to the
    next one's, in one epoch and phase of one loop (the last batch of each has none)."""
    firings = firings_df(data)
    nested = (firings["parent"] != -1).to_numpy() if len(firings) else np.zeros(0, bool)
    rows: dict[tuple[str, str, str], np.ndarray] = {}
    for kind, part in (("event", firings[~nested]), ("nested event", firings[nested])):
        for (event, phase), group in part.groupby(["event", "phase"], observed=True, sort=False):
            rows[(kind, str(event), phase)] = group["tl_dur"].to_numpy()
    for (name, phase, inside), group in work_df(data).groupby(["work", "phase", "nested"], sort=False):
        rows[("nested work" if inside else "work", name, phase)] = group["dur"].to_numpy()
    top = firings[~nested]
    if len(top):
        rows[("dispatch", _dispatch_label(data), "")] = _dispatch_per_firing(data, top)
    calls = calls_df(data)
    by_cb = {(cb, event, phase): group["dur"].to_numpy()
             for (cb, event, phase), group in calls.groupby(["callback", "event", "phase"], sort=False)}
    return RowDurations(rows, by_cb, _step_times(data, top))


def _step_times(data: TraceData, top: pd.DataFrame) -> np.ndarray:
    """The time from each batch's opening event to the next one's in the same loop, epoch and phase (ns)."""
    from loopviz.trace.batches import batch_events  # it imports this module

    opens = top[top["event"].astype(str) == batch_events(data)[0]]
    steps = [np.diff(np.sort(group["tl_start"].to_numpy()))
             for _, group in opens.groupby(["loop_index", "epoch", "phase"], sort=False)]
    return np.concatenate(steps) if steps else _NO_DURATIONS


def to_df(data: TraceData) -> pd.DataFrame:
    """Every span (event firings, callback calls, work between events) in one DataFrame, times in ms from the start."""
    firings, calls, work = firings_df(data), calls_df(data), work_df(data)
    origin = origin_ns(data)
    fm = firing_matrix(data)
    in_firing = calls["firing"].to_numpy()
    frames = [
        pd.DataFrame({"kind": "event", "name": firings["event"].astype(str), "callback": "", "phase": firings["phase"],
                      "epoch": firings["epoch"], "iter": firings["iter"], "loop": firings["loop"],
                      "start_ms": (firings["tl_start"] - origin) / 1e6, "dur_ms": firings["tl_dur"] / 1e6,
                      "status": firings["status"]}),
        pd.DataFrame({"kind": "callback", "name": calls["event"], "callback": calls["callback"], "phase": calls["phase"],
                      "epoch": fm[in_firing, F_EPOCH], "iter": fm[in_firing, F_ITER],
                      "loop": _names(data.loops, fm[in_firing, F_LOOP]),
                      "start_ms": (calls["start"] - origin) / 1e6, "dur_ms": calls["dur"] / 1e6, "status": calls["status"]}),
        pd.DataFrame({"kind": "work", "name": work["work"], "callback": "", "phase": work["phase"], "epoch": work["epoch"],
                      "iter": work["iter"], "loop": work["loop"], "start_ms": (work["start"] - origin) / 1e6,
                      "dur_ms": work["dur"] / 1e6, "status": "ok"}),
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["kind", "name", "callback", "phase", "epoch", "iter", "loop", "start_ms", "dur_ms",
                                     "status"])
    return pd.concat(frames, ignore_index=True).sort_values("start_ms", kind="stable", ignore_index=True)


# -- what changed -----------------------------------------------------------------------------


def changes(data: TraceData) -> pd.DataFrame:
    """Which learner state each callback changed, per event and phase: how often, first and last (epoch, iter)."""
    _need_changes(data)
    rows = [(data.callbacks[cid]["cls"], data.events[eid] if eid >= 0 else "", MODES[mode], data.attrs[aid], *agg)
            for (eid, mode, cid, aid), agg in merged_changes(data.change_agg).items()]
    df = pd.DataFrame(rows, columns=["callback", "event", "phase", "attribute", "count", "first_epoch", "first_iter",
                                     "last_epoch", "last_iter"])
    return df.sort_values(["event", "phase", "callback", "attribute"], ignore_index=True)


def who_changed(data: TraceData, attribute: str) -> pd.DataFrame:
    """Every recorded change of one attribute, in time order: when, at which event, by which callback."""
    _need_changes(data)
    matches = [i for i, name in enumerate(data.attrs) if name == attribute or name.split(".")[-1] == attribute
               or name == f"learn.{attribute}"]
    if not matches:
        known = ", ".join(sorted(data.attrs)) or "none"
        raise LoopvizError(f"no callback changed {attribute!r} in this trace; changed attributes: {known}.")
    log = change_matrix(data)
    log = log[np.isin(log[:, CH_ATTR], matches)]
    firings = firing_matrix(data)
    at = log[:, CH_FIRING]
    return pd.DataFrame({
        "epoch": firings[at, F_EPOCH], "iter": firings[at, F_ITER], "phase": _names(MODES, firings[at, F_MODE]),
        "event": _names(data.events, firings[at, F_EVENT]),
        "callback": _names([c["cls"] for c in data.callbacks], log[:, CH_CALLBACK]),
        "attribute": _names(data.attrs, log[:, CH_ATTR]), "loop": _names(data.loops, firings[at, F_LOOP]),
    })


def _need_changes(data: TraceData) -> None:
    if not data.tracked_changes:
        raise LoopvizError("this trace did not record state changes; trace with learn.trace(changes=True).")


# -- waits for the GPU --------------------------------------------------------------------------

WAIT_COLUMNS = ["kind", "name", "phase", "calls", "of", "syncs", "wait_ms", "mean_ms", "max_ms", "site"]


def gpu_waits(data: TraceData) -> pd.DataFrame:
    """The callback calls and work that made the host wait for the GPU, most waited first: how many of them
    synchronised (`calls`, of `of`), their synchronising operations, the GPU work they waited out (ms: in all, per
    call that synchronised, the longest) and where the first synchronisation was made."""
    if not data.tracked_waits:
        raise LoopvizError("this trace did not record waits for the GPU; trace with learn.trace(waits=True) on a "
                           "CUDA machine.")
    merged: dict[tuple[str, str, str], list[Any]] = {}
    names = _work_names_by_id(data)
    for (_, event, mode, callback, following), (calls, syncs, total, longest, site) in data.wait_agg.items():
        event_name = data.events[event] if event >= 0 else ""
        if callback >= 0:
            key = ("callback", f"{data.callbacks[callback]['cls']}.{event_name}", MODES[mode])
        else:
            work = names.get((event, following), WORK_FALLBACK) if following >= 0 else f"after {event_name}"
            key = ("work", work, MODES[mode])
        entry = merged.setdefault(key, [0, 0, 0, 0, site])
        entry[0] += calls
        entry[1] += syncs
        entry[2] += total
        entry[3] = max(entry[3], longest)
    counts = _counts(data) if merged else {}
    rows = [(*key, calls, counts.get(key, calls), syncs, total / 1e6, total / calls / 1e6, longest / 1e6, site)
            for key, (calls, syncs, total, longest, site) in merged.items()]
    df = pd.DataFrame(rows, columns=WAIT_COLUMNS)
    return df.sort_values(["wait_ms", "calls"], ascending=False, kind="stable", ignore_index=True)


def _counts(data: TraceData) -> dict[tuple[str, str, str], int]:
    """How many calls each (callback.event, phase) made and how many pieces of each (work, phase) ran."""
    calls = by_callback(data)
    counts = {("callback", f"{cb}.{event}", phase): int(n)
              for cb, event, phase, n in zip(calls["callback"], calls["event"], calls["phase"], calls["calls"])}
    table = summary(data)
    work = table[table["kind"].isin(["work", "nested work"])]
    for name, phase, n in zip(work["name"], work["phase"], work["count"]):
        key = ("work", name, phase)
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def wait_lines(waits: pd.DataFrame, limit: int | None = 3) -> list[str]:
    """The `gpu_waits` rows as sentences, most waited first: who waits for the GPU, how often, how long."""
    lines = []
    for row in waits.head(limit if limit is not None else len(waits)).itertuples():
        who = row.name if row.kind == "callback" else f"the work {row.name!r}"
        phase = f" ({row.phase})" if row.phase else ""
        noun = "calls" if row.kind == "callback" else "runs"
        often = f"all {row.of:,} {noun}" if row.calls >= row.of else f"{row.calls:,} of {row.of:,} {noun}"
        lines.append(f"{who}{phase} waits for the GPU in {often}: ~{row.mean_ms:.2f} ms each, {row.wait_ms:,.1f} ms in "
                     f"all, first at {row.site}")
    return lines


# -- time -------------------------------------------------------------------------------------


def origin_ns(data: TraceData) -> int:
    """Where the trace's timeline starts (host ns): the first loop's entry point, or the first firing."""
    starts = [span[0] for span in data.loop_spans if span[0] >= 0]
    if data.n_firings:
        starts.append(int(firing_matrix(data)[:, F_START].min()))
    return min(starts) if starts else 0


def to_unix_ns(data: TraceData, host_ns: Any) -> Any:
    """Host-clock times of this trace (ns, scalar or array) as wall-clock ns since the epoch."""
    if isinstance(host_ns, bool) or np.asarray(host_ns).dtype.kind not in "iuf":
        raise LoopvizError(f"host_ns must be host-clock nanoseconds (a number or an array of numbers), not {got(host_ns)}.")
    origin = data.meta.get("perf_origin_ns")
    if origin is None:  # a trace without a recorded origin: anchor its first firing at its start time
        origin = int(firing_matrix(data)[:, F_START].min()) if data.n_firings else 0
    return host_ns - origin + int(data.meta.get("start_unix_ns", 0))


# -- helpers ----------------------------------------------------------------------------------


def _names(names: Any, codes: np.ndarray) -> np.ndarray:
    """Names for integer codes, vectorised; '' for a code of -1 (no loop, no firing)."""
    table = np.array([*names, ""], dtype=object)
    return table[np.where((codes >= 0) & (codes < len(names)), codes, len(names))]


def _exact_percentiles(durations: np.ndarray) -> tuple[float, float]:
    """p50 and p95 of raw durations: the values at rank ceil(q * n), as the sketch past the cap defines them."""
    if not len(durations):
        return 0.0, 0.0
    p50, p95 = np.percentile(durations, [50, 95], method="inverted_cdf")
    return float(p50), float(p95)


def _stats(durations: np.ndarray, extra: Aggregate | None) -> tuple[int, float, float, float, float, float, bool]:
    """count, total, mean, p50, p95, max (ms) and whether the percentiles are approximate: every statistic of a
    view comes from here. p50/p95 are the durations at rank ceil(q * count), one definition whatever the cap: without
    an aggregate past the cap, exact; with one, the raw durations join its sketch and the value at that rank is within
    the sketch's relative error (`loopviz.trace.sketch.ALPHA`; a factor of 1.42 for files before version 5), clamped
    to [min, max]."""
    if extra is None or extra.count == 0:
        count, total = len(durations), int(durations.sum())
        biggest = int(durations.max()) if count else 0
        p50, p95 = _exact_percentiles(durations)
        approx = False
    else:
        every = extra.with_durations(durations)
        count, total, biggest = every.count, every.total, every.max
        p50, p95, approx = every.quantile(0.5), every.quantile(0.95), True
    mean = total / count if count else 0.0
    return count, total / 1e6, mean / 1e6, p50 / 1e6, p95 / 1e6, biggest / 1e6, approx
