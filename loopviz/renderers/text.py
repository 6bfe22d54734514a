"""Plain-text view of a `LoopSpec`, in the shape of fastai's `show_training_loop` output.

Compact mode keeps fastai's lines (`Start X` / `End X` blocks, ` - event: [callbacks]`); verbose mode
adds each event's description, the work between events, and every handler with its order, source
and docstring. Control characters in any of them are shown escaped (`loopviz.renderers.sanitise`).
"""
from __future__ import annotations

import textwrap

from loopviz.checks import check_spec
from loopviz.model import Event, Handler, LoopSpec, Phase, Step, Work
from loopviz.renderers.sanitise import one_line, visible_spec
from loopviz.renderers.shown import (
    CUSTOM_EVENTS_TITLE, DIFF_MARKS, changes_note, class_docs, footer, handler_doc, handlers_shown, shows_doc,
    status_note, via_note,
)

__all__ = ["render_text", "callback_list"]

DEFAULT_WIDTH = 100


def _order(value: float) -> str:
    """An order value without a spurious '.0'."""
    return f"{value:g}"


def _compact_label(handler: Handler) -> str:
    """How one callback appears in a compact `[...]` list (+added, -removed, ~moved when diffed)."""
    label = DIFF_MARKS[handler.diff] + handler.callback.label
    if handler.diff == "moved":
        return f"{label}({_order(handler.was_order or 0)}->{_order(handler.callback.order)})"
    via = via_note(handler, verbose=False)
    if via:
        return f"{label}({via})"
    if handler.disabled:
        return f"{label}(run=False)"
    return label


def callback_list(event: Event) -> str:
    """The `[A, B]` list of callbacks that run (or are switched off) at this event, in call order."""
    return one_line("[" + ", ".join(_compact_label(h) for h in handlers_shown(event, verbose=False)) + "]")


def _split_exit(phase: Phase) -> tuple[list[Step], list[Step]]:
    """Steps inside a phase's block, and those printed after its `End` line.

    As in fastai's output, the after_cancel_X/after_X events of a phase that runs once (Fit, Train,
    Valid) come after `End X`; a loop's (Epoch Loop, Batch Loop) stay inside, since they fire per pass.
    """
    if phase.repeat is not None:
        return phase.steps, []
    for i, step in enumerate(phase.steps):
        if isinstance(step, Event) and step.role in ("cancel", "exit"):
            return phase.steps[:i], phase.steps[i:]
    return phase.steps, []


