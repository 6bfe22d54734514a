"""One Perfetto timeline of a loopviz trace and a torch.profiler (Kineto) trace of the same fit.

loopviz's spans (loops, events, callback calls, work) and the profiler's operators and kernels go into one
Chrome-trace file, on loopviz's clock. Both traces carry a Unix-time anchor (`baseTimeNanoseconds`), which places
them within a fraction of a millisecond; when the fit was traced with `ranges=True`, the profiler holds a range for
each event firing it saw, and those are paired with loopviz's firings in order to place it exactly (the median
offset of the pairs). Only the span the profiler recorded is kept of loopviz's (a profiler schedule records some
batches only), and the file says which firings that was.

In Perfetto the two stay apart: loopviz's process first, then the profiler's CPU processes, then its GPU devices
(`process_sort_index`), each named (`process_name`, `thread_name`: the profiler's own names, marked
'torch.profiler'). Kineto names its CPU process by the fit's pid, which is loopviz's too: its events (flows and
metadata included) move to a free pid, and the process name keeps the real one.
"""
from __future__ import annotations

import bisect
import gzip
import itertools
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from loopviz.errors import LoopvizError
from loopviz.trace.jsontext import shown_number

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

__all__ = ["merged_with_profiler", "profiler_events", "checked_profiler_trace", "firing_range", "call_range",
           "work_range"]

# The name of every range a tracer opens (ranges=True) starts with its adapter's prefix and a space (the adapter
# passes it to the recorder, which keeps it in the trace's meta as "range_prefix").
_WORK_AFTER = "work after "


def firing_range(prefix: str, event: str, phase: str) -> str:
    """The name of the range `ranges=True` opens for a firing of `event` in `phase` ('' for none)."""
    return f"{prefix} {event} ({phase})" if phase else f"{prefix} {event}"


def call_range(prefix: str, callback: str, event: str) -> str:
    """The name of the range of a callback's (class name) call at `event`."""
    return f"{prefix} {callback}.{event}"


def work_range(prefix: str, event: str, work: str | None = None) -> str:
    """The name of the range of the work after `event`, until the next firing: the work's own name where the
    adapter knows it (`fastai draw`, `fastai forward`), else `fastai work after <event>`."""
    return f"{prefix} {work}" if work else f"{prefix} {_WORK_AFTER}{event}"


def profiler_events(profiler: Any) -> dict[str, Any]:
    """The Kineto Chrome trace of a `torch.profiler.profile` (after it stopped), or of its exported JSON file; each
    field the merge reads checked (`checked_profiler_trace`)."""
    if hasattr(profiler, "export_chrome_trace"):
        text = _exported(profiler)
        return checked_profiler_trace(json.loads(text), "the profiler's export")
    if isinstance(profiler, (str, Path)):
        return checked_profiler_trace(_profiler_file(profiler), repr(str(profiler)))
    data = profiler
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise LoopvizError("profiler must be a torch.profiler.profile, or the Chrome trace it exported (a path or its "
                           "JSON data with 'traceEvents').")
    return checked_profiler_trace(data, "the profiler's trace")


