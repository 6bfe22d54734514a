"""Clocks for event boundaries: host time, CUDA events resolved later, or a sync at each boundary.

CUDA is asynchronous: a host timestamp says when work was *launched*, not when the GPU did it. The
`CudaEventClock` records a `torch.cuda.Event` at each boundary (non-blocking) and turns them into
times once, at `resolve()`, after a single synchronize. `SyncClock` synchronizes at every boundary:
exact, but it stalls the pipeline. Both take their CUDA functions as arguments so that their logic is
tested on machines without a GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

__all__ = ["Clock", "HostClock", "SyncClock", "CudaEventClock", "ClockKind", "CLOCKS", "AUTO", "clock_names", "make_clock",
           "stream_recorder"]


class Clock(Protocol):
    """Marks boundaries during a run. A deferred clock returns placeholders and gives the times at `drain()`."""

    name: str
    deferred: bool

    def mark(self) -> int:
        """Nanoseconds for 'now' (or, for a deferred clock, a placeholder until `drain`)."""
        ...

    def drain(self) -> list[int]:
        """Nanoseconds (host scale) of the marks made since the last drain, in order."""
        ...


class HostClock:
    """`time.perf_counter_ns`: what the host spent, which on a GPU is launch time, not GPU time."""

    name = "host"
    deferred = False

    def __init__(self, now: Callable[[], int] = time.perf_counter_ns):
        self.now = now

    def mark(self) -> int:
        return self.now()

    def drain(self) -> list[int]:
        return []


class SyncClock(HostClock):
    """Synchronize the device, then read the host clock: exact GPU-inclusive times, at the cost of a stall."""

    name = "sync"

    def __init__(self, synchronize: Callable[[], Any], now: Callable[[], int] = time.perf_counter_ns):
        super().__init__(now)
        self.synchronize = synchronize

    def mark(self) -> int:
        self.synchronize()
        return self.now()


class CudaEventClock:
    """A CUDA event per boundary, recorded without blocking; turned into times at `drain()`.

    `new_event()` must return an object with `record()`, `synchronize()` and `elapsed_time(other) -> ms`,
    as `torch.cuda.Event(enable_timing=True)` does. Events are pooled: a drain waits for the last one
    recorded (one wait per drain, not per boundary), reads every elapsed time, and reuses the pool.
    """

    name = "cuda"
    deferred = True

    def __init__(self, new_event: Callable[[], Any], now: Callable[[], int] = time.perf_counter_ns,
                 record: Callable[[Any], Any] = lambda event: event.record()):
        self.new_event = new_event
        self.now = now
        self.record = record  # records an event on the current stream
        self.pool: list[Any] = []
        self.used = 0
        self.origin: Any = None
        self.origin_ns = 0

    def mark(self) -> int:
        if self.origin is None:  # the first mark anchors GPU time to the host clock
            self.origin = self.new_event()
            self.record(self.origin)
            self.origin_ns = self.now()
        if self.used == len(self.pool):
            self.pool.append(self.new_event())
        self.record(self.pool[self.used])
        self.used += 1
        return -1

    def drain(self) -> list[int]:
        if self.used == 0:
            return []
        self.pool[self.used - 1].synchronize()
        times = [self.origin_ns + round(self.origin.elapsed_time(e) * 1e6) for e in self.pool[: self.used]]
        self.used = 0
        return times


def stream_recorder(torch: Any) -> Callable[[Any], Any]:
    """`event.record()` on the current CUDA stream, for `torch.cuda.Event`s, without the Stream object that
    `torch.cuda.current_stream()` builds at every call (tens of µs, measured on an H100 machine, against one C call
    here): the Stream is rebuilt only when the current stream changes. `event.record()` where torch lacks the calls."""
    try:
        current, device, record = (torch._C._cuda_getCurrentStream, torch._C._cuda_getDevice,
                                   torch._C._CudaEventBase.record)
    except AttributeError:
        return lambda event: event.record()
    cached: list[Any] = [None, None]  # the current stream's (id, device, type), and its Stream

    def on_current_stream(event: Any) -> None:
        key = current(device())
        if key != cached[0]:
            cached[0], cached[1] = key, torch.cuda.current_stream()
        record(event, cached[1])

    return on_current_stream


def _cuda_events(torch: Any) -> Clock:
    return CudaEventClock(lambda: torch.cuda.Event(enable_timing=True), record=stream_recorder(torch))


def _sync(torch: Any) -> Clock:
    return SyncClock(torch.cuda.synchronize)


def _host(torch: Any) -> Clock:
    return HostClock()


@dataclass(frozen=True)
class ClockKind:
    """One clock users can ask for by name: how to make it, and whether it needs a CUDA device."""

    make: Callable[[Any], Clock]  # given the torch module (or None when the clock needs no device)
    needs_cuda: bool
    help: str


# The clocks, by the name users give (`learn.trace(clock=...)`, `loopviz trace --clock`). To add a clock: write its
# class in a new module and add a row here; 'auto' is not a clock but the choice made below.
CLOCKS: dict[str, ClockKind] = {
    "host": ClockKind(_host, False, "time.perf_counter_ns: host time, launch time on a GPU"),
    "cuda": ClockKind(_cuda_events, True, "CUDA events, read once at the end: GPU time without stalls"),
    "sync": ClockKind(_sync, True, "synchronize at every boundary: exact, but it stalls the GPU"),
}
AUTO = "auto"


def clock_names() -> list[str]:
    """Every name `make_clock` accepts: 'auto', then the clocks."""
    return [AUTO, *CLOCKS]


def make_clock(kind: str, model_device: str = "cpu") -> Clock:
    """The clock for `kind`: a name in `CLOCKS`, or 'auto' (cuda when the model is on a CUDA device, else host)."""
    from loopviz.checks import check_choice
    from loopviz.errors import LoopvizError

    check_choice("clock", kind, clock_names())
    if kind == AUTO:
        kind = "cuda" if model_device.startswith("cuda") else "host"
    chosen = CLOCKS[kind]
    if not chosen.needs_cuda:
        return chosen.make(None)
    import torch

    if not torch.cuda.is_available():
        raise LoopvizError(f"clock={kind!r} needs a CUDA device, and torch sees none; use clock='host'.")
    return chosen.make(torch)
