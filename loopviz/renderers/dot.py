"""The loop as a graphviz diagram: nested phase clusters, events in firing order, loop-back edges,
dashed cancel paths, the work between events, and callbacks as coloured rows of each event.

Every string that reaches DOT goes through `_esc` (control characters shown escaped, HTML-escaped, non-ASCII
as character references) inside HTML-like labels, so no docstring or name can inject markup or make `dot`
fail. A backslash Graphviz would read as an escape gets an invisible word joiner after it: Graphviz replaces
`\\N`, `\\G`, `\\E` and `\\\\` even in HTML-like labels. Graphviz rejects a label or string over 16384 bytes,
so names, texts and tables are cut to fit (`_name`, `_lines`, `_bounded`) and a tooltip names what was cut.
"""
from __future__ import annotations

import html
import itertools
import re
import textwrap

import graphviz

from loopviz.checks import check_spec
from loopviz.model import Event, Handler, LoopSpec, Phase, Work
from loopviz.renderers.flow import EdgeKind, FlowWriter
from loopviz.renderers.palette import callback_colours
from loopviz.renderers.sanitise import NAME_LIMIT, TEXT_LIMIT, cut, one_line, visible
from loopviz.renderers.shown import (
    CUSTOM_EVENTS_TITLE, DIFF_MARKS, changes_note, diff_note, footer, handlers_shown, shows_doc, status_note, time_note,
    via_note,
)

__all__ = ["dot_graph", "DOC_WIDTH"]

DOC_WIDTH = 60
DOC_LINES = 15  # wrapped lines of one text a label shows
HTML_LIMIT = 15000  # characters of one HTML-like label, below Graphviz's 16384 with room for the table's markup
TIP_LIMIT = 1500  # characters of a tooltip; escaped, each takes at most 10, within Graphviz's 16384
WORD_JOINER = "&#8288;"  # U+2060: invisible; after a backslash it stops Graphviz's escapes, which HTML labels obey too
_GRAPHVIZ_ESCAPE = re.compile(r"\\(?=[GNEHTLlnr\\])")  # Graphviz's escString escapes: \G graph name, \N node name...
FONT = "Helvetica"
MONO = "Courier"
PHASE_FILLS = ("#f7f9fc", "#eef3fa", "#e4ecf7", "#dbe5f3", "#d2def0", "#c9d7ec")
CANCEL = "#c0392b"
MUTED = "#6b7280"
TIME = "#a21caf"
CHANGE = "#b45309"


