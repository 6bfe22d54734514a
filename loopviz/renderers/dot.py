"""The loop as a graphviz diagram: nested phase clusters, events in firing order, loop-back edges,
dashed cancel paths, the work between events, and callbacks as coloured rows of each event.

Every string that reaches DOT goes through `_esc` (HTML-escaped, newlines as line breaks, non-ASCII
as character references) inside HTML-like labels, so no docstring or name can inject markup.
"""
from __future__ import annotations

import html
import itertools
import textwrap
from dataclasses import dataclass

import graphviz

from loopviz.model import Event, Handler, LoopSpec, Phase, Step, Work
from loopviz.renderers.palette import callback_colours

__all__ = ["dot_graph", "DOC_WIDTH"]

DOC_WIDTH = 60
FONT = "Helvetica"
MONO = "Courier"
PHASE_FILLS = ("#f7f9fc", "#eef3fa", "#e4ecf7", "#dbe5f3", "#d2def0", "#c9d7ec")
CANCEL = "#c0392b"
MUTED = "#6b7280"


def _esc(text: str) -> str:
    """Text made safe for an HTML-like label: escaped, non-ASCII as character references."""
    escaped = html.escape(text, quote=True)
    return "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in escaped)


def _attr(text: str) -> str:
    """Text made safe for a plain DOT attribute (tooltips, edge labels): one line, escaped, no backslash escapes."""
    return graphviz.escape(_esc(" ".join(text.split())))


def _lines(text: str, width: int = DOC_WIDTH) -> str:
    """Wrapped, escaped text with left-aligned line breaks."""
    wrapped = [w for line in text.splitlines() for w in (textwrap.wrap(line, width) or [""])]
    return '<BR ALIGN="LEFT"/>'.join(_esc(line) for line in wrapped) + '<BR ALIGN="LEFT"/>'


@dataclass(frozen=True)
class _Ends:
    """Node ids where a drawn step is entered and left (None for a step that is hidden)."""

    entry: str | None
    exit: str | None