def _exported(profiler: Any) -> str:
    """The Chrome trace text of a stopped `torch.profiler.profile`. torch exports a profile once (a second
    `export_chrome_trace` raises 'Trace is already saved.'), so the profiler is left exporting this same text to any
    path it is given after (gzipped for a '.gz' path, as torch does): the user's own export still works."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kineto.json"
        try:
            profiler.export_chrome_trace(str(path))
        except RuntimeError as error:
            if "already saved" not in str(error):
                raise
            raise LoopvizError("this profiler's trace was exported already, and torch exports a profile only once: "
                               "pass the file you exported instead, t.to_perfetto_with('exported.json', path)."
                               ) from None
        text = path.read_text(encoding="utf-8")
    if not getattr(profiler.export_chrome_trace, "__loopviz_export__", False):
        profiler.export_chrome_trace = _export_again(text)
    return text


def _export_again(text: str) -> Any:
    """An `export_chrome_trace(path)` that writes `text` (the profile torch exported once) to `path`."""

    def export_chrome_trace(path: str) -> None:
        data = text.encode("utf-8")
        Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)

    export_chrome_trace.__loopviz_export__ = True  # type: ignore[attr-defined]
    return export_chrome_trace


def _profiler_file(path: str | Path) -> dict[str, Any]:
    """The Chrome trace in a file torch.profiler exported (gzip or not); a clear error naming the file otherwise."""
    from loopviz.trace.files import read_json

    name = repr(str(path))
    try:
        data = read_json(path)
    except LoopvizError as e:  # the reader's messages are about loopviz traces: these are about the profiler's file
        text = str(e).replace("no trace file at", "no profiler trace at").replace("a loopviz trace", "a Chrome trace")
        raise LoopvizError(text.replace("a file written by Trace.save", EXPORTED).replace("save the trace again",
                                                                                     "export it again")) from None
    if isinstance(data, dict) and data.get("format") == "loopviz-trace":
        raise LoopvizError(f"{name} is a loopviz trace, not the profiler's Chrome trace: give {EXPORTED}.")
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise LoopvizError(f"{name} is not a Chrome trace (it has no 'traceEvents' list): give {EXPORTED}.")
    return data


EXPORTED = "the JSON that torch.profiler's prof.export_chrome_trace(path) wrote"
GPU_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation"})  # Kineto's device activity


# µs: about 31,000 years, far beyond any real timestamp, and small enough that moving one by the difference of the
# two traces' base times (int64 ns) stays finite
MAX_US = 1e18
_TEXT_FIELDS = ("ph", "cat", "name")


def checked_profiler_trace(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The profiler's Chrome trace with every field the merge reads checked (as loopviz checks its own trace files):
    `baseTimeNanoseconds` an integer, each event an object whose `ts` and `dur` are finite numbers of µs and whose
    `ph`, `cat` and `name` are strings. A LoopvizError names the field, the event and what was expected."""
    if "baseTimeNanoseconds" in data:
        base = data["baseTimeNanoseconds"]
        if type(base) is not int or not INT64_MIN <= base <= INT64_MAX:
            raise _refused(where, "baseTimeNanoseconds", "", base, "an integer (ns since the Unix epoch)")
    for index, event in enumerate(data["traceEvents"]):
        if type(event) is not dict:
            raise _refused(where, f"traceEvents[{index}]", "", event, "an object (one event)")
        for field in ("ts", "dur"):
            if field in event:
                value = event[field]
                if type(value) not in (int, float) or not -MAX_US <= value <= MAX_US:  # NaN fails too
                    raise _refused(where, field, f" of traceEvents[{index}]", value, "a finite number of µs")
        for field in _TEXT_FIELDS:
            if field in event and type(event[field]) is not str:
                raise _refused(where, field, f" of traceEvents[{index}]", event[field], "a string")
    return data


def _refused(where: str, field: str, at: str, value: Any, wanted: str) -> LoopvizError:
    """The error for one field of the profiler's trace: which, where, what it is and what it should be."""
    from loopviz.trace.validate import _show

    shown = shown_number(value) if isinstance(value, float) and not math.isfinite(value) else _show(value)
    return LoopvizError(f"{where}: field {field!r}{at}: is {shown}, not {wanted}. Give {EXPORTED}.")


