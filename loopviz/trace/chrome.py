"""Chrome Trace Event / Perfetto export: complete ("X") events, nested per thread as the loop nests them."""
from __future__ import annotations

from typing import Any

from loopviz.trace.record import MODES, STATUS

__all__ = ["chrome_trace"]

HOST_TID = 1
DEVICE_TID = 2


def chrome_trace(trace: Any, origin_unix_ns: int | None = None, pid: int | None = None, title: str | None = None) -> dict[str, Any]:
    """The trace as a Chrome/Perfetto JSON object: one thread for the host, one for device times if any.

    Event firings enclose the callback calls made inside them; the work between events sits between
    firings. Times are µs from the first firing; `otherData.baseTimeNanoseconds` anchors them.
    """
    firings = trace._firing_matrix()
    calls = trace._call_matrix()
    origin = int(firings[:, 6].min()) if len(firings) else 0
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

    for i, row in enumerate(firings):
        event, mode, epoch, iteration, loop = (int(v) for v in row[:5])
        args = {"phase": MODES[mode], "epoch": epoch, "iter": iteration, "loop": trace.loops[loop] if loop >= 0 else "",
                "status": "ok" if row[8] == 0 else STATUS[int(row[8])], "firing": i}
        out.append({"ph": "X", "name": trace.events[event], "cat": "event", "pid": pid, "tid": HOST_TID,
                    "ts": us(int(row[6])), "dur": (int(row[7]) - int(row[6])) / 1000, "args": args})
    for firing, cb, start, dur, status in calls:
        info = trace.callbacks[int(cb)]
        out.append({"ph": "X", "name": f"{info['cls']}.{trace.events[int(firings[firing, 0])]}", "cat": "callback",
                    "pid": pid, "tid": HOST_TID, "ts": us(int(start)), "dur": int(dur) / 1000,
                    "args": {"callback": info["cls"], "order": info["order"], "status": STATUS[int(status)], "firing": int(firing)}})
    device = bool(len(firings)) and bool((firings[:, 9] >= 0).any())
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
