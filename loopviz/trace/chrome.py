"""Chrome Trace Event / Perfetto export: complete ("X") events, nested per thread as the loop nests them.

The spans come from one place (`_spans`): per category (loops, event firings, callback calls, the work between
events) columns of names, start times, durations and argument values. `chrome_trace` builds them into a
JSON-ready dict (for merging several traces); `chrome_text` writes them straight to JSON text a column at a
time: numbers turned to text by numpy, and each distinct name, status or small number made once and then
indexed, so a trace of a million calls exports in a second or two rather than building and serialising a
million dicts.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import pandas as pd

from loopviz.trace.jsontext import compact_json
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_START, C_STATUS, F_DEV_START, F_END, F_EPOCH, F_EVENT, F_ITER, F_LOOP, F_MODE,
    F_START, F_STATUS, MODES, STATUS,
)

__all__ = ["chrome_trace", "chrome_text"]

HOST_TID = 1
DEVICE_TID = 2
# each category's arguments, in the order `_spans` gives their values: name and kind (d: an int, s: any other
# JSON value, of which there are few distinct ones, so their JSON text is made once each)
ARGS = {
    "loop": (("loop", "d"), ("label", "s"), ("parent", "d"), ("inside_event", "s")),
    "event": (("phase", "s"), ("epoch", "d"), ("iter", "d"), ("loop", "s"), ("status", "s"), ("firing", "d")),
    "callback": (("callback", "s"), ("order", "s"), ("status", "s"), ("firing", "d")),
    "work": (("after", "s"), ("before", "s"), ("phase", "s"), ("epoch", "d"), ("iter", "d")),
    "data": (("loader", "s"), ("pass", "d"), ("batch", "d"), ("items", "d"), ("pid", "d"), ("steps", "s")),
}
DATA_MAIN_TID = 3  # the main process's part of the data loop (the move to the device, the batch transforms)
DATA_TID = 10  # the first worker track: one per loader and worker id (each pass's worker with that id), from here


class _Header:
    """What every span of one trace shares: its process, its clock origin, and whether it has device times."""

    def __init__(self, trace: Any, origin_unix_ns: int | None, pid: int | None, title: str | None):
        from loopviz.trace.reports import origin_ns

        self.firings, self.calls = trace._firing_matrix(), trace._call_matrix()
        origin = origin_ns(trace.data)
        if origin_unix_ns is not None:  # several traces on one timeline: place this one by the wall clock
            origin = origin - (int(trace.to_unix_ns(origin)) - origin_unix_ns)
        self.origin = origin
        self.pid = int(trace.meta.get("pid", 1)) if pid is None else pid
        self.title = title or f"loopviz: {trace.framework or 'loop'} ({', '.join(dict.fromkeys(trace.loops)) or 'no loop'})"
        self.device = bool(len(self.firings)) and bool((self.firings[:, F_DEV_START] >= 0).any())

    def metadata(self) -> list[dict[str, Any]]:
        """The process and thread names."""
        out = [{"ph": "M", "name": "process_name", "pid": self.pid, "tid": HOST_TID, "args": {"name": self.title}},
               {"ph": "M", "name": "thread_name", "pid": self.pid, "tid": HOST_TID,
                "args": {"name": "host: events, callbacks, work"}}]
        return out

    def device_metadata(self, clock: str) -> list[dict[str, Any]]:
        """The device thread's name, when the trace has device times."""
        return [{"ph": "M", "name": "thread_name", "pid": self.pid, "tid": DEVICE_TID,
                 "args": {"name": f"device ({clock}): work"}}] if self.device else []


class _Column(NamedTuple):
    """One value per row, as a table of values and a code per row: row i's is `table[codes[i]]`, or `table[i]`
    when codes is None. Repeated values (names, statuses, small numbers) are in the table once."""
    table: np.ndarray
    codes: np.ndarray | None = None

    def rows(self) -> np.ndarray:
        """The value of each row."""
        return self.table if self.codes is None else self.table[self.codes]


class _Spans(NamedTuple):
    """One category's spans as columns: shown names, start and duration (int64 ns from the origin) and the
    argument values in ARGS[cat] order (int64 for kind 'd', shown values for kind 's')."""
    cat: str
    tid: int
    names: _Column
    start: np.ndarray
    dur: np.ndarray
    args: list[np.ndarray | _Column]


_Table = Callable[[Iterable[Any]], np.ndarray]