def _apart(theirs: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    """The profiler's events in processes of their own, after loopviz's (`pid`): a pid equal to loopviz's moved to
    a free one in every event that names it; each process and thread named (Kineto's names kept, marked as the
    profiler's) and sorted: CPU processes before GPU devices. The new metadata events, to add."""
    moved: dict[int, int] = {}  # a moved process's pid: its pid in the profiler's file
    pids = {e["pid"] for e in theirs if type(e.get("pid")) is int}
    if pid in pids:
        free = max(pids | {pid}) + 1
        for e in theirs:
            if type(e.get("pid")) is int and e["pid"] == pid:
                e["pid"] = free
        moved[free] = pid
    processes: dict[int, dict[str, Any]] = {}  # pid: its name, labels, whether it is a device, its threads
    for e in theirs:
        p = e.get("pid")
        if type(p) is not int:
            continue  # Kineto's own string-named rows ('Spans', 'Traces'): left as they are
        info = processes.setdefault(p, {"name": None, "label": None, "gpu": False, "threads": {}})
        if e.get("ph") == "M":
            args = e.get("args") if isinstance(e.get("args"), dict) else {}
            if e.get("name") == "process_name" and isinstance(args.get("name"), str):
                info["name"] = args["name"]
                info["gpu"] |= args["name"].upper().startswith("GPU")
            elif e.get("name") == "process_labels" and isinstance(args.get("labels"), str):
                info["label"] = args["labels"]
                info["gpu"] |= args["labels"].upper().startswith("GPU")
            elif e.get("name") == "thread_name" and isinstance(e.get("tid"), (int, str)):
                info["threads"][e["tid"]] = True
        else:
            info["gpu"] |= e.get("cat") in GPU_CATS
            if isinstance(e.get("tid"), (int, str)):
                info["threads"].setdefault(e["tid"], False)
    for e in theirs:  # Kineto's names, marked as the profiler's; its sort indexes give way to ours
        p, args = e.get("pid"), e.get("args")
        if e.get("ph") == "M" and e.get("name") == "process_name" and p in processes and isinstance(args, dict) \
                and isinstance(args.get("name"), str):
            e["args"] = {**args, "name": _process_title(args["name"], moved.get(p, p), processes[p])}
    theirs[:] = [e for e in theirs if not (e.get("ph") == "M" and e.get("name") == "process_sort_index"
                                           and e.get("pid") in processes)]
    added = [{"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": 0}}]
    order = sorted(processes, key=lambda p: (processes[p]["gpu"], moved.get(p, p)))  # as in the profiler's file
    for rank, p in enumerate(order, 1):
        info = processes[p]
        added.append({"ph": "M", "name": "process_sort_index", "pid": p, "tid": 0,
                      "args": {"sort_index": rank + (1000 if info["gpu"] else 0)}})
        if info["name"] is None:
            added.append({"ph": "M", "name": "process_name", "pid": p, "tid": 0,
                          "args": {"name": _process_title(None, moved.get(p, p), info)}})
        for tid, named in info["threads"].items():
            if not named:
                added.append({"ph": "M", "name": "thread_name", "pid": p, "tid": tid,
                              "args": {"name": f"{'stream' if info['gpu'] else 'thread'} {tid}"}})
    return added


def _process_title(name: str | None, pid: int, info: dict[str, Any]) -> str:
    """A profiler process's name in the merged file, marked as the profiler's: a GPU by its label ('GPU 0'; Kineto
    names it after the program), the host process by Kineto's name and its pid, Kineto's own overhead (pid -1)."""
    if info["gpu"]:
        return f"torch.profiler: {info['label'] or name or f'GPU {pid}'}"
    if pid < 0:
        return "torch.profiler: its own overhead"
    return f"torch.profiler: {name or 'CPU'} (pid {pid})"


def _firing_ranges(events: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    """The profiler's ranges of event firings, in time order: those named as a firing of the trace is (`names`,
    each `firing_range`'s name; a work range is named by its work, a handler call's range by its callback)."""
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
                   and e.get("name") in names), key=lambda e: e["ts"])


