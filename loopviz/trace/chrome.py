"""Chrome Trace Event / Perfetto export: complete ("X") events, nested per thread as the loop nests them.

The spans come from one place (`_spans`): a loop's span, each event firing, each callback call and the work
between events, each as a category's values in the order of its argument names. `chrome_trace` builds them
into a JSON-ready dict (for merging several traces); `chrome_text` writes them straight to JSON text, one
format string per category, which is what makes a trace of a million calls export in seconds rather than
building and serialising a million dicts.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

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
}


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


def _spans(trace: Any, head: _Header, shown: Callable[[Any], Any] = lambda v: v
           ) -> Iterator[tuple[str, Any, int, float, float, tuple[Any, ...]]]:
    """(category, name, thread, start µs, duration µs, argument values in ARGS[category] order) for every span.
    Names and the other values of kind 's' come through `shown` (the text form passes them as JSON text), each
    distinct value once."""
    seen: dict[tuple[type, Any], Any] = {}

    def one(v: Any) -> Any:
        key = (type(v), v)  # by type too: 1 and 1.0 are equal keys but not the same JSON
        if key not in seen:
            seen[key] = shown(v)
        return seen[key]

    def table(values: Any) -> list[Any]:
        return [one(v) for v in values]

    origin = head.origin
    events, loops, modes, status = table(trace.events), table(trace.loops), table(MODES), table(("ok", *STATUS[1:]))
    empty = one("")
    for row in trace.loops_df().itertuples():
        yield ("loop", one(f"loop {row.loop}: {row.label}"), HOST_TID, (int(row.start) - origin) / 1000,
               (int(row.end) - int(row.start)) / 1000, (int(row.loop), one(row.label), int(row.parent), one(row.inside_event)))
    firing_events = head.firings[:, F_EVENT].tolist()
    for i, row in enumerate(head.firings.tolist()):
        loop = row[F_LOOP]
        yield ("event", events[row[F_EVENT]], HOST_TID, (row[F_START] - origin) / 1000, (row[F_END] - row[F_START]) / 1000,
               (modes[row[F_MODE]], row[F_EPOCH], row[F_ITER], loops[loop] if loop >= 0 else empty, status[row[F_STATUS]], i))
    infos = trace.callbacks
    classes, orders = table([info["cls"] for info in infos]), table([info["order"] for info in infos])
    named: dict[tuple[int, int], Any] = {}  # (callback, event) -> 'Class.event'
    for row in head.calls.tolist():
        cid, firing = row[C_CALLBACK], row[C_FIRING]
        key = (cid, firing_events[firing])
        name = named.get(key)
        if name is None:
            name = named[key] = shown(f"{infos[cid]['cls']}.{trace.events[key[1]]}")
        yield ("callback", name, HOST_TID, (row[C_START] - origin) / 1000, row[C_DUR] / 1000,
               (classes[cid], orders[cid], status[row[C_STATUS]], firing))
    work = trace.work_df()
    tid = DEVICE_TID if head.device else HOST_TID
    names, afters, befores, phases = (table(work[c].tolist()) for c in ("work", "after", "before", "phase"))
    numbers = [work[c].tolist() for c in ("start", "dur", "epoch", "iter")]
    for name, after, before, phase, start, dur, epoch, iteration in zip(names, afters, befores, phases, *numbers):
        yield "work", name, tid, (int(start) - origin) / 1000, int(dur) / 1000, (after, before, phase, int(epoch), int(iteration))


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
    for cat, name, tid, ts, dur, values in _spans(trace, head):
        out.append({"ph": "X", "name": name, "cat": cat, "pid": head.pid, "tid": tid, "ts": ts, "dur": dur,
                    "args": {key: v for (key, _), v in zip(ARGS[cat], values)}})
    out += head.device_metadata(trace.clock)
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": _other_data(trace, head)}


def chrome_text(trace: Any) -> str:
    """The same Chrome/Perfetto trace as `chrome_trace(trace)`, written straight to compact JSON text."""
    head = _Header(trace, None, None, None)
    templates = {cat: (f'{{"ph":"X","name":%s,"cat":"{cat}","pid":{head.pid},"tid":%d,"ts":%.3f,"dur":%.3f,"args":{{'
                       + ",".join(f'"{key}":%{kind}' for key, kind in args) + "}}")
                 for cat, args in ARGS.items()}
    parts = [json.dumps(m, separators=(",", ":")) for m in head.metadata()]
    for cat, name, tid, ts, dur, values in _spans(trace, head, shown=json.dumps):
        parts.append(templates[cat] % (name, tid, ts, dur, *values))
    parts += [json.dumps(m, separators=(",", ":")) for m in head.device_metadata(trace.clock)]
    rest = json.dumps(_other_data(trace, head), separators=(",", ":"))
    return '{"traceEvents":[' + ",".join(parts) + f'],"displayTimeUnit":"ms","otherData":{rest}}}'