def _spans(trace: Any, head: _Header, shown: Callable[[Any], Any] = lambda v: v) -> Iterator[_Spans]:
    """Every span, a category at a time: loops, event firings, callback calls, work. Names and the other values of
    kind 's' come through `shown` (the text form passes them as JSON text), each distinct value once."""
    seen: dict[tuple[type, Any], Any] = {}

    def table(values: Iterable[Any]) -> np.ndarray:
        """The shown form of each value."""
        out = []
        for v in values:
            key = (type(v), v)  # by type too: 1 and 1.0 are equal keys but not the same JSON
            if key not in seen:
                seen[key] = shown(v)
            out.append(seen[key])
        return _objects(out)

    yield _loop_spans(trace, head, table)
    yield _event_spans(trace, head, table)
    yield _callback_spans(trace, head, table, shown)
    yield _work_spans(trace, head, table)
    yield from _data_spans(trace, head, table)


def _loop_spans(trace: Any, head: _Header, table: _Table) -> _Spans:
    """Each loop's span, from its entry point's call to its return."""
    loops = trace.loops_df()
    labels = loops["label"].tolist()
    names = table([f"loop {i}: {label}" for i, label in zip(loops["loop"].tolist(), labels)])
    start, end = _int64(loops["start"]), _int64(loops["end"])
    args = [_int64(loops["loop"]), _Column(table(labels)), _int64(loops["parent"]),
            _Column(table(loops["inside_event"].tolist()))]
    return _Spans("loop", HOST_TID, _Column(names), start - head.origin, end - start, args)


def _event_spans(trace: Any, head: _Header, table: _Table) -> _Spans:
    """Each event firing."""
    f = head.firings
    loop = f[:, F_LOOP]
    loops = _Column(table([*trace.loops, ""]), np.where(loop >= 0, loop, len(trace.loops)))  # '': in no loop
    args = [_Column(table(MODES), f[:, F_MODE]), f[:, F_EPOCH], f[:, F_ITER], loops, _statuses(table, f[:, F_STATUS]),
            np.arange(len(f), dtype=np.int64)]
    return _Spans("event", HOST_TID, _Column(table(trace.events), f[:, F_EVENT]), f[:, F_START] - head.origin,
                  f[:, F_END] - f[:, F_START], args)


def _callback_spans(trace: Any, head: _Header, table: _Table, shown: Callable[[Any], Any]) -> _Spans:
    """Each callback call, named 'Class.event'."""
    c, infos, events = head.calls, trace.callbacks, trace.events
    cid, firing = c[:, C_CALLBACK], c[:, C_FIRING]
    n_events = max(len(events), 1)
    which, pairs = pd.factorize(cid * n_events + head.firings[firing, F_EVENT])  # each (callback, event) once
    names = _objects([shown(f"{infos[p // n_events]['cls']}.{events[p % n_events]}") for p in pairs.tolist()])
    classes, orders = table([info["cls"] for info in infos]), table([info["order"] for info in infos])
    args = [_Column(classes, cid), _Column(orders, cid), _statuses(table, c[:, C_STATUS]), firing]
    return _Spans("callback", HOST_TID, _Column(names, which), c[:, C_START] - head.origin, c[:, C_DUR], args)


def _work_spans(trace: Any, head: _Header, table: _Table) -> _Spans:
    """The work between events (on the device's thread when the trace has device times)."""
    work = trace.work_df()
    names, afters, befores, phases = (_shown_column(work[c], table) for c in ("work", "after", "before", "phase"))
    args = [afters, befores, phases, _int64(work["epoch"]), _int64(work["iter"])]
    return _Spans("work", DEVICE_TID if head.device else HOST_TID, names, _int64(work["start"]) - head.origin,
                  _int64(work["dur"]), args)


def _data_tracks(trace: Any) -> dict[tuple[str, int], int]:
    """(loader, worker id) -> its track's thread id: the main process's part first, then each loader's workers."""
    if not trace.data_work:
        return {}
    from loopviz.trace.datawork import D_STEP, D_WORKER, MAIN, ND

    m = np.frombuffer(trace.data_work, np.int64).reshape(-1, ND)
    pairs = sorted({(trace.data_steps[s][0], w) for s, w in zip(m[:, D_STEP].tolist(), m[:, D_WORKER].tolist())},
                   key=lambda p: (p[1] != MAIN, p))
    tracks: dict[tuple[str, int], int] = {}
    for loader, worker in pairs:
        tracks[(loader, worker)] = DATA_MAIN_TID if worker == MAIN else DATA_TID + len(tracks)
    return tracks


def _data_metadata(trace: Any, head: _Header) -> list[dict[str, Any]]:
    """The data loop's track names: the main process's part, and each loader's worker processes."""
    out, named = [], set()
    for (loader, worker), tid in _data_tracks(trace).items():
        if tid in named:
            continue
        named.add(tid)
        name = "main process: data loop (to_device, after_batch)" if worker < 0 else f"{loader} loader: worker {worker}"
        out.append({"ph": "M", "name": "thread_name", "pid": head.pid, "tid": tid, "args": {"name": name}})
    return out