class _TextWriter:
    """Accumulates the lines of one rendering."""

    def __init__(self, verbose: bool, width: int):
        self.verbose = verbose
        self.width = width
        self.lines: list[str] = []

    def wrap(self, text: str, indent: int, first: str = "", hang: int = 0) -> None:
        """Add `text` wrapped to the width and indented; `first` prefixes its first line, `hang` indents the rest."""
        pad = " " * indent
        for n, line in enumerate(text.splitlines() or [""]):
            if not line.strip():
                self.lines.append("")
                continue
            self.lines.extend(
                textwrap.wrap(line, width=max(self.width, indent + hang + 20),
                              initial_indent=pad + (first if n == 0 else " " * hang),
                              subsequent_indent=pad + " " * hang, break_on_hyphens=False)
            )

    def phase(self, phase: Phase, indent: int) -> None:
        """A phase as a `Start`/`End` block (a minor phase in compact mode: its steps, flat)."""
        if phase.minor and not self.verbose:
            self.steps(phase.steps, indent)
            return
        header = f"{' ' * indent}Start {phase.label}"
        self.lines.append(header)
        if self.verbose:
            self.phase_details(phase, indent + 4)
        inside, after = _split_exit(phase)
        self.steps(inside, indent + 2)
        self.lines.append(f"{' ' * indent}End {phase.label}")
        self.steps(after, indent)

    def phase_details(self, phase: Phase, indent: int) -> None:
        """Verbose lines under a phase header: how often it runs, how it is cancelled, notes."""
        details = []
        if phase.repeat:
            details.append(f"Runs {phase.repeat}.")
        if phase.cancel:
            c = phase.cancel
            then = f"{c.handler_event} fires, then {c.resumes_at}" if c.handler_event else f"the loop resumes at {c.resumes_at}"
            details.append(f"If {c.exception} is raised here, {c.description}: {then}.")
        if phase.note:
            details.append(phase.note)
        for detail in details:
            self.wrap(detail, indent)

    def steps(self, steps: list[Step], indent: int) -> None:
        """Events, work and nested phases in firing order."""
        for step in steps:
            if isinstance(step, Phase):
                self.phase(step, indent)
            elif isinstance(step, Event):
                self.event(step, indent)
            elif self.verbose:
                self.work(step, indent)

    def event(self, event: Event, indent: int) -> None:
        """One ` - event: [...]` line, plus description and handlers in verbose mode."""
        pad = " " * indent
        measured = f"  [{event.timing.short()}]" if event.timing else ""
        if not self.verbose:
            self.lines.append(f"{pad} - {event.name:15}: {callback_list(event)}{measured}")
            return
        self.lines.append(f"{pad} - {event.name}{measured}")
        self.wrap(event.description, indent + 5)
        if not event.handlers:
            self.lines.append(f"{pad}     (no callbacks)")
        for handler in handlers_shown(event, verbose=True):
            self.handler(handler, indent + 7)

    def handler(self, handler: Handler, indent: int) -> None:
        """A callback's line (class, order, flags, source) and its docstring."""
        info = handler.callback
        parts = [f"{DIFF_MARKS[handler.diff]}{info.label} (order {_order(info.order)})"]
        if handler.diff == "moved":
            parts.append(f"MOVED (order was {_order(handler.was_order or 0)})")
        elif handler.diff:
            parts.append(handler.diff.upper())
        status = status_note(handler)
        if status:
            parts.append(f"disabled: {status}" if handler.disabled else status)
        via = via_note(handler, verbose=True)
        if via:
            parts.append(via)
        if handler.source:
            parts.append(handler.source.short())
        if handler.timing:
            parts.append(f"[{handler.timing.short()}]")
        if handler.doc_source == "inherited" and shows_doc(handler):
            parts.append("(doc: inherited)")
        self.wrap("  ".join(parts), indent)
        changes = changes_note(handler)
        if changes:
            self.wrap(changes.removeprefix("changes: "), indent + 4, first="changes: ", hang=9)
        said = handler_doc(handler) if shows_doc(handler) else None
        if said:
            self.wrap(said, indent + 4)

    def work(self, work: Work, indent: int) -> None:
        """A piece of work between events (verbose mode only)."""
        condition = f"  ({work.condition})" if work.condition else ""
        measured = f"  [{work.timing.short()}]" if work.timing else ""
        self.wrap(f"{work.code}{condition}{measured}", indent, first=f" ~ {work.name}: ", hang=5)
        if work.data_loop is not None:  # the loader's own loop, nested under the work that draws a batch
            from loopviz.renderers.dataloop import data_loop_lines

            for depth, line in data_loop_lines(work.data_loop):
                self.wrap(line, indent + 5 + 2 * depth)

    def header(self, spec: LoopSpec) -> None:
        """Verbose preamble: which loop, which framework, which callbacks in which order."""
        cbs = ", ".join(f"{c.label} ({_order(c.order)})" for c in spec.callbacks) or "none"
        self.wrap(f"The {spec.loop} loop of {spec.framework}. Callbacks in call order: {cbs}.", 0)
        self.wrap("Legend: ' - ' an event and the callbacks called there; ' ~ ' work done between events.", 0)
        for label, doc in class_docs(spec):  # each class's docstring once; under each handler, what it does
            self.wrap(doc, 0, first=f"  {label}: ", hang=4)
        self.lines.append("")

    def custom(self, spec: LoopSpec) -> None:
        """Events the loop never fires on its own."""
        if not spec.custom_events:
            return
        self.lines.append(CUSTOM_EVENTS_TITLE)
        for event in spec.custom_events:
            self.event(event, 0)


def render_text(spec: LoopSpec, verbose: bool = False, width: int = DEFAULT_WIDTH) -> str:
    """The loop as text: fastai's compact shape, or with every doc and the work between events."""
    check_spec("spec", spec)
    spec = visible_spec(spec)  # control characters in names or docs shown escaped, never sent to the terminal
    writer = _TextWriter(verbose, width)
    if verbose:
        writer.header(spec)
    for phase in spec.phases:
        writer.phase(phase, 0)
    writer.custom(spec)
    for line in footer(spec):
        writer.wrap(line.text, 0)
    return "\n".join(writer.lines)
