"""`Recorder`: the framework-free, low-overhead store that adapters write event firings and callback calls to.

Raw records go into flat `array('q')` buffers (no Python object per span) up to a cap; past the cap,
each record only updates a fixed-size aggregate (count, total, min, max, log2 histogram), and the
number of dropped records is kept, so memory stays bounded however long the run.
"""
from __future__ import annotations

from array import array
from time import perf_counter_ns
from typing import Any

from loopviz.trace.clock import Clock, HostClock

__all__ = ["Recorder", "FIRING_FIELDS", "CALL_FIELDS", "STATUS", "MODES"]

FIRING_FIELDS = ("event", "mode", "epoch", "iter", "loop", "parent", "start", "end", "status", "dev_start", "dev_end")
CALL_FIELDS = ("firing", "callback", "start", "dur", "status")
NF, NC = len(FIRING_FIELDS), len(CALL_FIELDS)
MODES = ("", "train", "valid")
# Call and firing outcomes. A call 'ran' when its handler ran; the skipped ones were called by the loop
# but did nothing (no handler, or switched off by run/run_train/run_valid).
STATUS = ("ran", "no_handler", "skipped_run", "skipped_run_train", "skipped_run_valid", "cancelled", "error")
RAN, NO_HANDLER, SKIPPED_RUN, SKIPPED_TRAIN, SKIPPED_VALID, CANCELLED, ERROR = range(len(STATUS))
HIST_BUCKETS = 64


class _Aggregate:
    """Count, total, min, max and a log2 histogram of durations: constant memory, any number of records."""

    __slots__ = ("count", "total", "min", "max", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.min = 1 << 62
        self.max = 0
        self.hist = [0] * HIST_BUCKETS

    def add(self, dur: int) -> None:
        self.count += 1
        self.total += dur
        self.min = min(self.min, dur)
        self.max = max(self.max, dur)
        self.hist[min(max(dur, 0).bit_length(), HIST_BUCKETS - 1)] += 1

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "min": self.min, "max": self.max, "hist": self.hist}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "_Aggregate":
        agg = cls()
        agg.count, agg.total, agg.min, agg.max, agg.hist = data["count"], data["total"], data["min"], data["max"], list(data["hist"])
        return agg


