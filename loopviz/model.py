"""The loop model: a small, typed, framework-free description of a callback-driven training loop.

Adapters (such as `loopviz.adapters.fastai`) build a `LoopSpec`; renderers only read it.
Nothing in this module knows about fastai.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Optional, Union

if TYPE_CHECKING:
    from loopviz.dataloop import DataLoop

__all__ = [
    "Timing", "SourceRef", "CallbackInfo", "Handler", "CancelPath", "Event", "Work", "Phase", "Step",
    "LoopSpec",
]

Mode = Literal["train", "valid"]
Role = Literal["enter", "body", "cancel", "exit"]


@dataclass(frozen=True)
class SourceRef:
    """Where a piece of code lives: a file and a 1-based line number."""

    file: str
    line: int

    def short(self) -> str:
        """The path from the package directory on (`fastai/learner.py:553`), for display."""
        parts = self.file.replace("\\", "/").split("/")
        for marker in ("site-packages", "dist-packages"):
            if marker in parts:
                parts = parts[len(parts) - parts[::-1].index(marker):]
                break
        else:
            parts = parts[-2:]
        return f"{'/'.join(parts)}:{self.line}"


@dataclass(frozen=True)
class Timing:
    """Measured cost of a step, from a trace: how often it ran and how long it took."""

    count: int
    total_ms: float
    mean_ms: float
    pct: float

    def short(self) -> str:
        """`40 × 0.120 ms = 4.8 ms (3.1%)`, for labels."""
        return f"{self.count:,} × {self.mean_ms:.3f} ms = {self.total_ms:,.1f} ms ({self.pct:.1f}%)"


@dataclass(frozen=True)
class CallbackInfo:
    """One callback attached to the loop, with its ordering and run flags."""

    name: str
    cls: str
    module: str
    order: float
    run: bool = True
    run_train: bool = True
    run_valid: bool = True
    doc: str = ""
    overrides_call: bool = False

    @property
    def label(self) -> str:
        """The name shown in views: the class name, as fastai prints callbacks."""
        return self.cls


@dataclass(frozen=True)
class Handler:
    """A callback's handler for one event: what it is, its doc, and whether it runs there."""

    callback: CallbackInfo
    doc: str
    doc_source: Literal["handler", "inherited", "class", "none"]
    source: SourceRef | None = None
    via: Literal["method", "instance", "call", "delegated"] = "method"
    skipped: str | None = None
    timing: Timing | None = None
    changes: tuple[str, ...] = ()  # learner state this handler was seen to change (from a trace)
    diff: Literal["added", "removed", "moved"] | None = None  # set by loopviz.diff: how this loop differs from another
    was_order: float | None = None  # with diff='moved': the callback's order in the other loop
    code: str = ""  # the handler's first line of code, for one without a docstring of its own (what it does)

    @property
    def runs(self) -> bool:
        """True when the loop really calls this handler at this point."""
        return self.skipped is None

    @property
    def disabled(self) -> bool:
        """True when the callback is switched off as a whole (`run=False`)."""
        return not self.callback.run


@dataclass(frozen=True)
class CancelPath:
    """What happens when `exception` is raised inside a phase: the handler event (if the loop has one),
    then the event where it resumes."""

    exception: str
    handler_event: str | None
    resumes_at: str
    description: str = ""

    def route(self, arrow: str = "→") -> str:
        """`CancelX → after_cancel_x → after_x`, or `CancelX → cleanup_x` when there is no handler event."""
        stops = [self.exception, *([self.handler_event] if self.handler_event else []), self.resumes_at]
        return f" {arrow} ".join(stops)


@dataclass
class Event:
    """One event in firing order, with the handlers that are called for it, in call order.

    `role` says where it sits in its phase: `enter` (before_X), `body`, `cancel` (after_cancel_X,
    only on a cancel path, described by `cancel`) or `exit` (after_X, which fires either way).
    """

    name: str
    description: str
    handlers: list[Handler] = field(default_factory=list)
    role: Role = "body"
    cancel: CancelPath | None = None
    mode: Mode | None = None
    timing: Timing | None = None

    @property
    def running(self) -> list[Handler]:
        """Handlers that run here (enabled and not filtered out by run_train/run_valid)."""
        return [h for h in self.handlers if h.runs]

    @property
    def is_cancel_handler(self) -> bool:
        """True for `after_cancel_*`-style events, which fire only on a cancel path."""
        return self.cancel is not None


