r"""The loop as a Mermaid `flowchart`, to paste into a GitHub README or a docs page.

Phases are subgraphs, events and work are nodes in firing order, loops get a back edge and cancel
paths dashed edges. Every label character outside a small safe set is written as a Mermaid entity
code (`#60;` for `<`), so no docstring or name can break the syntax; control characters are shown escaped
and names and texts past a limit are cut (`loopviz.renderers.sanitise`), which keeps the chart within
Mermaid's limit on the size of a diagram.

Two traps of mermaid.js 11 shape the labels. Before parsing, Mermaid takes any line matching
`style.*:\S*#.*;` (or `classDef.*:\S*#.*;`) for a style statement and drops that line's last `;`, which
turns the last entity code of a label into raw text (`#9632`); so no label line may hold a raw `:` (the
colon is an entity code too, and no label uses a `style` attribute). And a `classDef` with `color` styles
every `span` of its nodes `!important`, so a callback's colour chip is a `<font color=...>`, not a span.
"""
from __future__ import annotations

import itertools
import string

from loopviz.checks import check_spec
from loopviz.model import Event, Handler, LoopSpec, Phase, Work
from loopviz.renderers.flow import EdgeKind, FlowWriter
from loopviz.renderers.palette import callback_colours
from loopviz.renderers.sanitise import NAME_LIMIT, TEXT_LIMIT, cut, one_line, visible
from loopviz.renderers.shown import (
    CUSTOM_EVENTS_TITLE, DIFF_MARKS, changes_note, class_docs, diff_note, footer, handler_doc, handlers_shown,
    shows_doc, status_note, time_note, via_note,
)

__all__ = ["render_mermaid"]

_SAFE = set(string.ascii_letters + string.digits + " _.,()=+-/'")  # no ':', see the module's doc


def _esc(text: str, limit: int = TEXT_LIMIT) -> str:
    """Label text on one visible line, cut past `limit`, each character outside the safe set as a Mermaid entity."""
    return "".join(c if c in _SAFE else f"#{ord(c)};" for c in cut(" ".join(visible(text).split()), limit))


def _name(text: str) -> str:
    """A name (callback, event, work, phase) in a label: as `_esc`, newlines and tabs escaped too, cut shorter."""
    return _esc(one_line(text), NAME_LIMIT)


