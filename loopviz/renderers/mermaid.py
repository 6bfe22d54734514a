"""The loop as a Mermaid `flowchart`, to paste into a GitHub README or a docs page.

Phases are subgraphs, events and work are nodes in firing order, loops get a back edge and cancel
paths dashed edges. Every label character outside a small safe set is written as a Mermaid entity
code (`#60;` for `<`), so no docstring or name can break the syntax.
"""
from __future__ import annotations

import itertools
import string

from loopviz.model import Event, Handler, LoopSpec, Phase, Step, Work
from loopviz.renderers.palette import callback_colours

__all__ = ["render_mermaid"]

_SAFE = set(string.ascii_letters + string.digits + " _.,:()=+-/'")


def _esc(text: str) -> str:
    """Label text with every character outside the safe set as a Mermaid entity code."""
    return "".join(c if c in _SAFE else f"#{ord(c)};" for c in " ".join(text.split()))


class _MermaidWriter:
    """Writes one spec as flowchart lines."""

    def __init__(self, spec: LoopSpec, verbose: bool):
        self.spec = spec
        self.verbose = verbose
        self.colours = callback_colours(spec)
        self.ids = itertools.count()
        self.lines = ["flowchart TB"]

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self.ids)}"

    def write(self) -> str:
        """The whole flowchart."""
        previous: str | None = None
        for phase in self.spec.phases:
            first, last = self.phase(phase, 1)
            if previous and first:
                self.lines.append(f"  {previous} --> {first}")
            previous = last or previous
        self.lines += [
            "  classDef event fill:#ffffff,stroke:#4b5563,color:#111827",
            "  classDef cancel fill:#fde2e2,stroke:#c0392b,color:#7f1d1d,stroke-dasharray:4 3",
            "  classDef work fill:#ecfdf5,stroke:#10b981,color:#065f46",
            "  classDef raise fill:#ffffff,stroke:#c0392b,color:#c0392b,stroke-dasharray:4 3",
        ]
        return "\n".join(self.lines)

    def phase(self, phase: Phase, depth: int) -> tuple[str | None, str | None]:
        """A subgraph with its steps chained, a back edge when it repeats, and its cancel path."""
        pad = "  " * depth
        title = phase.label + (f" - repeats {phase.repeat}" if phase.repeat else "")
        self.lines.append(f'{pad}subgraph {self.new_id("p")}["{_esc(title)}"]')
        self.lines.append(f"{pad}  direction TB")
        first = last = None
        by_name: dict[str, str] = {}
        cancel_event: Event | None = None
        for step in phase.steps:
            if isinstance(step, Event) and step.role == "cancel":
                cancel_event = step
                continue
            entry, exit_ = self.step(step, depth + 1)
            if entry is None:
                continue
            if isinstance(step, Event):
                by_name[step.name] = entry
            if last is not None:
                self.lines.append(f"{pad}  {last} --> {entry}")
            first = first or entry
            last = exit_
        if phase.cancel:
            self.cancel_path(phase, cancel_event, by_name.get(phase.cancel.resumes_at), depth + 1)
        self.lines.append(f"{pad}end")
        if phase.repeat and first and last and first != last:
            self.lines.append(f'{pad}{last} -->|"{_esc("next")}"| {first}')
        return first, last

    def step(self, step: Step, depth: int) -> tuple[str | None, str | None]:
        """One step: a nested phase, an event or work."""
        if isinstance(step, Phase):
            return self.phase(step, depth)
        node = self.event(step, depth) if isinstance(step, Event) else self.work(step, depth)
        return node, node

    def event(self, event: Event, depth: int) -> str:
        """An event node: its name, then its callbacks (and in verbose mode their order and doc)."""
        shown = [h for h in event.handlers if h.runs or h.disabled]
        node = self.new_id()
        parts = [f"<b>{_esc(event.name)}</b>"] + [self.callback(h) for h in shown]
        if not shown:
            parts.append("<i>no callbacks</i>")
        self.lines.append(f'{"  " * depth}{node}["{"<br/>".join(parts)}"]')
        self.lines.append(f'{"  " * depth}class {node} {"cancel" if event.role == "cancel" else "event"}')
        return node

    def callback(self, handler: Handler) -> str:
        """One callback line inside an event label."""
        info = handler.callback
        colour = self.colours.get(info.cls, "#999999")
        text = f"<span style='color:{colour}'>#9632;</span> {_esc(info.label)} <small>{_esc(f'{info.order:g}')}</small>"
        if handler.disabled:
            text = f"<s>{_esc(info.label)}</s> (run=False)"
        if self.verbose:
            text += f"<br/><small>{_esc(handler.doc)}</small>"
        return text

    def work(self, work: Work, depth: int) -> str:
        """Work between events as a rounded node."""
        node = self.new_id()
        label = f"<b>{_esc(work.name)}</b>" + (f"<br/><small>{_esc(work.code)}</small>" if self.verbose else "")
        self.lines.append(f'{"  " * depth}{node}("{label}")')
        self.lines.append(f'{"  " * depth}class {node} work')
        return node

    def cancel_path(self, phase: Phase, event: Event | None, resume: str | None, depth: int) -> None:
        """Exception node, dashed to the after_cancel event, dashed to where the loop resumes."""
        cancel = phase.cancel
        assert cancel is not None
        pad = "  " * depth
        handler = self.event(event, depth) if event is not None else None
        if handler is None and resume is None:
            return
        raised = self.new_id()
        self.lines.append(f'{pad}{raised}(["{_esc(cancel.exception)}"])')
        self.lines.append(f"{pad}class {raised} raise")
        if handler:
            self.lines.append(f"{pad}{raised} -.-> {handler}")
        if resume:
            self.lines.append(f"{pad}{handler or raised} -.-> {resume}")


def render_mermaid(spec: LoopSpec, verbose: bool = False) -> str:
    """The loop as Mermaid flowchart text."""
    return _MermaidWriter(spec, verbose).write()
