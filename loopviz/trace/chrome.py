"""Chrome Trace Event / Perfetto export: complete ("X") events, nested per thread as the loop nests them."""
from __future__ import annotations

from typing import Any

from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_START, C_STATUS, F_DEV_START, F_END, F_EPOCH, F_EVENT, F_ITER, F_LOOP, F_MODE,
    F_START, F_STATUS, MODES, STATUS,
)

__all__ = ["chrome_trace"]

HOST_TID = 1
DEVICE_TID = 2


def chrome_trace(trace: Any, origin_unix_ns: int | None = None, pid: int | None = None, title: str | None = None) -> dict[str, Any]:
    """The trace as a Chrome/Perfetto JSON object: one thread for the host, one for device times if any.

    Event firings enclose the callback calls made inside them; the work between events sits between
    firings, all inside their loop's span. Times are µs from the start of the first loop; `otherData.baseTimeNanoseconds` anchors them.
    """
    from loopviz.trace.reports import origin_ns

    firings = trace._firing_matrix()
    calls = trace._call_matrix()
    origin = origin_ns(trace.data)
    if origin_unix_ns is not None:  # several traces on one timeline: place this one by the wall clock
        origin = origin - (int(trace.to_unix_ns(origin)) - origin_unix_ns)
    pid = int(trace.meta.get("pid", 1)) if pid is None else pid
    title = title or f"loopviz: {trace.framework or 'loop'} ({', '.join(dict.fromkeys(trace.loops)) or 'no loop'})"
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": HOST_TID, "args": {"name": title}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": HOST_TID, "args": {"name": "host: events, callbacks, work"}},
    ]

    def us(ns: int) -> float:
        return (ns - origin) / 1000

    for row in trace.loops_df().itertuples():
        out.append({"ph": "X", "name": f"loop {row.loop}: {row.label}", "cat": "loop", "pid": pid, "tid": HOST_TID,
                    "ts": us(int(row.start)), "dur": (int(row.end) - int(row.start)) / 1000,
                    "args": {"loop": row.loop, "label": row.label, "parent": row.parent, "inside_event": row.inside_event}})
    for i, row in enumerate(firings.tolist()):
        loop, status = row[F_LOOP], row[F_STATUS]
        args = {"phase": MODES[row[F_MODE]], "epoch": row[F_EPOCH], "iter": row[F_ITER],
                "loop": trace.loops[loop] if loop >= 0 else "", "status": "ok" if status == 0 else STATUS[status], "firing": i}
        out.append({"ph": "X", "name": trace.events[row[F_EVENT]], "cat": "event", "pid": pid, "tid": HOST_TID,
                    "ts": us(row[F_START]), "dur": (row[F_END] - row[F_START]) / 1000, "args": args})
    for row in calls.tolist():
        info, firing = trace.callbacks[row[C_CALLBACK]], row[C_FIRING]
        out.append({"ph": "X", "name": f"{info['cls']}.{trace.events[int(firings[firing, F_EVENT])]}", "cat": "callback",
                    "pid": pid, "tid": HOST_TID, "ts": us(row[C_START]), "dur": row[C_DUR] / 1000,
                    "args": {"callback": info["cls"], "order": info["order"], "status": STATUS[row[C_STATUS]], "firing": firing}})
    device = bool(len(firings)) and bool((firings[:, F_DEV_START] >= 0).any())
    work = trace.work_df()
    for row in work.itertuples():
        out.append({"ph": "X", "name": row.work, "cat": "work", "pid": pid, "tid": DEVICE_TID if device else HOST_TID,
                    "ts": us(int(row.start)), "dur": int(row.dur) / 1000,
                    "args": {"after": row.after, "before": row.before, "phase": row.phase, "epoch": row.epoch, "iter": row.iter}})
    if device:
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": DEVICE_TID, "args": {"name": f"device ({trace.clock}): work"}})
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"baseTimeNanoseconds": int(trace.to_unix_ns(origin)), "clock": trace.clock,
                          "framework": trace.framework, "notes": trace.notes()}}