class _MermaidWriter(FlowWriter):
    """Writes one spec as flowchart lines."""

    def __init__(self, spec: LoopSpec, verbose: bool):
        self.spec = spec
        self.verbose = verbose
        self.colours = callback_colours(spec)
        self.ids = itertools.count()
        self.lines = ["flowchart TB"]

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self.ids)}"

    def add(self, depth: int, line: str) -> None:
        """One line, indented to show nesting."""
        self.lines.append("  " * (depth + 1) + line)

    def write(self) -> str:
        """The whole flowchart."""
        self.write_phases(self.spec.phases)
        self.custom_events()
        self.footer()
        self.lines += [
            "  classDef event fill:#ffffff,stroke:#4b5563,color:#111827",
            "  classDef cancel fill:#fde2e2,stroke:#c0392b,color:#7f1d1d,stroke-dasharray:4 3",
            "  classDef work fill:#ecfdf5,stroke:#10b981,color:#065f46",
            "  classDef raise fill:#ffffff,stroke:#c0392b,color:#c0392b,stroke-dasharray:4 3",
            "  classDef footer fill:#fffbeb,stroke:#d97706,color:#78350f",
        ]
        return "\n".join(self.lines)

    def custom_events(self) -> None:
        """Events the loop never fires itself, in a subgraph of their own, unconnected."""
        if not self.spec.custom_events:
            return
        self.add(0, f'subgraph {self.new_id("p")}["{_esc(CUSTOM_EVENTS_TITLE)}"]')
        self.add(1, "direction TB")
        for event in self.spec.custom_events:
            self.event_node(event, 1)
        self.add(0, "end")

    def footer(self) -> None:
        """Notes, what the times were measured on, and the diff, in one node under the loop; verbose, each callback
        class's docstring too (once, where each handler says what it does)."""
        texts = [line.text for line in footer(self.spec)]
        if self.verbose:
            texts += [f"{label}: {doc}" for label, doc in class_docs(self.spec)]
        if texts:
            node = self.new_id("f")
            self.add(0, f'{node}["{"<br/>".join(_esc(text) for text in texts)}"]')
            self.add(0, f"class {node} footer")

    # -- the FlowWriter hooks -------------------------------------------------------------------

    def open_phase(self, phase: Phase, depth: int) -> None:
        """A subgraph titled with the phase and how often it repeats."""
        title = _name(phase.label) + (" " + _esc(f"- repeats {phase.repeat}") if phase.repeat else "")
        self.add(depth, f'subgraph {self.new_id("p")}["{title}"]')
        self.add(depth + 1, "direction TB")

    def close_phase(self, phase: Phase, depth: int) -> None:
        self.add(depth, "end")

    def edge(self, tail: str, head: str, kind: EdgeKind, label: str | None = None) -> None:
        """Solid for the flow and loop backs (labelled), dotted for cancel paths."""
        arrow = "-.->" if kind == "cancel" else "-->"
        text = f'|"{_esc("next")}"| ' if kind == "loop" else ""
        self.add(0, f"{tail} {arrow} {text}{head}")

    def event_node(self, event: Event, depth: int) -> str:
        """An event node: its name, then its callbacks (and in verbose mode their docs)."""
        shown = handlers_shown(event, self.verbose)
        node = self.new_id()
        parts = [f"<b>{_name(event.name)}</b>"] + ([f"<small>{_esc(event.timing.short())}</small>"] if event.timing else [])
        parts += [self.callback(h) for h in shown]
        if not shown:
            parts.append("<i>no callbacks</i>")
        self.add(depth, f'{node}["{"<br/>".join(parts)}"]')
        self.add(depth, f'class {node} {"cancel" if event.role == "cancel" else "event"}')
        return node

    def work_node(self, work: Work, depth: int) -> str:
        """Work between events as a rounded node."""
        node = self.new_id()
        label = f"<b>{_name(work.name)}</b>" + (f"<br/><small>{_esc(work.code)}</small>" if self.verbose else "")
        if self.verbose and work.data_loop is not None:  # the loader's own loop, for the work that draws a batch
            from loopviz.renderers.dataloop import data_loop_line

            label += f"<br/><small>{_esc(data_loop_line(work.data_loop))}</small>"
        if work.timing:
            label += f"<br/><small>{_esc(work.timing.short())}</small>"
        self.add(depth, f'{node}("{label}")')
        self.add(depth, f"class {node} work")
        return node

    def raise_node(self, phase: Phase, depth: int) -> str:
        """The cancel exception as a stadium-shaped node."""
        assert phase.cancel is not None
        node = self.new_id()
        self.add(depth, f'{node}(["{_name(phase.cancel.exception)}"])')
        self.add(depth, f"class {node} raise")
        return node

    def callback(self, handler: Handler) -> str:
        """One callback line inside an event label."""
        info = handler.callback
        colour = self.colours.get(info.cls, "#999999")
        text = f"<font color='{colour}'>#9632;</font> {_name(info.label)} <small>{_esc(f'{info.order:g}')}</small>"
        via = via_note(handler, verbose=False)
        if via:
            text += f" ({_esc(via)})"
        status = status_note(handler)
        if handler.disabled:
            text = f"<s>{_name(info.label)}</s> ({_esc(status or '')})"
        elif status:
            text += f" <i>{_esc(status)}</i>"
        note = diff_note(handler)
        if handler.diff == "removed":
            text = f"{_esc(DIFF_MARKS['removed'])} <s>{_name(info.label)}</s> ({_esc(note or '')})"
        elif handler.diff:
            text = f"{_esc(DIFF_MARKS[handler.diff])} {text} ({_esc(note or '')})"
        spent = time_note(handler)
        if spent:
            text += f" <small>{_esc(spent)}</small>"
        changes = changes_note(handler)
        if changes:
            text += f"<br/><small>{_esc(changes)}</small>"
        said = handler_doc(handler) if self.verbose and shows_doc(handler) else None
        if said:
            text += f"<br/><small>{_esc(said)}</small>"
        return text


def render_mermaid(spec: LoopSpec, verbose: bool = False, width: int = 100) -> str:
    """The loop as Mermaid flowchart text (`width` is unused: Mermaid lays the chart out itself)."""
    check_spec("spec", spec)
    return _MermaidWriter(spec, verbose).write()