class _DotBuilder:
    """Draws one spec into one `graphviz.Digraph`."""

    def __init__(self, spec: LoopSpec, verbose: bool):
        self.spec = spec
        self.verbose = verbose
        self.colours = callback_colours(spec)
        self.ids = itertools.count()
        self.graph = graphviz.Digraph(
            "loop",
            graph_attr={"rankdir": "TB", "compound": "true", "newrank": "true", "fontname": FONT,
                        "nodesep": "0.25", "ranksep": "0.3", "labeljust": "l"},
            node_attr={"fontname": FONT, "fontsize": "10", "shape": "plaintext", "margin": "0"},
            edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7", "color": "#374151"},
        )

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self.ids)}"

    def build(self) -> graphviz.Digraph:
        """The whole diagram: phases chained in order, then the legend."""
        title = f"<<B>{_esc(self.spec.loop)} loop</B>  <FONT COLOR=\"{MUTED}\">{_esc(self.spec.framework)}</FONT>>"
        self.graph.attr(label=title, labelloc="t", fontsize="14")
        previous: str | None = None
        for phase in self.spec.phases:
            ends = self.phase(self.graph, phase, depth=0)
            if previous and ends.entry:
                self.graph.edge(previous, ends.entry)
            previous = ends.exit or previous
        if self.spec.custom_events:
            self.custom_events()
        self.legend()
        return self.graph

    # -- phases and steps -------------------------------------------------------------------

    def phase(self, parent: graphviz.Digraph, phase: Phase, depth: int) -> _Ends:
        """A cluster with its steps chained in firing order, its loop-back edge and cancel path."""
        with parent.subgraph(name=self.new_id("cluster_")) as sub:
            sub.attr(label=self.phase_label(phase), style="rounded,filled", color="#9ca3af",
                     fillcolor=PHASE_FILLS[min(depth, len(PHASE_FILLS) - 1)], fontsize="11", margin="10")
            first: str | None = None
            last: str | None = None
            by_name: dict[str, str] = {}
            cancel_event: Event | None = None
            for step in phase.steps:
                if isinstance(step, Event) and step.role == "cancel":
                    cancel_event = step
                    continue
                ends = self.step(sub, step, depth)
                if ends.entry is None:
                    continue
                if isinstance(step, Event):
                    by_name[step.name] = ends.entry
                if last is not None:
                    sub.edge(last, ends.entry)
                first = first or ends.entry
                last = ends.exit
            if phase.repeat and first and last and first != last:
                sub.edge(last, first, label=_attr(f"next: {phase.repeat}"), constraint="false",
                         style="bold", color="#2563eb", fontcolor="#2563eb")
            if phase.cancel:
                self.cancel_path(sub, phase, cancel_event, by_name.get(phase.cancel.resumes_at))
        return _Ends(first, last)

    def phase_label(self, phase: Phase) -> str:
        """Cluster title: name, how often it runs, and (verbose) its note."""
        parts = [f"<B>{_esc(phase.label)}</B>"]
        if phase.repeat:
            parts.append(f'  <FONT COLOR="#2563eb">&#10227; {_esc(phase.repeat)}</FONT>')
        if self.verbose and phase.note:
            parts.append(f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="9" COLOR="{MUTED}">{_lines(phase.note, 80)}</FONT>')
        return "<" + "".join(parts) + ">"

    def step(self, parent: graphviz.Digraph, step: Step, depth: int) -> _Ends:
        """Draw one step, returning where it is entered and left."""
        if isinstance(step, Phase):
            return self.phase(parent, step, depth + 1)
        if isinstance(step, Event):
            node = self.event(parent, step)
            return _Ends(node, node)
        node = self.work(parent, step)
        return _Ends(node, node)

    def cancel_path(self, parent: graphviz.Digraph, phase: Phase, event: Event | None, resume: str | None) -> None:
        """Exception node -> after_cancel event -> the event where the loop resumes, all dashed."""
        cancel = phase.cancel
        assert cancel is not None
        handler = self.event(parent, event) if event is not None else None
        if handler is None and resume is None:
            return  # both ends were filtered out (hide_empty/focus): the exception would point nowhere
        raised = self.new_id()
        parent.node(raised, label=f"<<FONT COLOR=\"{CANCEL}\">{_esc(cancel.exception)}</FONT>>",
                    shape="box", style="dashed,rounded", color=CANCEL, margin="0.08,0.04", fontsize="9",
                    tooltip=_attr(f"raised anywhere in {phase.label}: {cancel.description}"))
        dashed = {"style": "dashed", "color": CANCEL, "fontcolor": CANCEL}
        if handler:
            parent.edge(raised, handler, **dashed)
        if resume:
            parent.edge(handler or raised, resume, **dashed)

    # -- nodes ------------------------------------------------------------------------------

    def handlers(self, event: Event) -> list[Handler]:
        """The handler rows an event shows: running or switched off, and (verbose) skipped ones."""
        return [h for h in event.handlers if h.runs or h.disabled or (self.verbose and h.skipped)]

    def event(self, parent: graphviz.Digraph, event: Event) -> str:
        """An event as a table: its name, (verbose) description, one row per callback."""
        rows = self.handlers(event)
        node = self.new_id()
        header_fill = "#fde2e2" if event.role == "cancel" else "#ffffff"
        cells = [f'<TR><TD COLSPAN="2" BGCOLOR="{header_fill}" ALIGN="LEFT"><B>{_esc(event.name)}</B></TD></TR>']
        if self.verbose:
            cells.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="8" COLOR="{MUTED}">'
                         f"{_lines(event.description)}</FONT></TD></TR>")
        cells += [self.handler_row(h) for h in rows]
        if not rows:
            cells.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{MUTED}">no callbacks</FONT></TD></TR>')
        table = ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white" '
                 f'COLOR="{CANCEL if event.role == "cancel" else "#4b5563"}">' + "".join(cells) + "</TABLE>>")
        parent.node(node, label=table, tooltip=_attr(event.description))
        return node

    def handler_row(self, handler: Handler) -> str:
        """One callback: colour chip, class, order, flags and (verbose) its docstring."""
        info = handler.callback
        chip = f'<TD BGCOLOR="{self.colours.get(info.cls, "#999999")}" WIDTH="6" HEIGHT="12" FIXEDSIZE="TRUE" CELLPADDING="0"></TD>'
        name = _esc(info.label) + f' <FONT COLOR="{MUTED}">{_esc(f"{info.order:g}")}</FONT>'
        if handler.via == "call":
            name += f' <FONT COLOR="{MUTED}">(__call__)</FONT>'
        if handler.disabled:
            name = f'<FONT COLOR="#9ca3af"><S>{_esc(info.label)}</S> (run=False)</FONT>'
        elif handler.skipped:
            name = f'<FONT COLOR="#9ca3af">{_esc(info.label)}: skipped, {_esc(handler.skipped)}</FONT>'
        if self.verbose and (handler.runs or handler.disabled):
            name += f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="8" COLOR="{MUTED}">{_lines(handler.doc)}</FONT>'
        return f'<TR>{chip}<TD ALIGN="LEFT" BALIGN="LEFT">{name}</TD></TR>'

    def work(self, parent: graphviz.Digraph, work: Work) -> str:
        """Work between events: an ellipse-like box with its name and (verbose) code."""
        node = self.new_id()
        label = f"<<B>{_esc(work.name)}</B>"
        if self.verbose:
            label += f'<BR/><FONT FACE="{MONO}" POINT-SIZE="8">{_lines(work.code, 70)}</FONT>'
        if work.condition:
            label += f'<BR/><FONT POINT-SIZE="8" COLOR="{MUTED}">{_esc(work.condition)}</FONT>'
        parent.node(node, label=label + ">", shape="box", style="rounded,filled", fillcolor="#ecfdf5",
                    color="#10b981", margin="0.1,0.04", tooltip=_attr(work.description))
        return node

    # -- extras ------------------------------------------------------------------------------

    def custom_events(self) -> None:
        """Events the loop never fires itself, in a cluster of their own."""
        with self.graph.subgraph(name=self.new_id("cluster_")) as sub:
            sub.attr(label="<<B>Custom events</B> (fired only by code calling them)>", style="dashed,rounded",
                     color="#9333ea")
            for event in self.spec.custom_events:
                self.event(sub, event)

    def legend(self) -> None:
        """Callback colours in call order, and what the shapes and edges mean."""
        rows = [f'<TR><TD COLSPAN="2" ALIGN="LEFT"><B>Callbacks, in call order</B></TD></TR>']
        for info in self.spec.callbacks:
            rows.append(f'<TR><TD BGCOLOR="{self.colours[info.cls]}" WIDTH="10"> </TD><TD ALIGN="LEFT">'
                        f'{_esc(info.label)} <FONT COLOR="{MUTED}">order {_esc(f"{info.order:g}")}</FONT></TD></TR>')
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="8" COLOR="{MUTED}">'
                    "white box: event and the callbacks run there<BR ALIGN=\"LEFT\"/>"
                    "green box: work between events<BR ALIGN=\"LEFT\"/>"
                    "blue edge: the loop repeats<BR ALIGN=\"LEFT\"/>"
                    "red dashed: cancel exception, after_cancel event, resume<BR ALIGN=\"LEFT\"/></FONT></TD></TR>")
        table = '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white">' + "".join(rows) + "</TABLE>>"
        self.graph.node("legend", label=table)


def dot_graph(spec: LoopSpec, verbose: bool = False) -> graphviz.Digraph:
    """The loop as a `graphviz.Digraph` (not yet rendered: `.source` is the DOT text)."""
    return _DotBuilder(spec, verbose).build()