class Recorder:
    """Collects one run. Adapters call `begin_firing`/`end_firing` around each event and `call` per callback."""

    def __init__(self, clock: Clock | None = None, max_calls: int = 1_000_000, max_firings: int = 250_000):
        self.clock = clock or HostClock()
        self.max_calls = max_calls
        self.max_firings = max_firings
        self.firings = array("q")
        self.calls = array("q")
        self.events: list[str] = []
        self.event_ids: dict[str, int] = {}
        self.callbacks: list[dict[str, Any]] = []
        self.callback_ids: dict[int, int] = {}
        self.loops: list[str] = []
        self.loop = -1
        # open firings, innermost last: (index or -1 when dropped, event id, mode, start if dropped)
        self.stack: list[tuple[int, int, int, int]] = []
        self.current = -1  # the innermost open firing (-1: none, or dropped)
        self.call_cap = max_calls * NC
        self.firing_cap = max_firings * NF
        self.device = self.clock.name != "host"  # event boundaries also marked on a device clock
        self.no_handler_calls = 0  # calls to callbacks without a handler for the event: counted, not recorded
        self.dropped_firings = 0
        self.dropped_calls = 0
        self.overflow_firings: dict[tuple[int, int], _Aggregate] = {}
        self.overflow_calls: dict[tuple[int, int, int, int], _Aggregate] = {}
        self.deferred: list[int] = []  # positions in `firings` awaiting a deferred clock's times
        # state changes (opt-in): names, an aggregate per (event, mode, callback, attribute), a capped raw log
        self.attrs: list[str] = []
        self.attr_ids: dict[str, int] = {}
        self.change_agg: dict[tuple[int, int, int, int], list[int]] = {}
        self.change_log = array("q")
        self.max_changes = max_calls
        self.dropped_changes = 0

    # -- registries ---------------------------------------------------------------------------

    def event_id(self, name: str) -> int:
        """The small integer standing for an event name."""
        eid = self.event_ids.get(name)
        if eid is None:
            eid = self.event_ids[name] = len(self.events)
            self.events.append(name)
        return eid

    def callback_id(self, key: int, describe: Any) -> int:
        """The small integer standing for a callback (keyed by identity); `describe()` gives its facts once."""
        cid = self.callback_ids.get(key)
        if cid is None:
            cid = self.callback_ids[key] = len(self.callbacks)
            self.callbacks.append(describe())
        return cid

    def begin_loop(self, label: str) -> None:
        """Start a new loop (a fit, a validate, a get_preds...): later firings belong to it."""
        self.loops.append(label)
        self.loop = len(self.loops) - 1

    # -- the hot path -------------------------------------------------------------------------

    def begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """Open an event firing; returns its index (or -1 once past the cap)."""
        eid = self.event_ids.get(event)
        if eid is None:
            eid = self.event_id(event)
        firings = self.firings
        if len(firings) >= self.firing_cap:
            self.stack.append((-1, eid, mode, perf_counter_ns()))
            self.current = -1
            return -1
        index = len(firings) // NF
        parent = self.current
        self.current = index
        self.stack.append((index, eid, mode, 0))
        dev = -1
        if self.device:
            dev = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(len(firings) + 9)
        firings.extend((eid, mode, epoch, iteration, self.loop, parent, perf_counter_ns(), 0, 0, dev, -1))
        return index

    def end_firing(self, index: int, status: int) -> None:
        """Close the innermost open firing with its outcome (0 ok, else a CANCELLED/ERROR status)."""
        end = perf_counter_ns()
        stack = self.stack
        _, eid, mode, dropped_start = stack.pop()
        self.current = stack[-1][0] if stack else -1
        if index < 0:
            self.dropped_firings += 1
            agg = self.overflow_firings.get((eid, mode))
            if agg is None:
                agg = self.overflow_firings[(eid, mode)] = _Aggregate()
            agg.add(end - dropped_start)
            return
        base = index * NF
        firings = self.firings
        firings[base + 7] = end
        firings[base + 8] = status
        if self.device:
            firings[base + 10] = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(base + 10)
                if len(self.deferred) >= 4096:
                    self.drain()

    def call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """Record one callback call inside the innermost open firing."""
        firing = self.current
        if firing >= 0 and len(self.calls) < self.call_cap:
            self.calls.extend((firing, cb_id, start, end - start, status))
            return
        self.dropped_calls += 1
        _, eid, mode, _ = self.stack[-1] if self.stack else (-1, -1, 0, 0)
        key = (eid, mode, cb_id, status)
        agg = self.overflow_calls.get(key)
        if agg is None:
            agg = self.overflow_calls[key] = _Aggregate()
        agg.add(end - start)

    def changed(self, cb_id: int, names: list[str]) -> None:
        """Record that a callback's call (in the innermost open firing) changed these attributes."""
        index, eid, mode, _ = self.stack[-1] if self.stack else (-1, -1, 0, 0)
        epoch, iteration = (self.firings[index * NF + 2], self.firings[index * NF + 3]) if index >= 0 else (-1, -1)
        for name in names:
            aid = self.attr_ids.get(name)
            if aid is None:
                aid = self.attr_ids[name] = len(self.attrs)
                self.attrs.append(name)
            key = (eid, mode, cb_id, aid)
            agg = self.change_agg.get(key)
            if agg is None:
                self.change_agg[key] = [1, epoch, iteration, epoch, iteration]
            else:
                agg[0] += 1
                agg[3], agg[4] = epoch, iteration
            if index >= 0 and len(self.change_log) < self.max_changes * 3:
                self.change_log.extend((index, cb_id, aid))
            else:
                self.dropped_changes += 1

    def drain(self) -> None:
        """Write a deferred clock's times into the firings they belong to."""
        times = self.clock.drain()
        for position, value in zip(self.deferred, times):
            self.firings[position] = value
        self.deferred.clear()