def _data_spans(trace: Any, head: _Header, table: _Table) -> Iterator[_Spans]:
    """The data loop (data=True): per batch, each worker's making of it on the worker's track (its steps' times in
    `steps`: items interleave, so only the batch's window is on the timeline), and in the main process each batch's
    move to the device then its batch transforms, each one call, so placed exactly."""
    tracks = _data_tracks(trace)
    if not tracks:
        return
    from loopviz.trace.datatiming import data_df
    from loopviz.trace.datawork import BATCH, MAIN, MOVE, PASS

    df = data_df(trace.data).rename(columns={"pass": "pass_no"})
    df = df[df["stage"] != PASS]
    key = ["loader", "pass_no", "worker", "batch"]
    detail = df[df["stage"] != BATCH]
    labels = [f"{step or stage} {total / 1e6:.3f} ms" for stage, step, total in
              zip(detail["stage"], detail["step"], detail["total"])]
    steps = detail.assign(label=labels).groupby(key, sort=False)["label"].agg(", ".join).to_dict()
    rows: list[tuple[Any, ...]] = []  # (tid, name, start, dur, loader, pass, batch, items, pid, steps)
    for r in df[df["stage"] == BATCH].itertuples():
        rows.append((tracks[(r.loader, r.worker)], f"{r.loader} batch {r.batch}", r.start, r.end - r.start, r.loader,
                     r.pass_no, r.batch, r.count, r.pid, steps.get((r.loader, r.pass_no, r.worker, r.batch), "")))
    main = df[(df["worker"] == MAIN) & (df["step"] == "") & df["stage"].isin([MOVE, "after_batch"])]
    for r in main.itertuples():  # the move starts the batch's main-process window; after_batch ends it
        start = r.start if r.stage == MOVE else r.end - r.total
        rows.append((DATA_MAIN_TID, f"{r.loader} {r.stage}", start, r.total, r.loader, r.pass_no, r.batch, 0, r.pid,
                     steps.get((r.loader, r.pass_no, r.worker, r.batch), "") if r.stage == "after_batch" else ""))
    for tid in dict.fromkeys(row[0] for row in rows):
        _, names, start, dur, loader, pass_no, batch, items, pid, summary = zip(*[row for row in rows if row[0] == tid])
        yield _Spans("data", tid, _Column(table(names)), np.array(start, np.int64) - head.origin,
                     np.array(dur, np.int64), [_Column(table(loader)), np.array(pass_no, np.int64),
                                               np.array(batch, np.int64), np.array(items, np.int64),
                                               np.array(pid, np.int64), _Column(table(summary))])


def _statuses(table: _Table, codes: np.ndarray) -> _Column:
    """Status codes as their names ('ok' for a call or firing that ran)."""
    return _Column(table(("ok", *STATUS[1:])), codes)


def _shown_column(values: pd.Series, table: _Table) -> _Column:
    """A column of strings (the work table's), each distinct one shown once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return _Column(table(uniques), codes)


def _int64(values: pd.Series) -> np.ndarray:
    """A column of integers as an int64 array."""
    return values.to_numpy(dtype=np.int64)


def _objects(values: Iterable[Any]) -> np.ndarray:
    """A 1-d object array of the values (np.array would make a 2-d one of equal-length sequences)."""
    values = list(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _other_data(trace: Any, head: _Header) -> dict[str, Any]:
    return {"baseTimeNanoseconds": int(trace.to_unix_ns(head.origin)), "clock": trace.clock,
            "framework": trace.framework, "notes": trace.notes()}


def chrome_trace(trace: Any, origin_unix_ns: int | None = None, pid: int | None = None, title: str | None = None) -> dict[str, Any]:
    """The trace as a Chrome/Perfetto JSON object: one thread for the host, one for device times if any.

    Event firings enclose the callback calls made inside them; the work between events sits between
    firings, all inside their loop's span. Times are µs from the start of the first loop; `otherData.baseTimeNanoseconds` anchors them.
    """
    head = _Header(trace, origin_unix_ns, pid, title)
    out = head.metadata()
    for spans in _spans(trace, head):
        keys = [key for key, _ in ARGS[spans.cat]]
        columns = (spans.names, spans.start, spans.dur, *spans.args)
        for name, start, dur, *values in zip(*(_values(c) for c in columns)):
            out.append({"ph": "X", "name": name, "cat": spans.cat, "pid": head.pid, "tid": spans.tid,
                        "ts": start / 1000, "dur": dur / 1000, "args": dict(zip(keys, values))})
    out += head.device_metadata(trace.clock) + _data_metadata(trace, head)
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": _other_data(trace, head)}


def _values(column: np.ndarray | _Column) -> list[Any]:
    """A column's values as Python objects, one per row."""
    return (column.rows() if isinstance(column, _Column) else column).tolist()


