"""`Recorder`: the framework-free, low-overhead store that adapters write event firings and callback calls to.

Raw records are packed into bytes (`loopviz.trace.records`: 32 per firing, 24 per call, no Python object per
span) up to a cap; past the cap,
each record only updates a fixed-size aggregate (count, total, min, max, log2 histogram) kept per loop,
so memory stays bounded however long the run. What the reports need whole is kept whatever the cap:
each loop's span, the work between sibling firings past the cap, and calls without a handler per loop.
Everything recorded lands in one `TraceData`.
"""
from __future__ import annotations

import struct
from time import perf_counter_ns
from typing import Any, Callable

from loopviz.trace.clock import Clock, HostClock
from loopviz.trace.data import Aggregate, TraceData, is_outermost, recount
from loopviz.trace.layout import (
    CALL_FIELDS, CANCELLED, ERROR, FIRING_FIELDS, MODES, NCH, NO_HANDLER, RAN, SKIPPED, SKIPPED_TRAIN,
    SKIPPED_VALID, STATUS,
)
from loopviz.trace.records import CALL_ROW, FIRING_END, FIRING_END_AT, FIRING_ROW, LONG, MAX_EVENT, MAX_INDEX

__all__ = ["Recorder", "FIRING_FIELDS", "CALL_FIELDS", "STATUS", "MODES", "RAN", "NO_HANDLER", "SKIPPED",
           "SKIPPED_TRAIN", "SKIPPED_VALID", "CANCELLED", "ERROR"]

_DRAIN_EVERY = 4096  # deferred clock marks resolved per batch
# Rows are packed by struct (`loopviz.trace.records`) and appended as bytes: `array.extend` of a tuple parses
# every int through the argument parser (about 700 instructions each), packing converts them in C (about 100).
_FIRING_SIZE, _CALL_SIZE = FIRING_ROW.size, CALL_ROW.size
_pack_firing, _pack_call, _pack_end = FIRING_ROW.pack, CALL_ROW.pack, FIRING_END.pack_into


def _add(aggregates: dict[tuple[int, ...], Aggregate], key: tuple[int, ...], dur: int) -> None:
    """Count one duration past the cap into the aggregate at `key`, creating it on first use."""
    agg = aggregates.get(key)
    if agg is None:
        agg = aggregates[key] = Aggregate()
    agg.add(dur)


