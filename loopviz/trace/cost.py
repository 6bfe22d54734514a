"""What tracing itself added to a run: measured on a stand-in loop in the tracing process, counted on the trace.

An adapter measures its own tracer (`measure`): it dispatches a stand-in loop of its framework's events, traced and
untraced, with no handler and with handlers, and keeps the fastest of several interleaved rounds of each (the fastest
is the run least disturbed by whatever else the machine does). The difference is what recording adds per firing and
per handler call on this machine, with this trace's options. The trace keeps those two figures under
`meta['tracing_cost']`; `tracing_cost(data)` multiplies them by the trace's firings and handler calls. It is an
estimate, stated as one: a fit's caches and memory differ from the stand-in's.
"""
from __future__ import annotations

import gc
import math
from typing import Any, Callable, NamedTuple

from loopviz.trace.data import TraceData

__all__ = ["COST_KEY", "TracingCost", "measure", "unmeasured", "tracing_cost", "why_unmeasured", "cost_entry", "ROUNDS",
           "FIRINGS"]

COST_KEY = "tracing_cost"  # the meta entry: {"per_firing_ns", "per_call_ns", "firings", "rounds"} or {"unmeasured"}
ROUNDS = 5  # interleaved rounds of each stand-in run; the fastest counts
FIRINGS = 200  # firings per stand-in run


class TracingCost(NamedTuple):
    """What recording a trace added to its run, estimated from the per-firing and per-call costs measured."""

    added_ms: float  # firings * per firing + handler calls * per call
    share: float  # added_ms over the run's time (0 when the run took none)
    per_firing_us: float
    per_call_us: float
    firings: int  # every firing of the trace, past the raw-record cap too
    calls: int  # every timed handler call, past the cap too


# run(handlers, traced, n): ns per firing of n firings of the stand-in loop, each firing calling `handlers` handlers
StandIn = Callable[[int, bool, int], float]


def measure(run: StandIn, handlers: int = 2, rounds: int = ROUNDS, firings: int = FIRINGS) -> dict[str, float]:
    """The per-firing and per-call cost of a tracer, from `run` (its adapter's stand-in loop): the fastest of `rounds`
    interleaved rounds of each configuration, with the garbage collector held off while they run. `handlers` 0: a
    loop without handlers (its per-call cost is 0)."""
    counts = (0, handlers) if handlers else (0,)
    for first in counts:  # a first traced run pays for imports and caches that a fit's first firing pays for
        run(first, True, 8), run(first, False, 8)
    fastest: dict[tuple[int, bool], float] = {}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for count in counts:
                for traced in (False, True):
                    ns = run(count, traced, firings)
                    fastest[count, traced] = min(ns, fastest.get((count, traced), math.inf))
    finally:
        if collecting:
            gc.enable()
    per_firing = max(fastest[0, True] - fastest[0, False], 0.0)
    with_handlers = max(fastest[handlers, True] - fastest[handlers, False], 0.0) if handlers else per_firing
    per_call = max((with_handlers - per_firing) / handlers, 0.0) if handlers else 0.0
    return {"per_firing_ns": round(per_firing, 1), "per_call_ns": round(per_call, 1), "firings": float(firings),
            "rounds": float(rounds)}


def unmeasured(why: str) -> dict[str, str]:
    """The meta entry of a trace whose recording cost could not be measured, and why."""
    return {"unmeasured": why}


def tracing_cost(data: TraceData) -> TracingCost | None:
    """The estimate for this trace, or None when its meta holds no measured costs (see `why_unmeasured`)."""
    from loopviz.trace.reports import total_ns

    entry = data.meta.get(COST_KEY)
    if not isinstance(entry, dict) or "per_firing_ns" not in entry:
        return None
    per_firing, per_call = float(entry["per_firing_ns"]), float(entry["per_call_ns"])
    firings = data.n_firings + data.dropped_firings
    calls = data.n_calls + data.dropped_calls
    added_ns = firings * per_firing + calls * per_call
    run_ns = total_ns(data)
    share = added_ns / run_ns if run_ns > 0 else 0.0
    return TracingCost(added_ns / 1e6, share, per_firing / 1000, per_call / 1000, firings, calls)


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
