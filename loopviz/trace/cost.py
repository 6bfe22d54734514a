"""What tracing itself added to a run: measured on a stand-in loop in the tracing process, counted on the trace.

An adapter measures its own tracer (`measure`): it dispatches a stand-in loop of its framework's events, traced and
untraced, with no handler and with handlers, and keeps the fastest of several interleaved rounds of each (the fastest
is the run least disturbed by whatever else the machine does). Each stand-in batch of events is followed by a small
model's forward and backward (`batch_work`), as a fit's batches are: without it the tracer's code stays warm in the
CPU's caches and runs about twice as fast as in a fit (measured: `benchmarks/tracing_cost.py`). The differences are
what recording adds per firing, per handler call, and for each event's first firing and each handler's first call,
on this machine, with this trace's options. The trace keeps them under `meta['tracing_cost']`; `tracing_cost(data)`
counts the trace's firings, calls, events and handlers at those costs. It is an estimate, stated as one: a fit's
caches and memory differ from the stand-in's.
"""
from __future__ import annotations

import contextlib
import gc
import math
import time
from typing import Any, Callable, ContextManager, NamedTuple, Sequence

from loopviz.trace.data import TraceData

__all__ = ["COST_KEY", "TracingCost", "measure", "batch_work", "unmeasured", "on_test_clock", "tracing_cost",
           "why_unmeasured", "cost_entry", "ROUNDS", "BATCHES", "STAND_IN_EVENTS"]

COST_KEY = "tracing_cost"  # the meta entry: `measure`'s figures, or {"unmeasured": why}
ROUNDS = 5  # interleaved rounds of each stand-in run; the fastest counts
BATCHES = 25  # batches of events per stand-in run
# a batch's events, for the stand-ins of loops that have no events of their own (a DispatchTracer's, a Loop's)
STAND_IN_EVENTS = ("before_batch", "after_pred", "after_loss", "after_backward", "after_step", "after_batch")


class TracingCost(NamedTuple):
    """What recording a trace added to its run, estimated from the costs measured on its adapter's stand-in."""

    added_ms: float  # firings * per firing + handler calls * per call + the events' and handlers' first calls
    share: float  # added_ms over the run's time (0 when the run took none)
    per_firing_us: float
    per_call_us: float
    firings: int  # every firing of the trace, past the raw-record cap too
    calls: int  # every timed handler call, past the cap too
    setup_ms: float  # the first firing of each event in each loop and the first call of each handler (wrapping it)
    events: int  # (loop, event) pairs fired
    handlers: int  # (loop, callback, event) handlers called


# the stand-in: `events(handlers)` gives one callable per event of a batch, each firing it once (`handlers` handlers
# called at each); `tracing(handlers)` gives a context manager tracing those firings (the callables are made inside it)
Events = Callable[[int], Sequence[Callable[[], Any]]]
Tracing = Callable[[int], ContextManager[Any]]


def measure(events: Events, tracing: Tracing, handlers: int = 2, rounds: int = ROUNDS,
            batches: int = BATCHES) -> dict[str, float]:
    """What a tracer adds per firing, per handler call, per event's first firing and per handler's first call, from its
    adapter's stand-in: each run fires a batch of events once (the first firings), then `batches` batches each followed
    by `batch_work()`; the fastest of `rounds` interleaved runs of each configuration counts, with the garbage collector
    held off while they run. `handlers` 0: a loop without handlers (its per-call costs are 0)."""
    work, clock = batch_work(), time.perf_counter_ns

    def run(count: int, traced: bool) -> tuple[int, int, int]:
        with tracing(count) if traced else contextlib.nullcontext():
            fire = list(events(count))
            start = clock()
            for one in fire:
                one()
            first = clock() - start
            start = clock()
            for _ in range(batches):
                for one in fire:
                    one()
                work()
            return first, clock() - start, len(fire)

    counts = (0, handlers) if handlers else (0,)
    for count in counts:  # a first traced run pays for imports and caches that a fit's first firing pays for
        run(count, True), run(count, False)
    fastest: dict[tuple[int, bool], tuple[float, float]] = {}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for count in counts:
                for traced in (False, True):
                    first, rest, per_batch = run(count, traced)
                    old = fastest.get((count, traced), (math.inf, math.inf))
                    fastest[count, traced] = (min(old[0], first / per_batch), min(old[1], rest / (batches * per_batch)))
    finally:
        if collecting:
            gc.enable()

    def added(count: int, part: int) -> float:
        return fastest[count, True][part] - fastest[count, False][part]

    per_firing = max(added(0, 1), 0.0)
    per_call = max((added(handlers, 1) - per_firing) / handlers, 0.0) if handlers else 0.0
    per_event = max(added(0, 0) - per_firing, 0.0)  # an event's first firing, past what any firing costs
    per_handler = max((added(handlers, 0) - per_firing - per_event) / handlers - per_call, 0.0) if handlers else 0.0
    return {"per_firing_ns": round(per_firing, 1), "per_call_ns": round(per_call, 1),
            "per_event_ns": round(per_event, 1), "per_handler_ns": round(per_handler, 1),
            "batches": float(batches), "rounds": float(rounds)}


