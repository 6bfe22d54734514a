"""The loop as a graphviz diagram: nested phase clusters, events in firing order, loop-back edges, dashed cancel
paths (each on one line beside the event it resumes at), the work between events, and each event's callbacks beside
its name (verbose: a row each), sized to fit a laptop screen with no edge over text. A loop annotated with a trace's
times has its events and work filled by their share of the run (HEAT, scaled to the largest share, with a scale in
the legend) and its costliest steps named large. `theme='dark'` puts it on a transparent background.

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
from dataclasses import dataclass

import graphviz

from loopviz.checks import check_spec
from loopviz.errors import LoopvizError
from loopviz.model import Event, Handler, LoopSpec, Phase, Work
from loopviz.renderers.flow import EdgeKind, FlowWriter
from loopviz.renderers.palette import HEAT, HEAT_DARK, callback_colours, heat_index
from loopviz.renderers.sanitise import NAME_LIMIT, TEXT_LIMIT, cut, one_line, visible
from loopviz.renderers.shown import (
    CUSTOM_EVENTS_TITLE, DIFF_MARKS, changes_note, diff_note, footer, handler_doc, handlers_shown, shows_doc,
    status_note, time_note, via_note,
)

__all__ = ["dot_graph", "step_ids", "DOC_WIDTH", "THEMES"]

DOC_WIDTH = 60
DOC_LINES = 15  # wrapped lines of one text a label shows
LABEL_WIDTH = 34  # characters of a line of a phase's title (its first step keeps clear of the title's width)
PER_ROW = 3  # callbacks beside an event's name in a row of the compact diagram
LEGEND_DOC_LINES = 4  # wrapped lines of a callback's class doc in the (verbose) legend
LEGEND_COLUMN = 4  # callbacks the legend lists in one column; more go in two
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
PLAIN_TABLE = 'BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0"'  # a table only to stack lines
NO_DOC = "(no docstring)"  # introspect's doc of a handler that has none
CHANGE = "#b45309"


@dataclass(frozen=True)
class Theme:
    """The colours of what is drawn straight on the background: title, notes, phase clusters, edges, cancel boxes.
    Events, work and the legend are light cards with dark text in every theme, so callback chips and the heat
    scale look the same everywhere."""

    background: str | None  # None: Graphviz's default (white)
    text: str | None  # None: Graphviz's default (black)
    muted: str
    time: str
    compared: str
    phase_fills: tuple[str, ...]
    phase_border: str
    edge: str
    loop: str
    cancel: str


THEMES = {
    "light": Theme(None, None, MUTED, TIME, "#a16207", PHASE_FILLS, "#9ca3af", "#374151", "#2563eb", CANCEL),
    # transparent, for dark notebooks and terminals: light text and edges, dark phase clusters
    "dark": Theme("transparent", "#e5e7eb", "#9ca3af", "#e879f9", "#facc15",
                  ("#111827", "#172033", "#1e293b", "#243044", "#2b3a52", "#334155"), "#6b7280", "#9ca3af",
                  "#60a5fa", "#f87171"),
}
HOT_SPOTS = 3  # the costliest events and work, labelled large in an annotated diagram


def _esc(text: str) -> str:
    """Text made safe for an HTML-like label: control characters visible, escaped, non-ASCII as character references,
    and a word joiner after each backslash that Graphviz would read as one of its escapes (`\\N`, `\\G`, `\\\\`...)."""
    escaped = html.escape(visible(text), quote=True).replace("]", "&#93;")  # Graphviz refuses a text of "]" alone
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


def _lines(text: str, width: int = DOC_WIDTH, most: int = DOC_LINES) -> list[str]:
    """Wrapped, escaped lines of `text`, at most `most` (the last an ellipsis)."""
    wrapped = [w for line in cut(visible(text), TEXT_LIMIT).splitlines() for w in (textwrap.wrap(line, width) or [""])]
    if len(wrapped) > most:
        wrapped = wrapped[: most - 1] + ["…"]
    return [_esc(line) for line in wrapped]


def _font(lines: list[str], attrs: str) -> list[str]:
    """Each line in a `<FONT attrs>` of its own (no font tag may span the rows of a `_stack`); a blank line a space
    (Graphviz refuses an empty FONT)."""
    return [f"<FONT {attrs}>{line or ' '}</FONT>" for line in lines]


def _stack(lines: list[str], align: str = "LEFT") -> str:
    """Lines one under another: one line as it is, more as the rows of a borderless table. Graphviz spaces lines
    broken by <BR/> by the font size alone, so with DejaVu Sans (where fontconfig sends Helvetica on most Linux
    machines) an underscore or a descender touches the line below; a table row is as tall as its font's ascent and
    descent."""
    if len(lines) <= 1:
        return "".join(lines)
    return f"<TABLE {PLAIN_TABLE}>" + "".join(f'<TR><TD ALIGN="{align}">{line}</TD></TR>' for line in lines) + "</TABLE>"


def _broken(lines: list[str], strut: int) -> str:
    """Left-aligned lines for a cell that can be taller than they are (one spanning rows, or beside a taller one),
    where Graphviz would spread the rows of a `_stack` apart: lines broken by <BR/>, each below the first ending in a
    space of `strut` points, which makes the line that much taller (a line is as tall as its largest font), clear of
    the line above."""
    if len(lines) <= 1:
        return "".join(lines)
    space = f'<FONT POINT-SIZE="{strut}"> </FONT>'
    return "".join(line + (space if i else "") + '<BR ALIGN="LEFT"/>' for i, line in enumerate(lines))


def _data_loop_table(loop: Any) -> str:
    """A loader's loop as a table inside its draw: a row per step (a stage without steps: one row), the stage's cell
    spanning its steps, with where it runs; each step's order and split; with a trace's times, each stage's and
    step's time per batch and share of the loader's work, filled by that share (0 to 100 %)."""
    from loopviz.renderers.dataloop import stage_where, step_facts

    def timed(stage: str, step: str) -> tuple[str, str]:
        """(the cell's fill, '' when untimed; its time per batch and share as a label, '' when untimed)."""
        found = loop.timed(stage, step)
        if found is None:
            return "", ""
        ms, pct = found
        fill = HEAT[heat_index(pct, 100.0)] if pct == pct else "#ffffff"
        shown = f"{ms:.2f} ms/batch" + (f", {pct:.0f} %" if pct == pct else "")
        return fill, f'<FONT POINT-SIZE="7" COLOR="{TIME}">{_esc(shown)}</FONT>'

    def td(fill: str, text: str, spans: str = "") -> str:
        """A cell filled by its share; its text, every colour of it, white on the darkest fills."""
        if fill in HEAT[HEAT_DARK:]:
            for colour in (MUTED, TIME):
                text = text.replace(f'COLOR="{colour}"', 'COLOR="#ffffff"')
            text = f'<FONT COLOR="#ffffff">{text}</FONT>'
        return f'<TD{spans} ALIGN="LEFT"' + (f' BGCOLOR="{fill}"' if fill else "") + f">{text}</TD>"

    head = (f"the {_name(loop.name)} loader's loop ({_name(loop.loader)}, "
            f"num_workers={_esc(str(loop.settings.get('num_workers')))})")
    rows = [f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT POINT-SIZE="8"><B>{head}</B></FONT></TD></TR>']
    for stage in loop.stages:
        fill, time = timed(stage.name, "")
        cell = _broken([f'<FONT POINT-SIZE="8"><B>{_name(stage.name)}</B></FONT>',  # (a cell as tall as its steps)
                        f'<FONT POINT-SIZE="7" COLOR="{MUTED}">per {_esc(stage.per)}, {_esc(stage_where(stage))}</FONT>',
                        *([time] if time else [])], strut=8)
        steps = stage.steps or (None,)
        for i, step in enumerate(steps):
            first = td(fill, cell, f' ROWSPAN="{len(steps)}" VALIGN="TOP"') if i == 0 else ""
            if step is None:
                rows.append(f'<TR>{first}<TD></TD></TR>')
                continue
            step_fill, step_time = timed(stage.name, step.name)
            facts = step_facts(step)
            name = _name(step.name, 60) if step.runs else f'<S>{_name(step.name, 60)}</S>'
            text = _broken([f'<FONT POINT-SIZE="8">{name}</FONT>'
                            + (f' <FONT POINT-SIZE="7" COLOR="{MUTED}">{_esc(cut(", ".join(facts), 48))}</FONT>'
                               if facts else ""), *([step_time] if step_time else [])], strut=8)
            rows.append(f"<TR>{first}{td(step_fill, text)}</TR>")
    return ('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="2" BGCOLOR="#ffffff" COLOR="#cbd5e1">'
            + "".join(rows) + "</TABLE>")


def _bounded(parts: list[str], more: str) -> str:
    """`parts` joined, less trailing parts past HTML_LIMIT; then `more` with `{n}` the number dropped."""
    size, kept = 0, 0
    for part in parts:
        if kept and size + len(part) + len(more) + 10 > HTML_LIMIT:
            break
        size, kept = size + len(part), kept + 1
    return "".join(parts[:kept]) + (more.format(n=len(parts) - kept) if kept < len(parts) else "")


def _table(rows: list[str], attrs: str, columns: int = 2) -> str:
    """An HTML-like table label of `columns` columns; rows past what one Graphviz label holds are dropped and
    counted."""
    more = (f'<TR><TD COLSPAN="{columns}" ALIGN="LEFT"><FONT COLOR="{MUTED}">{{n}} more rows: too long for one Graphviz label'
            "</FONT></TD></TR>")
    return f"<<TABLE {attrs}>" + _bounded(rows, more) + "</TABLE>>"


def _where(step: Event | Work) -> str:
    """`forward (train)`: a step's name and the mode it ran in, for the list of hot spots."""
    mode = step.mode if isinstance(step, Event) else None
    return f"{step.name} ({mode})" if mode else step.name


def step_ids(spec: LoopSpec) -> list[tuple[str, Event | Work]]:
    """(id, step) of every event and piece of work of the spec, in the order `LoopSpec.map` walks them (custom
    events last): `s0`, `s1`... The ids a diagram drawn with `ids=True` gives their nodes (SVG `id` attributes)."""
    steps = [s for top in spec.phases for _, s in [(0, top), *top.walk()] if isinstance(s, (Event, Work))]
    return [(f"s{i}", step) for i, step in enumerate([*steps, *spec.custom_events])]


class _DotBuilder(FlowWriter):
    """Draws one spec into one `graphviz.Digraph`."""

    def __init__(self, spec: LoopSpec, verbose: bool, theme: str = "light", ids: bool = False):
        self.spec = spec
        self.verbose = verbose
        # each event's and work's node id in SVG (`step_ids`), when asked for: pages that script the diagram
        self.step_id = {id(step): key for key, step in step_ids(spec)} if ids else {}
        if theme not in THEMES:
            raise LoopvizError(f"theme={theme!r} is not a theme of the diagram; choose one of: {', '.join(THEMES)}.")
        self.theme = t = THEMES[theme]
        self.colours = callback_colours(spec)
        self.legend_columns = 2 if len(spec.callbacks) > LEGEND_COLUMN else 1  # callbacks side by side in the legend
        self.ids = itertools.count()
        self.spacers = itertools.count()  # apart from `ids`: the nodes keep the ids they had without spacers
        self.graph = graphviz.Digraph(
            "loop",
            graph_attr={"rankdir": "TB", "compound": "true", "newrank": "true", "fontname": FONT,
                        "nodesep": "0.25", "ranksep": "0.1", "labeljust": "l"},
            # width/height 0: a node as small as its label (Graphviz's default minimum is 0.75 x 0.5 in)
            node_attr={"fontname": FONT, "fontsize": "10", "shape": "plaintext", "margin": "0", "width": "0",
                       "height": "0"},
            edge_attr={"fontname": FONT, "fontsize": "9", "arrowsize": "0.7", "color": t.edge},
        )
        if t.background:
            self.graph.attr(bgcolor=t.background)
        if t.text:
            self.graph.attr(fontcolor=t.text)
        self.stack: list[graphviz.Digraph] = [self.graph]
        self.title_room: list[float | None] = []  # per open phase: its title's width, until its first step is drawn
        timed = [s for top in spec.phases for _, s in [(0, top), *top.walk()]
                 if isinstance(s, (Event, Work)) and s.timing is not None]
        self.top = max((s.timing.pct for s in timed if s.timing), default=0.0)
        costly = sorted((s for s in timed if s.timing and s.timing.pct > 0), key=lambda s: -s.timing.pct)  # type: ignore[union-attr]
        self.hot = {id(s): rank for rank, s in enumerate(costly[:HOT_SPOTS], 1)}
        self.hot_names = [f"{_where(s)}  {s.timing.pct:.1f} %" for s in costly[:HOT_SPOTS] if s.timing]

    def new_id(self, prefix: str = "n") -> str:
        return f"{prefix}{next(self.ids)}"

    @property
    def current(self) -> graphviz.Digraph:
        """The graph or cluster being drawn into."""
        return self.stack[-1]

    def build(self) -> graphviz.Digraph:
        """The whole diagram: phases chained in order, then the legend."""
        t = self.theme
        colour = {"note": t.muted, "measured": t.time, "compared": t.compared}
        framework = _name(self.spec.framework)  # (Graphviz refuses an empty FONT)
        head = f"<B>{_name(self.spec.loop)} loop</B>" + (f'  <FONT COLOR="{t.muted}">{framework}</FONT>' if framework else "")
        below = ['<TR><TD ALIGN="LEFT">' + _stack(_font(_lines(line.text, 110), f'POINT-SIZE="10" COLOR="{colour[line.kind]}"'))
                 + "</TD></TR>" for line in footer(self.spec)]
        more = f'<TR><TD ALIGN="LEFT"><FONT COLOR="{t.muted}">{{n}} more notes</FONT></TD></TR>'
        title = (f'<<TABLE {PLAIN_TABLE}><TR><TD>{head}</TD></TR>' + _bounded(below, more) + "</TABLE>>"
                 if below else f"<{head}>")
        self.graph.attr(label=title, labelloc="t", fontsize="14")
        self.legend()  # first: dot puts it left of the first phase, in the room the cancel paths leave below it
        self.write_phases(self.spec.phases)
        if self.spec.custom_events:
            self.custom_events()
        return self.graph

    # -- the FlowWriter hooks -------------------------------------------------------------------

    def open_phase(self, phase: Phase, depth: int) -> None:
        """A cluster, filled darker the deeper it is nested."""
        cluster = graphviz.Digraph(name=self.new_id("cluster_"))
        fills = self.theme.phase_fills
        cluster.attr(label=self.phase_label(phase), style="rounded,filled", color=self.theme.phase_border,
                     fillcolor=fills[min(depth, len(fills) - 1)], fontsize="11", margin="4")
        if self.title_room:
            self.title_room[-1] = None  # the phase around starts with this one: the edge in comes to its title
        self.stack.append(cluster)
        self.title_room.append(self.title_width(phase))

    def title_width(self, phase: Phase) -> float:
        """About how wide, in points, a phase's title is drawn (Helvetica: bold 11 pt about 6.8 pt a character,
        10 pt about 5.6, 9 pt about 5.1), erring wide."""
        lines = [(6.8, line) for line in self.title_lines(phase.label)]
        lines += [(5.6, line) for line in self.title_lines(f"⟳ {phase.repeat}")] if phase.repeat else []
        lines += [(5.1, line) for line in self.title_lines(phase.note)] if self.verbose and phase.note else []
        return max(size * len(line) for size, line in lines) + 6

    @staticmethod
    def title_lines(text: str) -> list[str]:
        """A phase title's text as the lines it is drawn in, at most DOC_LINES (the last an ellipsis)."""
        wrapped = textwrap.wrap(one_line(cut(visible(text), TEXT_LIMIT)), LABEL_WIDTH) or [""]
        return wrapped if len(wrapped) <= DOC_LINES else [*wrapped[: DOC_LINES - 1], "…"]

    def keep_clear_of_title(self, node: str) -> None:
        """When `node` is the first step of the phase being drawn, keep it right of the phase's title: an invisible
        spacer as wide as the title sits left of it, so the edge coming into the phase, which runs down to the
        node's middle, passes beside the title's text, not over it."""
        if not self.title_room or self.title_room[-1] is None:  # (the custom events: a cluster no edge enters)
            return
        spacer = f"room{next(self.spacers)}"
        width = f"{self.title_room[-1] / 72:.2f}"
        self.title_room[-1] = None
        self.current.node(spacer, label="", shape="box", style="invis", width=width, height="0.01", fixedsize="true")
        self.same_rank([spacer, node])
        self.current.edge(spacer, node, style="invis")

    def same_rank(self, nodes: list[str]) -> None:
        """Draw these nodes (already made in the phase being drawn) side by side, on one rank."""
        with self.current.subgraph() as rank:
            rank.attr(rank="same")
            for node in nodes:
                rank.node(node)

    def close_phase(self, phase: Phase, depth: int) -> None:
        self.title_room.pop()
        cluster = self.stack.pop()
        self.current.subgraph(cluster)

    def edge(self, tail: str, head: str, kind: EdgeKind, label: str | None = None) -> None:
        """Plain for the flow, bold blue for a loop back, dashed red for a cancel path.

        A loop back leaves and enters on the east side, where no label is, and its `next: ...` is a tooltip: an edge
        label would be a node of its own that dot routes through the loop's steps (the cluster title says it too)."""
        attrs = {
            "flow": {},
            "loop": {"constraint": "false", "style": "bold", "color": self.theme.loop, "tailport": "e", "headport": "e"},
            "cancel": {"style": "dashed", "color": self.theme.cancel, "fontcolor": self.theme.cancel},
        }[kind]
        if label:
            attrs = {**attrs, ("tooltip" if kind == "loop" else "label"): _attr(label)}
        self.current.edge(tail, head, **attrs)

    def cancel_path(self, phase: Phase, event: Event | None, resume: str | None, depth: int) -> list[str]:
        """The cancel path on one line, beside the event where the loop resumes: drawn down the side it would push
        every enclosing phase's steps right, one column per level of nesting."""
        path = super().cancel_path(phase, event, resume, depth)
        if len(path) > 1:
            self.same_rank(path)
        return path

    def raise_node(self, phase: Phase, depth: int) -> str:
        """The cancel exception, as a dashed red box."""
        cancel = phase.cancel
        assert cancel is not None
        node = self.new_id()
        red = self.theme.cancel
        self.current.node(node, label=f"<<FONT COLOR=\"{red}\">{_name(cancel.exception)}</FONT>>",
                          shape="box", style="dashed,rounded", color=red, margin="0.08,0.04", fontsize="9",
                          tooltip=_attr(_tip(f"raised anywhere in {phase.label}: {cancel.description}",
                                             [cancel.exception])))
        return node

    def phase_label(self, phase: Phase) -> str:
        """Cluster title: name, how often it runs, and (verbose) its note."""
        def lines(text: str) -> list[str]:
            return [_esc(line) for line in self.title_lines(text)]

        rows = [f"<B>{line or ' '}</B>" for line in lines(phase.label)]
        if phase.repeat:
            rows += _font(lines(f"⟳ {phase.repeat}"), f'POINT-SIZE="10" COLOR="{self.theme.loop}"')
        if self.verbose and phase.note:
            rows += _font(lines(phase.note), f'POINT-SIZE="9" COLOR="{self.theme.muted}"')
        return "<" + _stack(rows) + ">"

    # -- heat ------------------------------------------------------------------------------

    def heat(self, step: Event | Work) -> tuple[str, str, str] | None:
        """(fill, text colour, time colour) of a measured step by its share of the run; None when unmeasured."""
        if step.timing is None:
            return None
        index = heat_index(step.timing.pct, self.top)
        text = "#ffffff" if index >= HEAT_DARK else "#111827"
        return HEAT[index], text, TIME if index <= 2 else text

    def title(self, step: Event | Work, colour: str | None) -> str:
        """A step's name in bold; a hot spot's name and share of the run larger, with its rank."""
        name = f"<B>{_name(step.name)}</B>"
        rank = self.hot.get(id(step))
        if rank is not None and step.timing is not None:
            name = (f'<FONT POINT-SIZE="15"><B>{_name(step.name)}  {step.timing.pct:.0f} %</B></FONT>'
                    f'<FONT POINT-SIZE="9">  #{rank} cost</FONT>')
        return f'<FONT COLOR="{colour}">{name}</FONT>' if colour else name

    # -- nodes ------------------------------------------------------------------------------

    def event_node(self, event: Event, depth: int) -> str:
        """An event as a table: its name, (verbose) description, one row per callback."""
        rows = handlers_shown(event, self.verbose)
        node = self.new_id()
        heat = self.heat(event)
        header_fill = heat[0] if heat else "#fde2e2" if event.role == "cancel" else "#ffffff"
        measured = ([f'<FONT POINT-SIZE="8" COLOR="{heat[2]}">{_esc(event.timing.short())}</FONT>']
                    if heat and event.timing else [])
        header = _broken([self.title(event, heat[1] if heat else None), *measured], strut=9)  # (spans rows)
        if self.verbose:
            cells = [f'<TR><TD BGCOLOR="{header_fill}" CELLPADDING="0"></TD>'
                     f'<TD BGCOLOR="{header_fill}" ALIGN="LEFT">{header}</TD></TR>',
                     '<TR><TD CELLPADDING="0"></TD><TD ALIGN="LEFT">'
                     + _stack(_font(_lines(event.description), f'POINT-SIZE="8" COLOR="{MUTED}"')) + "</TD></TR>"]
            cells += [f"<TR>{self.handler_cells(h)}</TR>" for h in rows]
            if not rows:
                cells.append(f'<TR><TD CELLPADDING="0"></TD><TD ALIGN="LEFT"><FONT COLOR="{MUTED}">no callbacks</FONT>'
                             "</TD></TR>")
        else:  # compact: the name on the left, its callbacks beside it, a few to a row
            packed = [rows[i:i + PER_ROW] for i in range(0, len(rows), PER_ROW)] or [[]]
            span = f' ROWSPAN="{len(packed)}"' if len(packed) > 1 else ""
            cells = [f'<TR><TD{span} BGCOLOR="{header_fill}" ALIGN="LEFT" VALIGN="TOP">{header}</TD>'
                     + "".join(self.handler_cells(h) for h in packed[0]) + "</TR>"]
            cells += ["<TR>" + "".join(self.handler_cells(h) for h in row) + "</TR>" for row in packed[1:]]
        table = _table(cells, 'BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white" '
                              f'COLOR="{CANCEL if event.role == "cancel" else "#4b5563"}"',
                       2 if self.verbose else 1 + 2 * min(PER_ROW, len(rows)))
        names = [event.name, *(h.callback.label for h in rows)]
        self.current.node(node, label=table, tooltip=_attr(_tip(event.description, names)), **self.svg_id(event))
        self.keep_clear_of_title(node)
        return node

    def svg_id(self, step: Event | Work) -> dict[str, str]:
        """The node's `id` attribute (its `step_ids` id), when the diagram was asked for them."""
        key = self.step_id.get(id(step))
        return {"id": key} if key else {}

    def handler_cells(self, handler: Handler) -> str:
        """One callback's two cells: colour chip; class, order, flags and (verbose) its docstring."""
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
        if handler.diff == "added":
            name = f'<B>{DIFF_MARKS["added"]} </B>{name} <FONT COLOR="#15803d">{_esc(diff_note(handler) or "")}</FONT>'
        elif handler.diff == "moved":
            name += f' <FONT COLOR="#a16207">{_esc(diff_note(handler) or "")}</FONT>'
        below = []
        changes = changes_note(handler)
        if changes:
            below += _font(_lines(changes), f'POINT-SIZE="8" COLOR="{CHANGE}"')
        said = handler_doc(handler) if self.verbose and shows_doc(handler) else None
        if said and said != NO_DOC:  # (the class docstring is shown once, in the legend)
            below += _font(_lines(said), f'POINT-SIZE="8" COLOR="{MUTED}"')
        fill = {"added": ' BGCOLOR="#dcfce7"', "removed": ' BGCOLOR="#fee2e2"', "moved": ' BGCOLOR="#fef9c3"'}.get(handler.diff or "", "")
        return f'{chip}<TD ALIGN="LEFT" VALIGN="TOP"{fill}>{_broken([name, *below], strut=9)}</TD>'

    def work_node(self, work: Work, depth: int) -> str:
        """Work between events: an ellipse-like box with its name and (verbose) code."""
        node = self.new_id()
        heat = self.heat(work)
        text = heat[1] if heat else None
        rows = [self.title(work, text)]
        if self.verbose:
            rows.append(_stack(_font(_lines(work.code, 70), f'FACE="{MONO}" POINT-SIZE="8" COLOR="{text or "#000000"}"')))
            if work.data_loop is not None:  # the loader's own loop, nested in the work that draws a batch
                rows.append(_data_loop_table(work.data_loop))
        if work.condition:
            rows.append(f'<FONT POINT-SIZE="8" COLOR="{text or MUTED}">{_name(work.condition)}</FONT>')
        if heat and work.timing:
            rows.append(f'<FONT POINT-SIZE="8" COLOR="{heat[2]}">{_esc(work.timing.short())}</FONT>')
        label = _stack(rows, align="CENTER")
        self.current.node(node, label="<" + label + ">", shape="box", style="rounded,filled", fillcolor=heat[0] if heat else "#ecfdf5",
                    color="#10b981", margin="0.1,0.04", tooltip=_attr(_tip(work.description, [work.name])),
                    **self.svg_id(work))
        self.keep_clear_of_title(node)
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

    def wide_row(self, text: str) -> str:
        """A legend row of text, in the name columns: spanning the chips' first column too, its width would be shared
        out with that column, and a chip would float in a wide one."""
        span = 2 * self.legend_columns - 1
        return (f'<TR><TD CELLPADDING="0"></TD><TD ALIGN="LEFT"'
                + (f' COLSPAN="{span}"' if span > 1 else "") + f">{text}</TD></TR>")

    def heat_rows(self) -> list[str]:
        """The legend's colour scale of measured time and its list of the costliest steps."""
        # full blocks (U+2588) in a line of text: swatches in a nested table spread apart, as Graphviz shares a wide
        # legend's width out among the table's columns
        swatches = "".join(f'<FONT COLOR="{c}">&#9608;&#9608;</FONT>' for c in HEAT)
        scale = f"0 %  {swatches}  {self.top:.1f} %"
        hot = [f"<B>#{rank} {_name(name)}</B>" for rank, name in enumerate(self.hot_names, 1)]
        muted = f'POINT-SIZE="8" COLOR="{MUTED}"'
        return [self.wide_row(_stack([f"<B>Share of the run</B> <FONT {muted}>(fill of events and work)</FONT>",
                                      f"<FONT {muted}>white or pink: not seen running</FONT>"])),
                self.wide_row(scale), self.wide_row(_stack(hot))]

    def callback_rows(self) -> list[str]:
        """The callbacks' colours and names in call order, down one column, or down two when there are many (the
        legend stays about as tall as the Create phase beside it); verbose: each class's doc under its name."""
        names = [f'{_name(info.label)} <FONT COLOR="{MUTED}">order {_esc(f"{info.order:g}")}</FONT>'
                 for info in self.spec.callbacks]
        room = HTML_LIMIT // 2 - sum(map(len, names))  # verbose: class docs, once each, while they leave room
        cells = []
        for info, name in zip(self.spec.callbacks, names):
            doc = (_font(_lines(info.doc, 45, LEGEND_DOC_LINES), f'POINT-SIZE="8" COLOR="{MUTED}"')
                   if self.verbose and info.doc else [])
            size = sum(map(len, doc)) + 40 * len(doc)  # with about each line's break and strut
            doc, room = (doc, room - size) if size <= room else ([], room)
            cells.append(f'<TD BGCOLOR="{self.colours[info.cls]}" WIDTH="10"> </TD><TD ALIGN="LEFT" VALIGN="TOP">'
                         f"{_broken([name, *doc], strut=9)}</TD>")  # (a cell as tall as the one beside it)
        tall = -(-len(cells) // self.legend_columns)  # rows: the list, or the half of it, down each column
        return ["<TR>" + "".join(cells[row::tall]) + "</TR>" for row in range(tall)]

    def legend(self) -> None:
        """Callback colours in call order, what the shapes and edges mean, and the scale of measured time."""
        if not self.spec.callbacks and not self.hot:
            return  # nothing to explain: a loop without callbacks (plain PyTorch) gets no legend
        rows = [self.wide_row("<B>Callbacks, in call order</B>"), *self.callback_rows()] if self.spec.callbacks else []
        rows.append(self.wide_row(_stack(_font(["box: an event, with the callbacks run there",
                                                "rounded green box: work between events", "blue edge: the loop repeats",
                                                "red dashed: cancel exception, after_cancel event, resume"],
                                               f'POINT-SIZE="8" COLOR="{MUTED}"'))))
        if self.hot:
            rows.extend(self.heat_rows())
        table = _table(rows, 'BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="white"',
                       2 * self.legend_columns)
        whole = _whole([info.label for info in self.spec.callbacks])
        self.graph.node("legend", label=table, **({"tooltip": _attr(whole)} if whole else {}))


def dot_graph(spec: LoopSpec, verbose: bool = False, theme: str = "light", ids: bool = False) -> graphviz.Digraph:
    """The loop as a `graphviz.Digraph` (not yet rendered: `.source` is the DOT text); `theme='dark'` draws it on a
    transparent background with light text and edges, for dark notebooks; `ids=True` gives each event's and work's
    node the SVG id `step_ids` names."""
    check_spec("spec", spec)
    return _DotBuilder(spec, verbose, theme, ids).build()
