"""What a reader of a trace's reports should know: records past the cap, what could not be split by loop, the clock."""
from __future__ import annotations

from loopviz.errors import LoopvizError
from loopviz.trace.datawork import MAX_DATA_ROWS
from loopviz.trace.data import COARSE_PERCENTILES, TraceData
from loopviz.trace.layout import UNKNOWN_LOOP
from loopviz.trace.sketch import ALPHA

__all__ = ["trace_notes", "cap_notes", "NO_LOOP", "check_recorded_a_loop"]

NO_LOOP = "this trace recorded no loop"
_NOTHING_RAN = "nothing ran inside its `with ... trace()` block; run a fit (or train, validate...) inside it"


def check_recorded_a_loop(data: TraceData, so: str = "it has no loop to show", name: str = "this trace") -> None:
    """A LoopvizError saying `so` when the trace recorded no loop (`with learn.trace() as t: pass`)."""
    if not data.loops:
        raise LoopvizError(f"{name} recorded no loop, so {so}: {_NOTHING_RAN}.")


def trace_notes(data: TraceData) -> list[str]:
    """The notes, one sentence each; the clock's last."""
    out = _empty_notes(data) + _changes_notes(data) + _no_handler_notes(data) + _dropped_notes(data) + _unsplit_notes(data) + _old_notes(data)
    out += _data_notes(data)
    if data.clock == "host":
        out.append("clock: host (perf_counter_ns). On a GPU this is launch time, not GPU time; trace with clock='cuda'.")
    else:
        out.append(f"clock: {data.clock} (events and the work between them on the GPU timeline, so they add up to the "
                   "run; callback calls and dispatch on the host clock: a callback that waits for the GPU holds an "
                   "event longer on the host than on the GPU).")
    return out


def cap_notes(data: TraceData) -> list[str]:
    """The notes about what went past the raw-record cap (and could not be split by loop): what a view of the
    loop annotated with this trace must say too."""
    return _changes_notes(data) + _dropped_notes(data) + _unsplit_notes(data) + _old_notes(data)


def _data_notes(data: TraceData) -> list[str]:
    """What a reader of the data loop's timing (data=True) should know: its own cost, and the loaders not timed."""
    out = []
    if data.data_work:
        out.append("data loop (data=True): each timed stage and transform call also costs the loader a few µs (about "
                   "5,000 instructions), inside the time it records and not in the tracing cost above; on loaders of "
                   "trivial items it shows (docs/inside-draw.md).")
    dropped = data.meta.get("data_rows_dropped")
    if isinstance(dropped, int) and dropped > 0:
        out.append(f"data loop: {dropped:,} rows past the {MAX_DATA_ROWS:,} a trace keeps were not kept: its "
                   "tables and lanes cover the batches before them (trace fewer epochs with data=True).")
    skipped = data.meta.get("data_not_timed")
    if isinstance(skipped, list) and skipped:
        out.append("data loop not timed for: " + "; ".join(str(line) for line in skipped) + ".")
    return out


def _empty_notes(data: TraceData) -> list[str]:
    return [] if data.loops else [f"{NO_LOOP}, so every table is empty: {_NOTHING_RAN}."]


def _changes_notes(data: TraceData) -> list[str]:
    if not data.dropped_changes:
        return []
    return [f"{data.dropped_changes:,} state changes past the raw-record cap are in .changes() but not in "
            ".who_changed()."]


def _no_handler_notes(data: TraceData) -> list[str]:
    if not data.no_handler_calls:
        return []
    unsplit = "selected_loops" in data.meta and not data.no_handler_by_loop  # a file that predates per-loop counts
    whole = "; counted over the whole trace, not only its selected loops" if unsplit else ""
    return [f"{data.no_handler_calls:,} calls to callbacks with no handler for the event (the loop calls "
            f"every callback at every event{whole}) are counted, not timed one by one: their cost is in 'dispatch'."]


def _dropped_notes(data: TraceData) -> list[str]:
    if not (data.dropped_firings or data.dropped_calls):
        return []
    within = ("within a factor of 1.42 of the exact ones (the file predates loopviz's quantile sketch: its "
              "aggregates kept log2 histograms)" if data.meta.get(COARSE_PERCENTILES)
              else f"within {ALPHA * 100:g} % of the exact ones (a quantile sketch)")
    return [f"{data.dropped_firings:,} firings and {data.dropped_calls:,} callback calls past the raw-record cap "
            f"(max_firings={data.meta.get('max_firings')}, max_calls={data.meta.get('max_calls')}) are kept as "
            f"aggregates: counts, totals, shares and means are exact, percentiles marked approx. are {within}; "
            "dispatch's are of the recorded firings only, and the raw tables, timelines and .who_changed() hold the "
            "recorded ones only."]


def _old_notes(data: TraceData) -> list[str]:
    """For a file from before loop spans were kept: what its run time can and cannot cover."""
    if not data.meta.get("spans_from_firings"):
        return []
    cover = "the recorded firings only (firings past the cap are not in it)" if data.dropped_firings else "its firings"
    return [f"This trace was written before loopviz kept each loop's span: its run time covers {cover}, without "
            "the setup before each loop's first event and the cleanup after its last, so '% of run' is approximate."]


def _unsplit_notes(data: TraceData) -> list[str]:
    """For a trace cut to some loops: the aggregates it kept whole because their loop is unknown."""
    selected = data.meta.get("selected_loops")
    if selected is None:
        return []
    firings = sum(a.count for key, a in data.overflow_firings.items() if key[0] == UNKNOWN_LOOP)
    calls = sum(a.count for key, a in data.overflow_calls.items() if key[0] == UNKNOWN_LOOP)
    changes = sum(entry[0] for key, entry in data.change_agg.items() if key[0] == UNKNOWN_LOOP)
    if not (firings or calls or changes):
        return []
    loops = ", ".join(f"{i} ({data.loops[i]})" for i in selected) or "none"
    return [f"This trace was cut to loop(s) {loops}, but {firings:,} firings and {calls:,} callback calls past the "
            f"raw-record cap, and {changes:,} state changes in .changes(), could not be split by loop (the file "
            "predates per-loop aggregates): they are counted in full, for every loop of the original trace."]