def merged_with_profiler(trace: Any, profiler: Any) -> dict[str, Any]:
    """loopviz's spans and the profiler's events in one Chrome trace on loopviz's clock (µs from its origin)."""
    from loopviz.trace.chrome import chrome_trace

    kineto = profiler_events(profiler)
    ours = chrome_trace(trace)
    base = int(ours["otherData"]["baseTimeNanoseconds"])
    shift = (int(kineto.get("baseTimeNanoseconds", base)) - base) / 1000  # their µs -> ours, by Unix time
    theirs = [dict(e) for e in kineto["traceEvents"] if isinstance(e, dict) and ("ts" in e or e.get("ph") == "M")]
    for e in theirs:
        if "ts" in e:
            e["ts"] = float(e["ts"]) + shift
    placed = "unix time"
    fired = sorted((e for e in ours["traceEvents"] if e.get("cat") == "event"), key=lambda e: e["ts"])
    prefix = trace.meta.get("range_prefix")
    names = [firing_range(prefix, e["name"], e["args"]["phase"]) for e in fired] if prefix is not None else []
    ranges = _firing_ranges(theirs, set(names))
    paired = _pairs(names, fired, ranges)
    if paired:
        offset = _offset(paired)
        for e in theirs:
            if "ts" in e:
                e["ts"] += offset
        placed = f"{len(paired)} event ranges (ranges=True), median offset {offset:.1f} µs after Unix time"
    spans = [e for e in theirs if e.get("ph") == "X"]
    if not spans:
        raise LoopvizError("the profiler trace holds no events: was the profiler active during the fit?")
    start, end = min(e["ts"] for e in spans), max(e["ts"] + e.get("dur", 0) for e in spans)
    kept = [e for e in ours["traceEvents"] if e.get("ph") != "X" or (e["ts"] + e["dur"] >= start and e["ts"] <= end)]
    seen = [e["args"]["firing"] for e in kept if e.get("cat") == "event"]
    added = _apart(theirs, next(e["pid"] for e in ours["traceEvents"] if e.get("name") == "process_name"))
    ours["traceEvents"] = kept + added + theirs
    ours["otherData"]["profiler"] = {
        "placed by": placed, "window_us": [start, end],
        "firings": [min(seen), max(seen)] if seen else [], "of_firings": len(fired),
    }
    return ours


def _pairs(names: list[str], fired: list[dict[str, Any]], ranges: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(our firing's start, its range's start) for the firings the profiler recorded, matched in order: the ranges
    are a run of consecutive firings (a schedule records some batches). Every batch fires the same events, so of the
    runs that match by name, the one nearest Unix time's placement is taken (the first of equals); none when no run
    matches. O(n log n): the runs are found in linear time, and their offsets rise with where they start (our
    firings are in time order), so the one nearest zero is found by bisection."""
    starts = _occurrences(names, [r["name"] for r in ranges])
    if not starts:
        return []
    offsets: dict[int, float] = {}

    def offset(k: int) -> float:  # the offset of the k-th run, once each
        if k not in offsets:
            offsets[k] = _offset(_paired(fired, ranges, starts[k]))
        return offsets[k]

    after = bisect.bisect_left(range(len(starts)), 0.0, key=offset)  # the first run at or after Unix time's placement
    best = after if after < len(starts) else None
    if after > 0:
        before = bisect.bisect_left(range(after), offset(after - 1), key=offset)  # the first of the nearest before
        if best is None or abs(offset(before)) <= abs(offset(best)):
            best = before
    return _paired(fired, ranges, starts[best])


def _paired(fired: list[dict[str, Any]], ranges: list[dict[str, Any]], first: int) -> list[tuple[float, float]]:
    """(our firing's start, its range's start) with the ranges matched to our firings from `first` on."""
    return [(f["ts"], r["ts"]) for f, r in zip(itertools.islice(fired, first, first + len(ranges)), ranges)]


def _occurrences(names: list[str], want: list[str]) -> list[int]:
    """Where `want` occurs in `names` as a run of consecutive names, in order (Knuth-Morris-Pratt: linear time)."""
    if not want or len(want) > len(names):
        return []
    fallback = [0] * len(want)  # fallback[i]: the longest proper prefix of want[:i + 1] that also ends it
    k = 0
    for i in range(1, len(want)):
        while k and want[i] != want[k]:
            k = fallback[k - 1]
        k += want[i] == want[k]
        fallback[i] = k
    found, k = [], 0
    for i, name in enumerate(names):
        while k and name != want[k]:
            k = fallback[k - 1]
        k += name == want[k]
        if k == len(want):
            found.append(i - k + 1)
            k = fallback[k - 1]
    return found


def _offset(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(ours - theirs for ours, theirs in pairs)
