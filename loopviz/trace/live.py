"""`LiveStats`: while a traced run goes on, the split of its recent steps and its top finding so far.

What the live view (`trace(live=True)`) shows, framework-free: an adapter calls `tick()` once per batch (a clock read
and a comparison) and shows `shares` and `finding` wherever its framework shows progress. At most once a second
`tick()` reads the firing rows recorded since it last looked (`Recorder.closed_matrix`) and what went past the cap
(the aggregates' growth), and splits that time into series: each piece of work between events by its name (draw,
forward, backward, step...), each event by its family (the callbacks' events are 'callbacks'; an event that is the
model's or the optimizer's own hook, Lightning's `training_step`, by its name), every firing counted without the
firings and work nested in it; with waits=True, the GPU work the host waited out as 'waits', taken from the step it
was waited out in. The split is over the last `WINDOW` refreshes, about five seconds.

The top finding is `diagnose` of everything so far (`Recorder.snapshot`): the same checks, thresholds and words as
`t.diagnose()` after the run. It costs about 4 µs per record (a few ms a second of a real model's fit, as much as
tracing itself on the fastest loops), so the first comes after `FIRST_FINDING_NS`, the next ones at most every
`FINDING_EVERY_NS`, and none before the run so far is `FINDING_BUDGET` times what it is expected to cost (the records
so far at the last one's cost per record) nor sooner than that many times the last one's cost after it: its share of
the run stays about 2 % at most.

The adapters call `tick()` from a callback of their own, so its cost is recorded as that callback's and shows in the
trace under its name (`LoopvizLive`), never inside another step.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any

from loopviz.trace.families import family_of
from loopviz.trace.layout import F_END, F_EVENT, F_LOOP, F_PARENT, F_START
from loopviz.trace.record import Recorder
from loopviz.trace.reports import WORK_FALLBACK, roots_of, sibling_pairs

__all__ = ["LiveStats", "REFRESH_NS", "WINDOW", "FIRST_FINDING_NS", "FINDING_EVERY_NS", "FINDING_BUDGET", "CALLBACKS",
           "WAITS", "DIAGNOSIS_NS_PER_ROW"]

REFRESH_NS = 1_000_000_000  # the split is refreshed at most once a second
WINDOW = 5  # refreshes the split adds up: about the last five seconds
FIRST_FINDING_NS = 3_000_000_000  # the first top finding after three seconds (a short run gets one too)...
FINDING_EVERY_NS = 10_000_000_000  # ... then at most every ten seconds...
FINDING_BUDGET = 50  # ... and no sooner than 50 times its last cost after it (2 % of the run at most)
DIAGNOSIS_NS_PER_ROW = 4000.0  # what a diagnosis costs per firing and call recorded, before one was timed
CALLBACKS = "callbacks"  # the series of the callbacks' events (their handlers and the framework's dispatch)
WAITS = "waits"  # waits=True: the GPU work the host waited out (.item(), .cpu()...), taken from where it was waited


class LiveStats:
    """The recent split and the top finding of a run a `Recorder` is recording (see the module's docstring)."""

    def __init__(self, recorder: Recorder, finish: dict[str, Any], refresh_ns: int | None = None,
                 finding_every_ns: int | None = None):
        # finish: what the adapter's tracer passes to `Trace.finish` (framework, work_names, advice, batch_events);
        # refresh_ns, finding_every_ns: REFRESH_NS and FINDING_EVERY_NS (as the module has them now) unless given
        self.rec = recorder
        self.finish = dict(finish)
        self.work_names: dict[tuple[str, str], str] = dict(finish.get("work_names") or {})
        self.refresh_ns = REFRESH_NS if refresh_ns is None else refresh_ns
        self.finding_every_ns = FINDING_EVERY_NS if finding_every_ns is None else finding_every_ns
        now = self.started = recorder.now()
        self.due_at = now + self.refresh_ns
        self.ns_per_row = DIAGNOSIS_NS_PER_ROW
        self.finding_at = now + min(FIRST_FINDING_NS, self.finding_every_ns)
        self.next_row = 0  # the first firing row not read yet
        # outermost loop -> (event, end) of its last top-level firing read (nested ones are read with their parent)
        self.last_at: dict[int, tuple[str, int]] = {}
        self.seen: dict[str, dict[tuple[int, ...], int]] = {}  # per aggregate field: each entry's total last read
        self.recent: deque[Counter[str]] = deque(maxlen=WINDOW)
        self.finding: Any = None  # the top `Finding` of the last diagnosis, None before one or when none was found
        self.diagnosed = False  # whether a diagnosis has run
        self.stopped = ""  # why the live view stopped refreshing (an error of its own), '' while it runs

    def tick(self) -> bool:
        """Refresh the split (and, when due, the finding) if a second has passed since the last refresh; True when
        it did."""
        now = self.rec.now()
        if now < self.due_at:
            return False
        try:
            self.refresh()
            if now >= self.finding_at and now - self.started >= FINDING_BUDGET * self.predicted_cost():
                self.diagnose()
        except Exception as error:  # a view must never stop the run it watches: it stops itself, and says why
            self.stopped = f"the live view stopped ({type(error).__name__}: {error}); the trace records on"
            self.due_at = float("inf")
            return True
        self.due_at = self.rec.now() + self.refresh_ns
        return True

    def predicted_cost(self) -> float:
        """About what a diagnosis of the run so far costs (ns): the rows recorded, at the last diagnosis's cost per
        row (DIAGNOSIS_NS_PER_ROW before one). It grows with the run: a fast loop is diagnosed later and less often."""
        return self.rec.rows_recorded() * self.ns_per_row

    def refresh(self) -> None:
        """Read what was recorded since the last refresh into the recent split."""
        spent = self._from_rows()
        spent.update(self._past_the_cap())
        spent.update(self._waits())
        self.recent.append(spent)

    @property
    def shares(self) -> list[tuple[str, float]]:
        """(series, share of the recent steps' time), largest first; [] before any time was seen."""
        total: Counter[str] = Counter()
        for spent in self.recent:
            total.update(spent)
        whole = sum(ns for ns in total.values() if ns > 0)
        if whole <= 0:
            return []
        shares = [(name, ns / whole) for name, ns in total.items() if ns > 0]
        return sorted(shares, key=lambda item: (-item[1], item[0]))

    def diagnose(self) -> None:
        """The top finding of the run so far, from a snapshot of everything recorded."""
        from loopviz.trace.diagnose import diagnose
        from loopviz.trace.trace import finished

        start = self.rec.now()
        rows = self.rec.rows_recorded()
        findings = diagnose(finished(self.rec.snapshot(), **self.finish))
        self.finding, self.diagnosed = findings.top, True
        end = self.rec.now()
        self.ns_per_row = max((end - start) / max(rows, 1), 1.0)
        self.finding_at = end + max(self.finding_every_ns, FINDING_BUDGET * (end - start))

    # -- reading the records --------------------------------------------------------------------------

    def series_of_event(self, event: str) -> str:
        """The series an event's own time counts in: its name for the data's, the model's or the optimizer's own
        hook, else the callbacks'."""
        return event if family_of(event, "event") in ("data", "model", "optimizer") else CALLBACKS

    def series_of_work(self, before: str, after: str) -> str:
        """The series of the work between two events: its name, as the adapter names it."""
        return self.work_names.get((before, after), WORK_FALLBACK)

    def _from_rows(self) -> Counter[str]:
        """The time of the firing rows closed since the last read, and of the work between them, by series; each
        firing without what is nested in it (a nested firing's parent is read before it, in the same read). numpy
        throughout: a second of a fast loop is tens of thousands of rows."""
        import numpy as np

        m, following = self.rec.closed_matrix(self.next_row)
        first, self.next_row = self.next_row, following
        if not len(m):
            return Counter()
        events = self.rec.data.events
        names: list[str] = []  # the series of this read, by index
        index_of: dict[str, int] = {}

        def series_index(name: str) -> int:
            if name not in index_of:
                index_of[name] = len(names)
                names.append(name)
            return index_of[name]

        event_ids, start, end, parent = m[:, F_EVENT], m[:, F_START], m[:, F_END], m[:, F_PARENT]
        of_event = np.array([series_index(self.series_of_event(events[e])) for e in range(int(event_ids.max()) + 1)])
        own = of_event[event_ids]
        inside = parent >= first  # nested in a firing of this read: its time is not its parent's own
        parent_series = own[np.where(inside, parent - first, 0)]
        # the work between consecutive firings at one level (outermost loop, parent firing), named by the pair
        level_root = roots_of(self.rec.data, m[:, F_LOOP])  # (a loop inside another, not in a firing: the outer's)
        a, b = sibling_pairs(level_root, parent)
        gaps = start[b] - end[a]
        a, b, gaps = a[gaps > 0], b[gaps > 0], gaps[gaps > 0]
        pairs, pair_of = np.unique(event_ids[a] * (len(events) + 1) + event_ids[b], return_inverse=True)
        work = np.array([series_index(self.series_of_work(events[code // (len(events) + 1)],
                                                          events[code % (len(events) + 1)]))
                         for code in pairs.tolist()], dtype=np.int64)[pair_of] if len(pairs) else pairs
        size, nested = len(names), inside[b]
        spent = (_sums(own, end - start, size) - _sums(parent_series[inside], (end - start)[inside], size)
                 + _sums(work, gaps, size) - _sums(parent_series[b[nested]], gaps[nested], size))
        out = Counter({name: int(ns) for name, ns in zip(names, spent.tolist()) if ns})
        self._top_level_work(m, level_root, out)
        return out

    def _top_level_work(self, m: Any, level_root: Any, out: Counter[str]) -> None:
        """The work between the last top-level firing of the previous read and the first of this one, at each
        outermost loop; then each loop's last top-level firing kept for the next read."""
        import numpy as np

        start, end, event_ids = m[:, F_START], m[:, F_END], m[:, F_EVENT]
        events = self.rec.data.events
        top = np.flatnonzero(m[:, F_PARENT] < 0)
        top = top[np.argsort(level_root[top], kind="stable")]  # by outermost loop, then in firing order
        if not len(top):
            return
        roots, firsts = np.unique(level_root[top], return_index=True)
        lasts = np.append(firsts[1:], len(top)) - 1
        for root, first, last in zip(roots.tolist(), top[firsts].tolist(), top[lasts].tolist()):
            before = self.last_at.get(root)
            if before is not None and start[first] > before[1]:
                out[self.series_of_work(before[0], events[event_ids[first]])] += int(start[first] - before[1])
            self.last_at[root] = (events[event_ids[last]], int(end[last]))

    def _waits(self) -> Counter[str]:
        """waits=True: the GPU work waited out since the last read, as the series `WAITS`, taken from the series it
        was waited out in (a callback's event, or the work after an event until the next firing)."""
        events = self.rec.data.events
        spent: Counter[str] = Counter()
        for (_, event, _, callback, following), grown in self._growth("wait_agg", lambda entry: entry[2]):
            inside = (self.series_of_event(events[event]) if callback >= 0 or following < 0
                      else self.series_of_work(events[event], events[following]))
            spent[inside] -= grown
            spent[WAITS] += grown
        return spent

    def _past_the_cap(self) -> Counter[str]:
        """The growth of the aggregates past the raw-record cap since the last read: top-level firings whole (what
        nests in them counts in theirs), top-level work by its name."""
        events = self.rec.data.events
        spent: Counter[str] = Counter()
        for (_, event, _), grown in self._growth("overflow_firings", lambda agg: agg.total):
            spent[self.series_of_event(events[event])] += grown
        for (_, before, after, _, nested), grown in self._growth("overflow_work", lambda agg: agg.total):
            if not nested:
                spent[self.series_of_work(events[before], events[after])] += grown
        return spent

    def _growth(self, field: str, total: Any) -> list[tuple[tuple[int, ...], int]]:
        """(key, how much its total grew) for each entry of the data's `field` (a dict) that grew since the last
        read; `total` reads an entry's total."""
        seen = self.seen.setdefault(field, {})
        grown = []
        for key, entry in list(getattr(self.rec.data, field).items()):
            now = total(entry)
            if now > seen.get(key, 0):
                grown.append((key, now - seen.get(key, 0)))
                seen[key] = now
        return grown

def _sums(series: Any, amounts: Any, size: int) -> Any:
    """Per series index (0 to size - 1), the sum of the amounts given for it (a float array; ns stay exact under
    2**53)."""
    import numpy as np

    return np.bincount(series, weights=amounts, minlength=size).astype(np.float64) if len(series) else np.zeros(size)
