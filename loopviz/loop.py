"""`Loop`: instrument a plain PyTorch training function (no framework) to get loopviz's diagram and timings.

    loop = Loop("my training")
    with loop.trace() as t:
        for epoch in range(2):
            with loop.phase("epoch"):
                for xb, yb in dl:
                    with loop.phase("batch"):           # fires before_batch ... after_batch
                        with loop.work("forward"):      # names the time until the next event
                            pred = model(xb)
                        loop.event("after_pred")
                        ...
    loop.spec()            # the loop as loopviz's model, learnt from what ran: phases, events, work, repeats
    t.summary()            # the timings, as for a fastai fit

`loop.phase(name)` also decorates a function. Phases fire `before_<name>` and `after_<name>`, as
fastai's `_with_events` does; an exception leaving a phase is recorded on its after event's firing
(`after_<name>` then fires with the error status and the exception propagates).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Iterator

from loopviz.checks import check_int, check_str
from loopviz.errors import LoopvizError
from loopviz.model import Event, LoopSpec, Phase, Step, Work
from loopviz.trace.record import ERROR, Recorder
from loopviz.trace.trace import Trace

__all__ = ["Loop"]


@dataclass
class _Node:
    """What was seen inside one phase, in first-seen order."""

    name: str
    steps: list[tuple[str, Any]] = field(default_factory=list)  # ("event", name) | ("work", name) | ("phase", _Node)
    entries: int = 0
    max_entries_per_parent: int = 0
    entries_this_parent: int = 0

    def child(self, name: str) -> "_Node":
        for kind, value in self.steps:
            if kind == "phase" and value.name == name:
                return value
        node = _Node(name)
        self.steps.append(("phase", node))
        return node

    def note(self, kind: str, name: str) -> None:
        if (kind, name) not in self.steps:
            self.steps.append((kind, name))


class Loop:
    """A hand-written loop, instrumented: phases, events and work, recorded and drawn like fastai's."""

    def __init__(self, name: str = "loop", framework: str = "plain PyTorch"):
        self.name = check_str("name", name)
        self.framework = check_str("framework", framework)
        self.root = _Node(name)
        self.stack: list[_Node] = [self.root]
        self.rec: Recorder | None = None
        self.last_event: str | None = None
        self.pending_work: list[str] = []
        self.work_names: dict[tuple[str, str], str] = {}
        self.position = (-1, -1)

    # -- instrumentation ----------------------------------------------------------------------

    def event(self, name: str) -> None:
        """An instant event (e.g. 'after_pred')."""
        self.stack[-1].note("event", check_str("name", name))
        self._fire(name, 0)

    @contextlib.contextmanager
    def work(self, name: str) -> Iterator[None]:
        """Names the work done inside the block (the time from the previous event to the next one)."""
        self.stack[-1].note("work", check_str("name", name))
        self.pending_work.append(name)
        yield

    def phase(self, name: str) -> "_PhaseContext":
        """A phase: fires before_<name> on entry and after_<name> on exit; a context manager or a decorator."""
        return _PhaseContext(self, check_str("name", name))

    def at(self, epoch: int = -1, iteration: int = -1) -> None:
        """Tell the trace which epoch and iteration the next events belong to (optional)."""
        self.position = (check_int("epoch", epoch, -1), check_int("iteration", iteration, -1))

    def _fire(self, name: str, status: int) -> None:
        if self.pending_work and self.last_event is not None:
            self.work_names[(self.last_event, name)] = "+".join(dict.fromkeys(self.pending_work))
        self.pending_work.clear()
        self.last_event = name
        if self.rec is not None:
            if self.rec.loop < 0:
                self.rec.begin_loop(self.name)
            index = self.rec.begin_firing(name, 0, *self.position)
            self.rec.end_firing(index, status)

    # -- tracing and the model ----------------------------------------------------------------

    @contextlib.contextmanager
    def trace(self, max_calls: int = 1_000_000, max_firings: int = 250_000) -> Iterator[Trace]:
        """Record the events fired inside the block; gives a `Trace` (read it after the block)."""
        check_int("max_calls", max_calls)
        check_int("max_firings", max_firings)
        if self.rec is not None:
            raise LoopvizError(f"the loop {self.name!r} is already being traced; finish that trace first.")
        rec = self.rec = Recorder(max_calls=max_calls, max_firings=max_firings)

        def stop() -> None:
            if self.rec is rec:
                self.rec = None
            trace.finish(framework=self.framework, work_names=self.work_names)

        trace = Trace.recording(rec, stop=stop, measure_cost=_measured_cost)
        try:
            yield trace
        finally:
            stop()

    def spec(self) -> LoopSpec:
        """The loop as loopviz's model, from the phases, events and work seen so far."""
        if not self.root.steps:
            raise LoopvizError("nothing has run inside this loop yet: run the instrumented code once, then ask for spec().")
        return LoopSpec(loop=self.name, framework=self.framework, phases=[self._phase(self.root, top=True)], callbacks=[])

    def _phase(self, node: _Node, top: bool = False) -> Phase:
        steps: list[Step] = []
        if not top:
            steps.append(Event(f"before_{node.name}", f"Entering {node.name}.", role="enter"))
        for kind, value in node.steps:
            if kind == "phase":
                steps.append(self._phase(value))
            elif kind == "event":
                steps.append(Event(value, "An event of this loop."))
            else:
                steps.append(Work(value, f"with loop.work({value!r}): ...", f"Work named {value!r} in the loop's code."))
        if not top:
            steps.append(Event(f"after_{node.name}", f"Leaving {node.name}.", role="exit"))
        repeat = "repeatedly" if node.max_entries_per_parent > 1 else None
        return Phase(node.name, node.name.replace("_", " ").title(), steps, repeat=repeat)


class _PhaseContext(contextlib.ContextDecorator):
    def __init__(self, loop: Loop, name: str):
        self.loop, self.name = loop, name

    def __enter__(self) -> None:
        loop = self.loop
        node = loop.stack[-1].child(self.name)
        node.entries += 1
        node.entries_this_parent += 1
        node.max_entries_per_parent = max(node.max_entries_per_parent, node.entries_this_parent)
        for kind, child in node.steps:
            if kind == "phase":
                child.entries_this_parent = 0
        loop.stack.append(node)
        loop._fire(f"before_{self.name}", 0)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        loop = self.loop
        loop.stack.pop()
        loop._fire(f"after_{self.name}", ERROR if exc_type is not None else 0)


@functools.lru_cache(maxsize=1)
def _measured_cost() -> dict[str, float]:
    """What a `Loop`'s trace adds per event on this machine (`loopviz.trace.cost.measure`): a stand-in loop's batch
    events fired traced and untraced; a Loop calls no handlers. Once per process."""
    from loopviz.trace.cost import STAND_IN_EVENTS, measure

    loop = Loop("stand-in")

    def events(handlers: int) -> list[Any]:
        return [functools.partial(loop.event, name) for name in STAND_IN_EVENTS]

    @contextlib.contextmanager
    def tracing(handlers: int) -> Iterator[Trace]:
        with loop.trace() as t:
            t._measure_cost = None  # its own trace is never measured (nor read)
            yield t

    return measure(events, tracing, handlers=0)