def chrome_text(trace: Any) -> str:
    """The same Chrome/Perfetto trace as `chrome_trace(trace)`, written straight to compact JSON text."""
    head = _Header(trace, None, None, None)
    parts = ['{"traceEvents":[', ",".join(map(_compact, head.metadata()))]  # never empty: each span follows a comma
    for spans in _spans(trace, head, shown=json.dumps):
        parts.append(_spans_text(spans, head.pid))
    parts += ["," + _compact(m) for m in head.device_metadata(trace.clock) + _data_metadata(trace, head)]
    parts.append(f'],"displayTimeUnit":"ms","otherData":{_compact(_other_data(trace, head))}}}')
    return "".join(parts)


def _compact(obj: Any) -> str:
    """Compact JSON text (no NaN or Infinity: a LoopvizError names one)."""
    return compact_json(obj, "the Chrome trace")


def _spans_text(spans: _Spans, pid: int) -> str:
    """The spans as JSON text, ',{...}' each, as '%.3f' and '%d' would write their times and numbers."""
    pieces: list[str | _Column] = [
        ',{"ph":"X","name":', spans.names, f',"cat":"{spans.cat}","pid":{pid},"tid":{spans.tid},"ts":',
        *_micros(spans.start), ',"dur":', *_micros(spans.dur), ',"args":{']
    for i, ((key, kind), values) in enumerate(zip(ARGS[spans.cat], spans.args)):
        pieces += ["," * (i > 0) + f'"{key}":', values if kind == "s" else _ints(values)]
    pieces.append("}}")
    return _rows_text(pieces, len(spans.start))


def _rows_text(pieces: list[str | _Column], n: int) -> str:
    """`n` rows of text, each the pieces in order (a str: the same in every row; a column: a string per row)."""
    merged: list[str | _Column] = []
    for piece in pieces:
        joined = _joined(merged[-1], piece, n // 4) if merged else None
        if joined is None:
            merged.append(piece)
        else:
            merged[-1] = joined
    grid = np.empty((n, len(merged)), dtype=object)
    for j, piece in enumerate(merged):
        grid[:, j] = piece if isinstance(piece, str) else piece.rows()
    return "".join(grid.ravel().tolist())


def _joined(a: str | _Column, b: str | _Column, most: int) -> str | _Column | None:
    """a's text then b's as one piece, if that takes a table of at most `most` strings; else None.

    Each piece costs about as much per row as a table entry costs once, so joining two pieces into a table of up
    to a quarter as many entries as rows is well worth it (a callback call's six pieces instead of fifteen).
    """
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, str):
        return _Column(a + b.table, b.codes) if b.codes is not None and len(b.table) <= most else None
    if isinstance(b, str):
        return _Column(a.table + b, a.codes) if a.codes is not None and len(a.table) <= most else None
    if a.codes is None or b.codes is None or len(a.table) * len(b.table) > most:
        return None
    return _Column((a.table[:, None] + b.table).ravel(), a.codes * len(b.table) + b.codes)


_SIGNS = _objects(["", "-"])
_THOUSANDTHS = _objects(f".{i:03d}" for i in range(1000))
# Below this many ns, '%.3f' % (ns / 1000) writes the integer's own digits with a point three from the end: ns / 1000
# as a float (< 2**43) is within half its last place (at most 2**-11 < 0.0005) of the exact value, so rounds back to it.
_EXACT_NS = 2 ** 52


def _micros(ns: np.ndarray) -> list[_Column]:
    """Nanoseconds as '%.3f' % (ns / 1000) writes them (µs, three decimals), in columns: sign, whole µs, decimals."""
    if ((ns >= _EXACT_NS) | (ns <= -_EXACT_NS)).any():
        return [_Column(_objects("%.3f" % (v / 1000) for v in ns.tolist()))]
    whole, part = np.divmod(np.abs(ns), 1000)
    return [_Column(_SIGNS, (ns < 0).astype(np.int64)), _ints(whole), _Column(_THOUSANDTHS, part)]


def _ints(values: np.ndarray) -> _Column:
    """Integers as '%d' writes them; those in a narrow range (epochs, iterations) in a table of the range."""
    if len(values):
        low, high = int(values.min()), int(values.max())
        if high - low <= len(values) // 4:
            return _Column(_decimal(np.arange(low, high + 1)), values - low)
    return _Column(_decimal(values))


def _decimal(values: np.ndarray) -> np.ndarray:
    """Integers as decimal text, in an object array."""
    return np.array(list(map(str, values.tolist())), dtype=object)
