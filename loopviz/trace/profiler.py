"""One Perfetto timeline of a loopviz trace and a torch.profiler (Kineto) trace of the same fit.

loopviz's spans (loops, events, callback calls, work) and the profiler's operators and kernels go into one
Chrome-trace file, on loopviz's clock. Both traces carry a Unix-time anchor (`baseTimeNanoseconds`), which places
them within a fraction of a millisecond; when the fit was traced with `ranges=True`, the profiler holds a range for
each event firing it saw, and those are paired with loopviz's firings in order to place it exactly (the median
offset of the pairs). Only the span the profiler recorded is kept of loopviz's (a profiler schedule records some
batches only), and the file says which firings that was.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from loopviz.errors import LoopvizError

__all__ = ["merged_with_profiler", "profiler_events"]

RANGE_PREFIX = "fastai"  # the name of every range the fastai tracer opens starts with this and a space


def profiler_events(profiler: Any) -> dict[str, Any]:
    """The Kineto Chrome trace of a `torch.profiler.profile` (after it stopped), or of its exported JSON file."""
    if hasattr(profiler, "export_chrome_trace"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "kineto.json"
            profiler.export_chrome_trace(str(path))
            return json.loads(path.read_text(encoding="utf-8"))
    if isinstance(profiler, (str, Path)):
        from loopviz.trace.files import read_json

        data = read_json(profiler)
    else:
        data = profiler
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise LoopvizError("profiler must be a torch.profiler.profile, or the Chrome trace it exported (a path or its "
                           "JSON data with 'traceEvents').")
    return data


def _firing_ranges(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The profiler's ranges of event firings (not of handler calls or work), in time order."""
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
                   and str(e.get("name", "")).startswith(f"{RANGE_PREFIX} ") and "." not in e["name"]
                   and not e["name"].startswith(f"{RANGE_PREFIX} work after ")), key=lambda e: e["ts"])


def merged_with_profiler(trace: Any, profiler: Any) -> dict[str, Any]:
    """loopviz's spans and the profiler's events in one Chrome trace on loopviz's clock (µs from its origin)."""
    from loopviz.trace.chrome import chrome_trace

    kineto = profiler_events(profiler)
    ours = chrome_trace(trace)
    base = int(ours["otherData"]["baseTimeNanoseconds"])
    shift = (int(kineto.get("baseTimeNanoseconds", base)) - base) / 1000  # their µs -> ours, by Unix time
    theirs = [dict(e) for e in kineto["traceEvents"] if isinstance(e, dict) and "ts" in e]
    for e in theirs:
        e["ts"] = float(e["ts"]) + shift
    placed = "unix time"
    fired = sorted((e for e in ours["traceEvents"] if e.get("cat") == "event"), key=lambda e: e["ts"])
    ranges = _firing_ranges(theirs)
    names = [f"{RANGE_PREFIX} {e['name']}" + (f" ({e['args']['phase']})" if e["args"]["phase"] else "") for e in fired]
    paired = _pairs(names, fired, ranges)
    if paired:
        offset = _offset(paired)
        for e in theirs:
            e["ts"] += offset
        placed = f"{len(paired)} event ranges (ranges=True), median offset {offset:.1f} µs after Unix time"
    spans = [e for e in theirs if e.get("ph") == "X"]
    if not spans:
        raise LoopvizError("the profiler trace holds no events: was the profiler active during the fit?")
    start, end = min(e["ts"] for e in spans), max(e["ts"] + e.get("dur", 0) for e in spans)
    kept = [e for e in ours["traceEvents"] if e.get("ph") != "X" or (e["ts"] + e["dur"] >= start and e["ts"] <= end)]
    seen = [e["args"]["firing"] for e in kept if e.get("cat") == "event"]
    ours["traceEvents"] = kept + [e for e in theirs if not (e.get("ph") == "M" and e.get("name") == "process_name")]
    ours["otherData"]["profiler"] = {
        "placed by": placed, "window_us": [start, end],
        "firings": [min(seen), max(seen)] if seen else [], "of_firings": len(fired),
    }
    return ours


def _pairs(names: list[str], fired: list[dict[str, Any]], ranges: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(our firing's start, its range's start) for the firings the profiler recorded, matched in order: the ranges
    are a run of consecutive firings (a schedule records some batches). Every batch fires the same events, so of the
    runs that match by name, the one nearest Unix time's placement is taken; none when no run matches."""
    want = [r["name"] for r in ranges]
    best: list[tuple[float, float]] = []
    for first in range(len(names) - len(want) + 1) if want else ():
        if names[first] != want[0] or names[first:first + len(want)] != want:
            continue
        pairs = [(f["ts"], r["ts"]) for f, r in zip(fired[first:], ranges)]
        if not best or abs(_offset(pairs)) < abs(_offset(best)):
            best = pairs
    return best


def _offset(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(ours - theirs for ours, theirs in pairs)