class Recorder:
    """Collects one run into `data`. Adapters call `begin_firing`/`end_firing` around each event and `call`
    per callback; `close()` hands the finished `TraceData` over.

    Its interface to tracers is its methods (`vocabulary`, the loops' and callbacks' methods, the hot path), `now`
    (the host clock), `known_callback` and `loop` (the innermost open loop); tracers read none of its buffers or id
    tables, with one exception: `no_handler[loop + 1] += 1` is `no_handler_call()` inlined, for the calls a loop
    makes to callbacks without a handler (most calls, where a loop calls every callback at every event), where a
    method call would cost a frame each."""

    def __init__(self, clock: Clock | None = None, max_calls: int = 1_000_000, max_firings: int = 250_000,
                 now: Callable[[], int] | None = None):
        # the host clock (ns) every timestamp is read from, the tracers' included: inject a deterministic one in tests
        self.now = now or perf_counter_ns
        self.clock = clock or HostClock()
        self.max_calls = max_calls
        self.max_firings = max_firings
        self.data = TraceData(clock=self.clock.name)
        self.data.meta["dispatch_label"] = "dispatch"  # until the adapter names it (`vocabulary`)
        # the hot path's own handles on the buffers and aggregates it fills (the same objects as in `data`)
        # the packed rows (bytearrays), their exact long durations, and the firings' device times
        self.firings, self.calls = self.data.firings.packed, self.data.calls.packed
        self.long_firings, self.long_calls = self.data.firings.long, self.data.calls.long
        self.device_times = self.data.firings.device
        self.add_firing, self.add_call = self.firings.extend, self.calls.extend
        self.overflow_firings, self.overflow_calls = self.data.overflow_firings, self.data.overflow_calls
        self.overflow_nested, self.overflow_work = self.data.overflow_nested, self.data.overflow_work
        self.event_ids: dict[str, int] = {}
        self.short_ids: dict[str, int] = {}  # the events begin_firing's short path may take (ids a row can hold)
        self.callback_ids: dict[int, int] = {}
        # known_callback(key) -> its callback id, or None: bound once, for the tracers' hot path
        self.known_callback = self.callback_ids.get
        self.attr_ids: dict[str, int] = {}
        self.loop = -1  # the innermost open loop
        self.loop_stack: list[int] = []  # open loops, innermost last
        # open firings, innermost last: (index or -1 when dropped, event id, mode, loop, start)
        self.stack: list[tuple[int, int, int, int, int]] = []
        self.sibling: tuple[int, int] | None = None  # (event id, end) of the last firing closed at this level
        self.last_end = 0  # end of the last firing closed, at any level
        self.top_first = -1  # start of the first top-level firing of the open outermost loop
        self.top_end = -1  # end of the last top-level firing closed
        self.current = -1  # the innermost open firing (-1: none, or dropped)
        self.call_cap = min(max_calls, MAX_INDEX) * _CALL_SIZE  # in bytes of packed rows
        self.firing_cap = min(max_firings, MAX_INDEX) * _FIRING_SIZE
        self.device = self.clock.name != "host"  # event boundaries also marked on a device clock
        self.short_cap = -1 if self.device else self.firing_cap  # begin_firing's short path: host clock, under the cap
        self.change_cap = max_calls * NCH
        self.no_handler = [0]  # calls to callbacks without a handler for the event: outside any loop, then per loop
        self.deferred: list[int] = []  # positions in `device_times` awaiting a deferred clock's times

    # -- registries ---------------------------------------------------------------------------

    def event_id(self, name: str) -> int:
        """The small integer standing for an event name."""
        eid = self.event_ids.get(name)
        if eid is None:
            eid = self.event_ids[name] = len(self.data.events)
            self.data.events.append(name)
            if eid <= MAX_EVENT:
                self.short_ids[name] = eid
        return eid

    def callback_id(self, key: int, describe: Any) -> int:
        """The small integer standing for a callback (keyed by identity); `describe()` gives its facts once."""
        cid = self.callback_ids.get(key)
        if cid is None:
            cid = self.callback_ids[key] = len(self.data.callbacks)
            self.data.callbacks.append(describe())
        return cid

    def vocabulary(self, dispatch_label: str | None = None, range_prefix: str | None = None,
                   batch_events: tuple[str, str] | None = None, skip_statuses: dict[str, str] | None = None) -> None:
        """What the adapter calls the parts of its loop, kept in the trace's meta (and its files): the label of the
        time in events no callback's call accounts for, the prefix of the profiler ranges it opens (ranges=True),
        the events that open and close a batch, and what each skip status means in its loop."""
        given = {"dispatch_label": dispatch_label, "range_prefix": range_prefix,
                 "batch_events": list(batch_events) if batch_events else None, "skip_statuses": skip_statuses}
        self.data.meta.update({key: value for key, value in given.items() if value is not None})

    def forget_callback(self, key: int) -> None:
        """Forget the object keyed `key` (collected: a new object reusing its id is a new callback); its records keep
        their callback id."""
        self.callback_ids.pop(key, None)

    def loop_open(self, index: int) -> bool:
        """True while loop `index` has not ended."""
        return index in self.loop_stack

    @property
    def loops_open(self) -> int:
        """How many loops are open (nested ones included)."""
        return len(self.loop_stack)

    def is_outermost_loop(self, index: int) -> bool:
        """True when loop `index` began inside no other loop and no firing."""
        return is_outermost(self.data.loop_spans[index])

    def end_loops(self) -> None:
        """End every open loop, the innermost first."""
        while self.loop_stack:
            self.end_loop()

    def begin_loop(self, label: str, start: int | None = None) -> int:
        """Start a loop (a fit, a validate, a get_preds...) inside the open one, if any; returns its index.
        Firings belong to it until `end_loop`. `start` (ns): when its entry point was called (default: now)."""
        data = self.data
        index = len(data.loops)
        parent_firing = (self.current if self.current >= 0 else -2) if self.stack else -1  # -2: a dropped firing
        data.loops.append(label)
        data.loop_spans.append([start if start is not None else self.now(), -1, self.loop, parent_firing, -1, -1])
        if self.loop < 0 and not self.stack:  # an outermost loop: the run's time is tiled from here
            self.sibling, self.top_first, self.top_end = None, -1, -1
        self.loop_stack.append(index)
        self.loop = index
        self.no_handler.append(0)
        return index

    def end_loop(self, end: int | None = None) -> None:
        """End the innermost open loop; `end` (ns): when its entry point returned (default: its last firing's end)."""
        if not self.loop_stack:
            return
        index = self.loop_stack.pop()
        span = self.data.loop_spans[index]
        span[1] = end if end is not None else max(self.last_end, span[0])
        if is_outermost(span):  # where its first and last top-level firings were
            span[4], span[5] = self.top_first, self.top_end
            self.sibling = None
        self.loop = self.loop_stack[-1] if self.loop_stack else -1

    def extend_loop(self, index: int, end: int) -> None:
        """Let an ended loop run on to `end` (its caller's own work after it, until the caller returned)."""
        span = self.data.loop_spans[index]
        span[1] = max(span[1], end)

    # -- the hot path -------------------------------------------------------------------------

    # begin_firing, end_firing and call run at every event and handler call: each has a short path for what is
    # nearly always so (a host clock, under the caps, an event seen before) and leaves the rest to a full one.

    def begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """Open an event firing; returns its index (or -1 once past the cap)."""
        eid = self.short_ids.get(event)
        firings = self.firings
        if eid is None or len(firings) >= self.short_cap:
            return self._begin_firing(event, mode, epoch, iteration)
        stack = self.stack
        start = self.now()
        if not stack and self.top_first < 0:
            self.top_first = start
        index = len(firings) >> 5  # rows of 32 bytes
        loop = self.loop
        stack.append((index, eid, mode, loop, start))
        self.sibling = None  # this firing's own children start a new level
        try:
            self.add_firing(_pack_firing(start, epoch, iteration, loop, self.current, eid, mode, 0, 0))
        except (struct.error, TypeError):  # an epoch or iteration that is not a 32-bit integer: recorded as -1
            self.add_firing(_pack_firing(start, -1, -1, loop, self.current, eid, mode, 0, 0))
        self.current = index
        return index

    def _begin_firing(self, event: str, mode: int, epoch: int, iteration: int) -> int:
        """begin_firing's full path: a new event, past the cap, or a device clock to mark."""
        eid = self.event_id(event)
        firings = self.firings
        loop = self.loop
        stack = self.stack
        sibling, self.sibling = self.sibling, None  # this firing's own children start a new level
        if len(firings) >= self.firing_cap or eid > MAX_EVENT:  # past the cap (or an event a row cannot name)
            start = self.now()
            if sibling is not None:  # the work since the previous firing at this level, kept as an aggregate
                _add(self.overflow_work, (loop, sibling[0], eid, mode, 1 if stack else 0), start - sibling[1])
            if not stack and self.top_first < 0:
                self.top_first = start
            stack.append((-1, eid, mode, loop, start))
            self.current = -1
            return -1
        index = len(firings) // _FIRING_SIZE
        parent = self.current
        self.current = index
        if self.device:
            if self.clock.deferred:
                self.deferred.append(len(self.device_times))
            self.device_times.extend((self.clock.mark(), -1))
        start = self.now()
        stack.append((index, eid, mode, loop, start))
        if len(stack) == 1 and self.top_first < 0:
            self.top_first = start
        try:
            self.add_firing(_pack_firing(start, epoch, iteration, loop, parent, eid, mode, 0, 0))
        except (struct.error, TypeError):  # an epoch or iteration that is not a 32-bit integer: recorded as -1
            self.add_firing(_pack_firing(start, -1, -1, loop, parent, eid, mode, 0, 0))
        return index

    def end_firing(self, index: int, status: int, end: int | None = None) -> None:
        """Close the innermost open firing with its outcome (0 ok, else a CANCELLED/ERROR status); `end` (ns): when it
        ended, if earlier than now."""
        if end is None:
            end = self.now()
        if index < 0 or self.device:
            return self._end_firing(index, status, end)
        stack = self.stack
        _, eid, _, _, start = stack.pop()
        self.sibling = (eid, end)
        self.last_end = end
        if stack:
            self.current = stack[-1][0]
        else:
            self.current = -1
            self.top_end = end
        dur = end - start
        if dur >= LONG:
            self.long_firings[index] = dur
            dur = LONG
        _pack_end(self.firings, (index << 5) + FIRING_END_AT, status, dur)

    def _end_firing(self, index: int, status: int, end: int) -> None:
        """end_firing's full path: a firing past the cap, or a device clock to mark."""
        stack = self.stack
        _, eid, mode, loop, start = stack.pop()
        self.sibling = (eid, end)
        self.last_end = end
        if stack:
            self.current = stack[-1][0]
        else:
            self.current = -1
            self.top_end = end
        if index < 0:
            _add(self.overflow_nested if stack else self.overflow_firings, (loop, eid, mode), end - start)
            return
        dur = end - start
        if dur >= LONG:
            self.long_firings[index] = dur
            dur = LONG
        _pack_end(self.firings, index * _FIRING_SIZE + FIRING_END_AT, status, dur)
        if self.device:
            self.device_times[2 * index + 1] = self.clock.mark()
            if self.clock.deferred:
                self.deferred.append(2 * index + 1)
                if len(self.deferred) >= _DRAIN_EVERY:
                    self.drain()

    def call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """Record one callback call inside the innermost open firing."""
        firing = self.current
        dur = end - start
        if firing >= 0 and len(self.calls) < self.call_cap and dur < LONG:
            self.add_call(_pack_call(start, firing, cb_id, dur, status))
            return
        self._call(cb_id, start, end, status)

    def _call(self, cb_id: int, start: int, end: int, status: int) -> None:
        """call's full path: past the cap, outside any firing, or a duration a row cannot hold."""
        firing = self.current
        if firing >= 0 and len(self.calls) < self.call_cap:
            dur = end - start
            if dur >= LONG:
                self.long_calls[len(self.calls) // _CALL_SIZE] = dur
                dur = LONG
            self.add_call(_pack_call(start, firing, cb_id, dur, status))
            return
        _, eid, mode, loop, _ = self.stack[-1] if self.stack else (-1, -1, 0, self.loop, 0)
        _add(self.overflow_calls, (loop, eid, mode, cb_id, status), end - start)

    def changed(self, cb_id: int, names: list[str]) -> None:
        """Record that a callback's call (in the innermost open firing) changed these attributes."""
        index, eid, mode, loop, _ = self.stack[-1] if self.stack else (-1, -1, 0, self.loop, 0)
        epoch, iteration = self.data.firings.epoch_iter(index) if index >= 0 else (-1, -1)
        data = self.data
        for name in names:
            aid = self.attr_ids.get(name)
            if aid is None:
                aid = self.attr_ids[name] = len(data.attrs)
                data.attrs.append(name)
            key = (loop, eid, mode, cb_id, aid)
            agg = data.change_agg.get(key)
            if agg is None:
                data.change_agg[key] = [1, epoch, iteration, epoch, iteration]
            else:
                agg[0] += 1
                agg[3], agg[4] = epoch, iteration
            if index >= 0 and len(data.change_log) < self.change_cap:
                data.change_log.extend((index, cb_id, aid))  # one row in CHANGE_FIELDS order

    def call_waited(self, cb_id: int, wait: Any) -> None:
        """Record that a callback's call (in the innermost open firing) synchronised with the GPU (a `Wait`)."""
        _, eid, mode, loop, _ = self.stack[-1] if self.stack else (-1, -1, 0, self.loop, 0)
        self.waited((loop, eid, mode, cb_id, -1), wait)

    def waited(self, key: tuple[int, int, int, int, int], wait: Any) -> None:
        """Add one synchronising call or piece of work (a `Wait`) to `wait_agg` under its key."""
        entry = self.data.wait_agg.get(key)
        if entry is None:
            self.data.wait_agg[key] = [1, wait.syncs, wait.wait_ns, wait.wait_ns, wait.site]
        else:
            entry[0] += 1
            entry[1] += wait.syncs
            entry[2] += wait.wait_ns
            entry[3] = max(entry[3], wait.wait_ns)

    def drain(self) -> None:
        """Write a deferred clock's times into the firings they belong to."""
        times = self.clock.drain()
        for position, value in zip(self.deferred, times):
            self.device_times[position] = value
        self.deferred.clear()

    def no_handler_call(self) -> None:
        """Count one call of a callback that has no handler for the event (a loop that calls every callback at every
        event makes many; a tracer may inline this on its fast path)."""
        self.no_handler[self.loop + 1] += 1

    def close(self) -> TraceData:
        """The recorded data, complete: open loops ended, deferred clock times resolved, counts of what went past
        the caps filled in."""
        self.end_loops()
        self.drain()
        data = self.data
        data.no_handler_calls = sum(self.no_handler)
        data.no_handler_by_loop = self.no_handler[1:]
        data.meta["max_calls"], data.meta["max_firings"] = self.max_calls, self.max_firings
        return recount(data)
