"""Reports on trace data, as pandas DataFrames: the raw tables, where the time went, what changed.

Each report is a function of a `TraceData`; `Trace` calls them. Aggregates kept past the raw-record cap
are split by loop in the data and added up over loops here, so reports count every record once.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loopviz.errors import LoopvizError
from loopviz.trace.data import Aggregate, TraceData, merged_changes, without_loop
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_STATUS, CALL_FIELDS, CH_ATTR, CH_CALLBACK, CH_FIRING, F_DEV_END, F_DEV_START,
    F_END, F_EPOCH, F_EVENT, F_ITER, F_LOOP, F_MODE, F_PARENT, F_START, F_STATUS, FIRING_FIELDS, MODES, NC, NCH, NF,
    STATUS,
)

__all__ = ["firing_matrix", "call_matrix", "change_matrix", "firings_df", "calls_df", "work_df", "total_ns", "summary",
           "by_callback", "to_df", "changes", "who_changed", "to_unix_ns"]

WORK_FALLBACK = "between events"
_SKIPPED = ("no_handler", "skipped_run", "skipped_run_train", "skipped_run_valid")


# -- the flat records as matrices -------------------------------------------------------------


def _matrix(buffer: Any, width: int) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.int64).reshape(-1, width) if buffer else np.zeros((0, width), np.int64)


def firing_matrix(data: TraceData) -> np.ndarray:
    """The firings as an (n, NF) int64 matrix (a view, not a copy)."""
    return _matrix(data.firings, NF)


def call_matrix(data: TraceData) -> np.ndarray:
    """The callback calls as an (n, NC) int64 matrix (a view, not a copy)."""
    return _matrix(data.calls, NC)


def change_matrix(data: TraceData) -> np.ndarray:
    """The logged state changes as an (n, NCH) int64 matrix (a view, not a copy)."""
    return _matrix(data.change_log, NCH)


# -- raw tables -------------------------------------------------------------------------------


def firings_df(data: TraceData) -> pd.DataFrame:
    """One row per event firing: event, phase, epoch, iter, loop, start/end (ns), duration, status."""
    m = firing_matrix(data)
    df = pd.DataFrame(m, columns=list(FIRING_FIELDS))
    df["event"] = pd.Categorical.from_codes(m[:, F_EVENT], categories=data.events) if len(m) else pd.Series([], dtype=str)
    df["phase"] = _names(MODES, m[:, F_MODE])
    df["loop"] = _names(data.loops, m[:, F_LOOP])
    df["dur"] = df["end"] - df["start"]
    df["status"] = _names(("ok", *STATUS[1:]), m[:, F_STATUS])
    df["loop_index"] = m[:, F_LOOP]
    return df


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


def work_df(data: TraceData) -> pd.DataFrame:
    """The work between consecutive firings of one loop and nesting level (draw, forward, loss...)."""
    m = firing_matrix(data)
    columns = ["work", "after", "before", "phase", "epoch", "iter", "loop", "start", "dur"]
    if len(m) < 2:
        return pd.DataFrame(columns=columns)
    start = np.where(m[:, F_DEV_START] >= 0, m[:, F_DEV_START], m[:, F_START])
    end = np.where(m[:, F_DEV_END] >= 0, m[:, F_DEV_END], m[:, F_END])
    order = np.lexsort((np.arange(len(m)), m[:, F_PARENT], m[:, F_LOOP]))  # by loop, then parent, then firing order
    a, b = order[:-1], order[1:]
    keep = (m[a, F_LOOP] == m[b, F_LOOP]) & (m[a, F_PARENT] == m[b, F_PARENT])
    a, b = a[keep], b[keep]
    n = len(data.events)
    names = np.full(n * n, WORK_FALLBACK, dtype=object)
    for (before, after), work in data.work_names.items():
        if before in data.events and after in data.events:
            names[data.events.index(before) * n + data.events.index(after)] = work
    frame = pd.DataFrame({
        "work": names[m[a, F_EVENT] * n + m[b, F_EVENT]], "after": _names(data.events, m[a, F_EVENT]),
        "before": _names(data.events, m[b, F_EVENT]), "phase": _names(MODES, m[b, F_MODE]), "epoch": m[b, F_EPOCH],
        "iter": m[b, F_ITER], "loop": _names(data.loops, m[b, F_LOOP]), "start": end[a], "dur": start[b] - end[a],
    }, columns=columns)
    return frame.sort_values("start", kind="stable", ignore_index=True)


# -- where the time went ----------------------------------------------------------------------


def total_ns(data: TraceData) -> int:
    """Wall time covered by the traced loops: first firing's start to last firing's end, per loop, summed."""
    m = firing_matrix(data)
    if not len(m):
        return sum(a.total for a in data.overflow_firings.values())
    top = m[m[:, F_PARENT] == -1]
    frame = pd.DataFrame({"loop": top[:, F_LOOP], "start": top[:, F_START], "end": top[:, F_END]})
    spans = frame.groupby("loop").agg(start=("start", "min"), end=("end", "max"))
    return int((spans["end"] - spans["start"]).sum())


def summary(data: TraceData) -> pd.DataFrame:
    """Per event and phase, and per kind of work: count, total, mean, p50, p95, max (ms) and % of the run."""
    firings = firings_df(data)
    overflow = without_loop(data.overflow_firings)
    rows = []
    for (event, phase), group in firings.groupby(["event", "phase"], observed=True, sort=False):
        extra = overflow.get((data.events.index(str(event)), MODES.index(phase)))
        rows.append(("event", str(event), phase, *_stats(group["dur"].to_numpy(), extra)))
    for (eid, mode), agg in overflow.items():
        if not ((firings["event"] == data.events[eid]) & (firings["phase"] == MODES[mode])).any():
            rows.append(("event", data.events[eid], MODES[mode], *_stats(np.zeros(0, np.int64), agg)))
    work = work_df(data)
    for (name, phase), group in work.groupby(["work", "phase"], sort=False):
        rows.append(("work", name, phase, *_stats(group["dur"].to_numpy(), None)))
    dispatch = _dispatch_ns(data, firings)
    if len(dispatch):
        rows.append(("work", "dispatch (fastai's own)" if data.framework.startswith("fastai") else "dispatch", "",
                     *_stats(dispatch, None)))
    df = pd.DataFrame(rows, columns=["kind", "name", "phase", "count", "total_ms", "mean_ms", "p50_ms", "p95_ms", "max_ms",
                                     "approx"])
    total = total_ns(data) / 1e6
    df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
    return df


def _dispatch_ns(data: TraceData, firings: pd.DataFrame) -> np.ndarray:
    """Per firing: time inside the event that no callback's call accounts for (the loop's own dispatch)."""
    calls = call_matrix(data)
    if not len(firings):
        return np.zeros(0, np.int64)
    direct = np.zeros(len(firings), np.int64)
    np.add.at(direct, calls[:, C_FIRING], calls[:, C_DUR])
    # nested firings happen inside a callback's call, so they are already inside `direct`
    return firings["dur"].to_numpy() - direct


def by_callback(data: TraceData) -> pd.DataFrame:
    """Per callback, event and phase: calls, how many ran/skipped/cancelled/raised, total and mean time."""
    calls = calls_df(data)
    rows = []
    for (cb, event, phase), group in calls.groupby(["callback", "event", "phase"], sort=False):
        status = group["status"]
        dur = group["dur"].to_numpy()
        rows.append((cb, event, phase, len(group), int((status == "ran").sum()),
                     int(status.str.startswith("skipped").sum() + (status == "no_handler").sum()),
                     int((status == "cancelled").sum()), int((status == "error").sum()),
                     dur.sum() / 1e6, dur.mean() / 1e3, float(np.percentile(dur, 95)) / 1e3))
    for (eid, mode, cid, st), agg in without_loop(data.overflow_calls).items():
        name = STATUS[st]
        rows.append((data.callbacks[cid]["cls"], data.events[eid] if eid >= 0 else "", MODES[mode], agg.count,
                     agg.count if name == "ran" else 0, agg.count if name in _SKIPPED else 0,
                     agg.count if name == "cancelled" else 0, agg.count if name == "error" else 0,
                     agg.total / 1e6, agg.total / agg.count / 1e3, _hist_percentile(agg.hist, 95) / 1e3))
    df = pd.DataFrame(rows, columns=["callback", "event", "phase", "calls", "ran", "skipped", "cancelled", "errors",
                                     "total_ms", "mean_us", "p95_us"])
    df = df.groupby(["callback", "event", "phase"], as_index=False, sort=False).agg(
        calls=("calls", "sum"), ran=("ran", "sum"), skipped=("skipped", "sum"), cancelled=("cancelled", "sum"),
        errors=("errors", "sum"), total_ms=("total_ms", "sum"), mean_us=("mean_us", "mean"), p95_us=("p95_us", "max"))
    total = total_ns(data) / 1e6
    df["pct"] = (100 * df["total_ms"] / total).round(2) if total else 0.0
    return df.sort_values("total_ms", ascending=False, ignore_index=True)


def to_df(data: TraceData) -> pd.DataFrame:
    """Every span (event firings, callback calls, work between events) in one DataFrame, times in ms from the start."""
    firings, calls, work = firings_df(data), calls_df(data), work_df(data)
    origin = int(firings["start"].min()) if len(firings) else 0
    fm = firing_matrix(data)
    in_firing = calls["firing"].to_numpy()
    frames = [
        pd.DataFrame({"kind": "event", "name": firings["event"].astype(str), "callback": "", "phase": firings["phase"],
                      "epoch": firings["epoch"], "iter": firings["iter"], "loop": firings["loop"],
                      "start_ms": (firings["start"] - origin) / 1e6, "dur_ms": firings["dur"] / 1e6,
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


# -- time -------------------------------------------------------------------------------------


def to_unix_ns(data: TraceData, host_ns: Any) -> Any:
    """Host-clock times of this trace (ns, scalar or array) as wall-clock ns since the epoch."""
    origin = data.meta.get("perf_origin_ns")
    if origin is None:  # a trace without a recorded origin: anchor its first firing at its start time
        origin = int(firing_matrix(data)[:, F_START].min()) if data.n_firings else 0
    return host_ns - origin + int(data.meta.get("start_unix_ns", 0))


# -- helpers ----------------------------------------------------------------------------------


def _names(names: Any, codes: np.ndarray) -> np.ndarray:
    """Names for integer codes, vectorised; '' for a code of -1 (no loop, no firing)."""
    table = np.array([*names, ""], dtype=object)
    return table[np.where((codes >= 0) & (codes < len(names)), codes, len(names))]


def _stats(durations: np.ndarray, extra: Aggregate | None) -> tuple[int, float, float, float, float, float, bool]:
    """count, total, mean, p50, p95, max (ms) and whether the percentiles are approximate."""
    count = len(durations) + (extra.count if extra else 0)
    total = int(durations.sum()) + (extra.total if extra else 0)
    biggest = max(int(durations.max()) if len(durations) else 0, extra.max if extra else 0)
    if extra is None or extra.count == 0:
        p50, p95 = (float(np.percentile(durations, 50)), float(np.percentile(durations, 95))) if len(durations) else (0.0, 0.0)
        approx = False
    else:
        hist = list(extra.hist)
        for d in durations:
            hist[min(int(d).bit_length(), len(hist) - 1)] += 1
        p50, p95, approx = _hist_percentile(hist, 50), _hist_percentile(hist, 95), True
    mean = total / count if count else 0.0
    return count, total / 1e6, mean / 1e6, p50 / 1e6, p95 / 1e6, biggest / 1e6, approx


def _hist_percentile(hist: list[int], q: float) -> float:
    """A percentile from a log2 histogram: the upper edge (2**bucket ns) of the bucket holding it."""
    total = sum(hist)
    if not total:
        return 0.0
    target = q / 100 * total
    seen = 0
    for bucket, n in enumerate(hist):
        seen += n
        if seen >= target:
            return float(2 ** bucket)
    return float(2 ** (len(hist) - 1))