def batch_work() -> Callable[[], None]:
    """What a stand-in runs after each batch of events: a small model's forward and backward (torch's dispatcher and
    autograd, which in a fit run between the tracer's firings and leave its code cold in the caches)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    model, x = torch.nn.Linear(16, 16), torch.randn(4, 16, generator=gen)

    def work() -> None:
        model(x).sum().backward()

    return work


def unmeasured(why: str) -> dict[str, str]:
    """The meta entry of a trace whose recording cost could not be measured, and why."""
    return {"unmeasured": why}


def on_test_clock() -> dict[str, str]:
    """The meta entry of a trace recorded on a clock its caller gave (`now=`, tests): nothing to measure against."""
    return unmeasured("the trace ran on a clock given by the caller, not the machine's")


def tracing_cost(data: TraceData) -> TracingCost | None:
    """The estimate for this trace, or None when its meta holds no measured costs (see `why_unmeasured`)."""
    from loopviz.trace.reports import total_ns

    entry = data.meta.get(COST_KEY)
    if not isinstance(entry, dict) or "per_firing_ns" not in entry:
        return None
    firings = data.n_firings + data.dropped_firings
    calls = data.n_calls + data.dropped_calls
    events, handlers = _firsts(data)
    setup_ns = events * float(entry.get("per_event_ns", 0.0)) + handlers * float(entry.get("per_handler_ns", 0.0))
    added_ns = firings * float(entry["per_firing_ns"]) + calls * float(entry["per_call_ns"]) + setup_ns
    run_ns = total_ns(data)
    share = added_ns / run_ns if run_ns > 0 else 0.0
    return TracingCost(added_ns / 1e6, share, float(entry["per_firing_ns"]) / 1000, float(entry["per_call_ns"]) / 1000,
                       firings, calls, setup_ns / 1e6, events, handlers)


def _firsts(data: TraceData) -> tuple[int, int]:
    """(loop, event) pairs fired and (loop, callback, event) handlers called: each paid its first firing or call."""
    import numpy as np

    from loopviz.trace.layout import C_CALLBACK, C_FIRING, F_EVENT, F_LOOP
    from loopviz.trace.reports import call_matrix, firing_matrix

    firings, calls = firing_matrix(data), call_matrix(data)
    events = {(int(loop), int(event)) for loop, event in np.unique(firings[:, [F_LOOP, F_EVENT]], axis=0)}
    events |= {(key[0], key[1]) for key in [*data.overflow_firings, *data.overflow_nested]}
    of_call = firings[calls[:, C_FIRING]]
    handlers = {(int(loop), int(cb), int(event)) for loop, cb, event in np.unique(
        np.column_stack([of_call[:, F_LOOP], calls[:, C_CALLBACK], of_call[:, F_EVENT]]), axis=0)}
    handlers |= {(key[0], key[3], key[1]) for key in data.overflow_calls}
    return len(events), len(handlers)


def why_unmeasured(data: TraceData) -> str:
    """Why a trace holds no measured costs: what its adapter said, or that the file predates the measure."""
    entry = data.meta.get(COST_KEY)
    if isinstance(entry, dict) and "unmeasured" in entry:
        return str(entry["unmeasured"])
    return "not measured for this trace (a file saved before loopviz measured it, or a trace built by hand)"


def cost_entry(data: TraceData) -> dict[str, Any]:
    """What the views say of tracing's own cost: the estimate's fields, or {'unmeasured': why}."""
    found = tracing_cost(data)
    return found._asdict() if found is not None else {"unmeasured": why_unmeasured(data)}