def _esc(text: str) -> str:
    """Text made safe for an HTML-like label: control characters visible, escaped, non-ASCII as character references,
    and a word joiner after each backslash that Graphviz would read as one of its escapes (`\\N`, `\\G`, `\\\\`...)."""
    escaped = html.escape(visible(text), quote=True)
    return _GRAPHVIZ_ESCAPE.sub("\\\\" + WORD_JOINER, "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in escaped))


def _name(text: str, limit: int = NAME_LIMIT) -> str:
    """A name (callback, event, phase, work) for a label: one visible line, cut past `limit`, escaped."""
    return _esc(cut(one_line(text), limit))


def _attr(text: str) -> str:
    """Text made safe for a plain DOT attribute (tooltips, edge labels): one line, cut, escaped, backslashes literal."""
    return graphviz.escape(_esc(cut(" ".join(visible(text).split()), TIP_LIMIT)))


def _whole(names: list[str]) -> str:
    """`in full: a; b` for the names that a label cuts, else ''."""
    whole = [one_line(n) for n in names if len(one_line(n)) > NAME_LIMIT]
    return f"in full: {'; '.join(whole)}" if whole else ""


def _tip(text: str, names: list[str]) -> str:
    """A tooltip: `text`, then the whole of each name a label cuts."""
    whole = _whole(names)
    return f"{text} | {whole}" if whole else text


def _lines(text: str, width: int = DOC_WIDTH) -> str:
    """Wrapped, escaped text with left-aligned line breaks, at most DOC_LINES lines (the last an ellipsis)."""
    wrapped = [w for line in cut(visible(text), TEXT_LIMIT).splitlines() for w in (textwrap.wrap(line, width) or [""])]
    if len(wrapped) > DOC_LINES:
        wrapped = wrapped[: DOC_LINES - 1] + ["…"]
    return '<BR ALIGN="LEFT"/>'.join(_esc(line) for line in wrapped) + '<BR ALIGN="LEFT"/>'


def _bounded(parts: list[str], more: str) -> str:
    """`parts` joined, less trailing parts past HTML_LIMIT; then `more` with `{n}` the number dropped."""
    size, kept = 0, 0
    for part in parts:
        if kept and size + len(part) + len(more) + 10 > HTML_LIMIT:
            break
        size, kept = size + len(part), kept + 1
    return "".join(parts[:kept]) + (more.format(n=len(parts) - kept) if kept < len(parts) else "")


def _table(rows: list[str], attrs: str) -> str:
    """An HTML-like table label; rows past what one Graphviz label holds are dropped and counted."""
    more = (f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{MUTED}">{{n}} more rows: too long for one Graphviz label'
            "</FONT></TD></TR>")
    return f"<<TABLE {attrs}>" + _bounded(rows, more) + "</TABLE>>"


class _DotBuilder(FlowWriter):
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
        self.stack: list[graphviz.Digraph] = [self.graph]

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self.ids)}"

    @property
    def current(self) -> graphviz.Digraph:
        """The graph or cluster being drawn into."""
        return self.stack[-1]

    def build(self) -> graphviz.Digraph:
        """The whole diagram: phases chained in order, then the legend."""
        colour = {"note": MUTED, "measured": TIME, "compared": "#a16207"}
        head = f"<B>{_name(self.spec.loop)} loop</B>  <FONT COLOR=\"{MUTED}\">{_name(self.spec.framework)}</FONT>"
        below = [f'<BR/><FONT POINT-SIZE="10" COLOR="{colour[line.kind]}">{_lines(line.text, 110)}</FONT>'
                 for line in footer(self.spec)]
        title = "<" + _bounded([head, *below], f'<BR/><FONT COLOR="{MUTED}">{{n}} more notes</FONT>') + ">"
        self.graph.attr(label=title, labelloc="t", fontsize="14")
        self.write_phases(self.spec.phases)
        if self.spec.custom_events:
            self.custom_events()
        self.legend()
        return self.graph

    # -- the FlowWriter hooks -------------------------------------------------------------------

    def open_phase(self, phase: Phase, depth: int) -> None:
        """A cluster, filled darker the deeper it is nested."""
        cluster = graphviz.Digraph(name=self.new_id("cluster_"))
        cluster.attr(label=self.phase_label(phase), style="rounded,filled", color="#9ca3af",
                     fillcolor=PHASE_FILLS[min(depth, len(PHASE_FILLS) - 1)], fontsize="11", margin="10")
        self.stack.append(cluster)

    def close_phase(self, phase: Phase, depth: int) -> None:
        cluster = self.stack.pop()
        self.current.subgraph(cluster)

    def edge(self, tail: str, head: str, kind: EdgeKind, label: str | None = None) -> None:
        """Plain for the flow, bold blue for a loop back, dashed red for a cancel path."""
        attrs = {
            "flow": {},
            "loop": {"constraint": "false", "style": "bold", "color": "#2563eb", "fontcolor": "#2563eb"},
            "cancel": {"style": "dashed", "color": CANCEL, "fontcolor": CANCEL},
        }[kind]
        if label:
            attrs = {**attrs, "label": _attr(label)}
        self.current.edge(tail, head, **attrs)

    def raise_node(self, phase: Phase, depth: int) -> str:
        """The cancel exception, as a dashed red box."""
        cancel = phase.cancel
        assert cancel is not None
        node = self.new_id()
        self.current.node(node, label=f"<<FONT COLOR=\"{CANCEL}\">{_name(cancel.exception)}</FONT>>",
                          shape="box", style="dashed,rounded", color=CANCEL, margin="0.08,0.04", fontsize="9",
                          tooltip=_attr(_tip(f"raised anywhere in {phase.label}: {cancel.description}",
                                             [cancel.exception])))
        return node

    def phase_label(self, phase: Phase) -> str:
        """Cluster title: name, how often it runs, and (verbose) its note."""
        parts = [f"<B>{_name(phase.label)}</B>"]
        if phase.repeat:
            parts.append(f'  <FONT COLOR="#2563eb">&#10227; {_name(phase.repeat)}</FONT>')
        if self.verbose and phase.note:
            parts.append(f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="9" COLOR="{MUTED}">{_lines(phase.note, 80)}</FONT>')
        return "<" + "".join(parts) + ">"

    # -- nodes ------------------------------------------------------------------------------

    def event_node(self, event: Event, depth: int) -> str:
        """An event as a table: its name, (verbose) description, one row per callback."""
        rows = handlers_shown(event, self.verbose)
        node = self.new_id()
        header_fill = "#fde2e2" if event.role == "cancel" else "#ffffff"
        measured = f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="8" COLOR="{TIME}">{_esc(event.timing.short())}</FONT>' if event.timing else ""
        cells = [f'<TR><TD COLSPAN="2" BGCOLOR="{header_fill}" ALIGN="LEFT"><B>{_name(event.name)}</B>{measured}</TD></TR>']
        if self.verbose:
            cells.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="8" COLOR="{MUTED}">'
                         f"{_lines(event.description)}</FONT></TD></TR>")
        cells += [self.handler_row(h) for h in rows]
        if not rows:
            cells.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{MUTED}">no callbacks</FONT></TD></TR>')
        table = _table(cells, 'BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white" '
                              f'COLOR="{CANCEL if event.role == "cancel" else "#4b5563"}"')
        names = [event.name, *(h.callback.label for h in rows)]
        self.current.node(node, label=table, tooltip=_attr(_tip(event.description, names)))
        return node

    def handler_row(self, handler: Handler) -> str:
        """One callback: colour chip, class, order, flags and (verbose) its docstring."""
        info = handler.callback
        chip = f'<TD BGCOLOR="{self.colours.get(info.cls, "#999999")}" WIDTH="6" HEIGHT="12" FIXEDSIZE="TRUE" CELLPADDING="0"></TD>'
        name = _name(info.label) + f' <FONT COLOR="{MUTED}">{_esc(f"{info.order:g}")}</FONT>'
        via = via_note(handler, verbose=False)
        if via:
            name += f' <FONT COLOR="{MUTED}">({_esc(via)})</FONT>'
        if handler.diff == "removed":
            name = f'<FONT COLOR="{CANCEL}"><S>{_name(info.label)}</S> {_esc(diff_note(handler) or "")}</FONT>'
        elif handler.disabled:
            name = f'<FONT COLOR="#9ca3af"><S>{_name(info.label)}</S> ({_esc(status_note(handler) or "")})</FONT>'
        elif handler.skipped:
            name = f'<FONT COLOR="#9ca3af">{_name(info.label)}: {_esc(status_note(handler) or "")}</FONT>'
        spent = time_note(handler)
        if spent:
            name += f' <FONT POINT-SIZE="8" COLOR="{TIME}">{_esc(spent)}</FONT>'
        changes = changes_note(handler)
        if changes:
            name += f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="8" COLOR="{CHANGE}">{_lines(changes)}</FONT>'
        if self.verbose and shows_doc(handler):
            name += f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="8" COLOR="{MUTED}">{_lines(handler.doc)}</FONT>'
        if handler.diff == "added":
            name = f'<B>{DIFF_MARKS["added"]} </B>{name} <FONT COLOR="#15803d">{_esc(diff_note(handler) or "")}</FONT>'
        elif handler.diff == "moved":
            name += f' <FONT COLOR="#a16207">{_esc(diff_note(handler) or "")}</FONT>'
        fill = {"added": ' BGCOLOR="#dcfce7"', "removed": ' BGCOLOR="#fee2e2"', "moved": ' BGCOLOR="#fef9c3"'}.get(handler.diff or "", "")
        return f'<TR>{chip}<TD ALIGN="LEFT" BALIGN="LEFT"{fill}>{name}</TD></TR>'

    def work_node(self, work: Work, depth: int) -> str:
        """Work between events: an ellipse-like box with its name and (verbose) code."""
        node = self.new_id()
        label = f"<<B>{_name(work.name)}</B>"
        if self.verbose:
            label += f'<BR/><FONT FACE="{MONO}" POINT-SIZE="8">{_lines(work.code, 70)}</FONT>'
        if work.condition:
            label += f'<BR/><FONT POINT-SIZE="8" COLOR="{MUTED}">{_name(work.condition)}</FONT>'
        if work.timing:
            label += f'<BR/><FONT POINT-SIZE="8" COLOR="{TIME}">{_esc(work.timing.short())}</FONT>'
        self.current.node(node, label=label + ">", shape="box", style="rounded,filled", fillcolor="#ecfdf5",
                    color="#10b981", margin="0.1,0.04", tooltip=_attr(_tip(work.description, [work.name])))
        return node

    # -- extras ------------------------------------------------------------------------------

    def custom_events(self) -> None:
        """Events the loop never fires itself, in a cluster of their own."""
        with self.graph.subgraph(name=self.new_id("cluster_")) as sub:
            sub.attr(label=f"<<B>{_esc(CUSTOM_EVENTS_TITLE)}</B>>", style="dashed,rounded",
                     color="#9333ea")
            self.stack.append(sub)
            for event in self.spec.custom_events:
                self.event_node(event, 1)
            self.stack.pop()

    def legend(self) -> None:
        """Callback colours in call order, and what the shapes and edges mean."""
        rows = ['<TR><TD COLSPAN="2" ALIGN="LEFT"><B>Callbacks, in call order</B></TD></TR>']
        for info in self.spec.callbacks:
            rows.append(f'<TR><TD BGCOLOR="{self.colours[info.cls]}" WIDTH="10"> </TD><TD ALIGN="LEFT">'
                        f'{_name(info.label)} <FONT COLOR="{MUTED}">order {_esc(f"{info.order:g}")}</FONT></TD></TR>')
        rows.append(f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="8" COLOR="{MUTED}">'
                    "white box: event and the callbacks run there<BR ALIGN=\"LEFT\"/>"
                    "green box: work between events<BR ALIGN=\"LEFT\"/>"
                    "blue edge: the loop repeats<BR ALIGN=\"LEFT\"/>"
                    "red dashed: cancel exception, after_cancel event, resume<BR ALIGN=\"LEFT\"/></FONT></TD></TR>")
        table = _table(rows, 'BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white"')
        whole = _whole([info.label for info in self.spec.callbacks])
        self.graph.node("legend", label=table, **({"tooltip": _attr(whole)} if whole else {}))


def dot_graph(spec: LoopSpec, verbose: bool = False) -> graphviz.Digraph:
    """The loop as a `graphviz.Digraph` (not yet rendered: `.source` is the DOT text)."""
    check_spec("spec", spec)
    return _DotBuilder(spec, verbose).build()