@dataclass(frozen=True)
class Work:
    """Work the loop does between two events (draw, forward, loss, backward, step, zero_grad...)."""

    name: str
    code: str
    description: str
    condition: str | None = None
    timing: Timing | None = None
    data_loop: Optional["DataLoop"] = None  # for the work that draws a batch: the loader's own loop


Step = Union[Event, Work, "Phase"]
EventMap = Callable[[Event, Optional["Phase"]], Optional[Event]]
WorkMap = Callable[[Work, "Phase"], Optional[Work]]


@dataclass
class Phase:
    """A nested part of the loop (fit, epoch, train, validate, batch...) with its steps in order.

    `minor` marks a small phase inside another (fastai's backward and step) that compact views
    may show flat, as the framework's own listing does.
    """

    name: str
    label: str
    steps: list[Step] = field(default_factory=list)
    repeat: str | None = None
    cancel: CancelPath | None = None
    mode: Mode | None = None
    note: str | None = None
    minor: bool = False

    def walk(self) -> Iterator[tuple[int, Step]]:
        """Yield `(depth, step)` for every step below this phase, depth-first in firing order."""
        for step in self.steps:
            yield 0, step
            if isinstance(step, Phase):
                for depth, inner in step.walk():
                    yield depth + 1, inner

    def events(self) -> list[Event]:
        """Every event below this phase, in firing order."""
        return [s for _, s in self.walk() if isinstance(s, Event)]

    def phases(self) -> list[Phase]:
        """Every phase below this one, depth-first."""
        return [s for _, s in self.walk() if isinstance(s, Phase)]

    def map(self, event: EventMap | None = None, work: WorkMap | None = None) -> Phase:
        """A copy with every event below passed through `event(ev, its phase)` and every piece of work through
        `work(w, its phase)`, in firing order; a function returning None drops the step. Phases are kept."""
        steps: list[Step] = []
        for step in self.steps:
            if isinstance(step, Phase):
                mapped: Step | None = step.map(event, work)
            elif isinstance(step, Event):
                mapped = event(step, self) if event else step
            else:
                mapped = work(step, self) if work else step
            if mapped is not None:
                steps.append(mapped)
        return replace(self, steps=steps)


@dataclass
class LoopSpec:
    """A whole loop: its top-level phases, its callbacks, and events that the loop never fires itself."""

    loop: str
    framework: str
    phases: list[Phase]
    callbacks: list[CallbackInfo]
    custom_events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured: str | None = None  # what the timings come from, when a trace annotated this spec
    compared: str | None = None  # what this loop is compared with, when loopviz.diff made it

    def events(self) -> list[Event]:
        """Every event of the loop in firing order (custom events not included)."""
        return [e for phase in self.phases for e in phase.events()]

    def event(self, name: str, mode: Mode | None = None) -> Event:
        """The first event called `name` (in `mode`, if given); KeyError names the known events."""
        for ev in [*self.events(), *self.custom_events]:
            if ev.name == name and (mode is None or ev.mode == mode):
                return ev
        known = sorted({e.name for e in [*self.events(), *self.custom_events]})
        where = f" in {mode} mode" if mode else ""
        raise KeyError(f"no event {name!r}{where} in the {self.loop} loop; known events: {', '.join(known)}")

    def event_names(self) -> list[str]:
        """Distinct event names in first-firing order, custom events last."""
        names: list[str] = []
        for ev in [*self.events(), *self.custom_events]:
            if ev.name not in names:
                names.append(ev.name)
        return names

    def map(self, event: EventMap | None = None, work: WorkMap | None = None) -> LoopSpec:
        """A copy with every event (in firing order, then the custom events, whose phase is None) passed
        through `event` and every piece of work through `work`; see `Phase.map`. The one tree walk that
        processors, annotations and diffs share."""
        custom = [event(e, None) if event else e for e in self.custom_events]
        return replace(self, phases=[p.map(event, work) for p in self.phases],
                       custom_events=[e for e in custom if e is not None])

    def __repr__(self) -> str:
        return (f"<LoopSpec: {self.loop} loop of {self.framework}, {len(self.event_names())} events, "
                f"{len(self.callbacks)} callbacks; loopviz.show_loop(spec) shows it>")

