"""The loop as a `rich` tree: phases as branches, events as nodes, callbacks coloured by class.

Every label is a `rich.text.Text`, never console markup, so a docstring such as
"scale [mixup] by 0.5" prints intact, and every string is made visible first (`loopviz.renderers.sanitise`),
so a control character or escape sequence in a name or docstring is shown escaped, never obeyed.
Box-drawing guides and symbols fall back to ASCII when the console cannot encode them.
"""
from __future__ import annotations

import io

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.jupyter import JupyterMixin
from rich.text import Text
from rich.tree import Tree

from loopviz.checks import check_spec
from loopviz.model import Event, Handler, LoopSpec, Phase, Step, Work
from loopviz.renderers.palette import callback_colours
from loopviz.renderers.sanitise import visible_spec
from loopviz.renderers.shown import (
    CUSTOM_EVENTS_TITLE, DIFF_MARKS, changes_note, class_docs, diff_note, footer, handler_doc, handlers_shown, shows_doc,
    status_note, via_note,
)

__all__ = ["RichLoop", "rich_tree", "render_rich_text"]

_SYMBOLS = {
    True: {"chip": "#", "arrow": "->", "loop": "*", "work": "~", "cancel": "x", "dot": "-"},
    False: {"chip": "■", "arrow": "→", "loop": "⟲", "work": "~", "cancel": "✗", "dot": "·"},
}


class _TreeBuilder:
    """Builds the tree for one spec, one console (ASCII or not), verbose or not."""

    def __init__(self, spec: LoopSpec, verbose: bool, ascii_only: bool):
        self.spec = visible_spec(spec)
        self.verbose = verbose
        self.sym = _SYMBOLS[ascii_only]
        self.colours = callback_colours(spec)

    def chip(self, cls: str) -> Text:
        """A coloured square standing for a callback class."""
        return Text(self.sym["chip"], style=self.colours.get(cls, "default"))

    def tree(self) -> Tree:
        """The whole loop."""
        title = Text.assemble((f"{self.spec.loop} loop", "bold"), (f" {self.sym['dot']} {self.spec.framework}", "dim"))
        root = Tree(title, guide_style="dim")
        for phase in self.spec.phases:
            self.phase(root, phase)
        if self.spec.custom_events:
            custom = root.add(Text(CUSTOM_EVENTS_TITLE, style="bold magenta"))
            for event in self.spec.custom_events:
                self.event(custom, event)
        for line in footer(self.spec):
            root.add(Text(line.text, style="magenta" if line.kind == "measured" else "yellow"))
        return root

    def phase(self, parent: Tree, phase: Phase) -> None:
        """A phase as a branch, its steps as children in firing order."""
        label = Text(phase.label, style="bold cyan")
        if phase.repeat:
            label.append(f"  {self.sym['loop']} {phase.repeat}", style="cyan")
        if phase.cancel:
            c = phase.cancel
            label.append(f"  {self.sym['cancel']} {c.route(self.sym['arrow'])}", style="red")
        if self.verbose and phase.note:
            label.append(f"\n{phase.note}", style="dim")
        branch = parent.add(label)
        for step in phase.steps:
            self.step(branch, step)

    def step(self, parent: Tree, step: Step) -> None:
        """One step: a nested phase, an event, or (verbose) work between events."""
        if isinstance(step, Phase):
            self.phase(parent, step)
        elif isinstance(step, Event):
            self.event(parent, step)
        elif self.verbose:
            self.work(parent, step)

    def event(self, parent: Tree, event: Event) -> None:
        """An event: inline coloured callbacks, or (verbose) its description and one child per handler."""
        label = Text(event.name, style="italic red" if event.role == "cancel" else "bold")
        if event.timing:
            label.append(f"  {event.timing.short()}", style="magenta")
        shown = handlers_shown(event, self.verbose)
        if not self.verbose:
            label.append(": ", style="dim")
            if not shown:
                label.append("(none)", style="dim")
            for i, handler in enumerate(shown):
                if i:
                    label.append(" ")
                label.append_text(self.callback_name(handler))
            parent.add(label)
            return
        label.append(f"\n{event.description}", style="dim")
        node = parent.add(label)
        if not shown:
            node.add(Text("(no callbacks)", style="dim"))
        for handler in shown:
            node.add(self.handler(handler))

    def callback_name(self, handler: Handler) -> Text:
        """Chip, class name and, for a switched-off callback, its flag."""
        mark = DIFF_MARKS[handler.diff]
        name = Text.assemble(f"{mark} " if mark else "", self.chip(handler.callback.cls), " ", handler.callback.label)
        note = diff_note(handler)
        if handler.diff == "added":
            name.stylize("bold green")
            name.append(f" ({note})", style="green")
        elif handler.diff == "removed":
            name.stylize("red strike")
            name.append(f" ({note})", style="red")
        elif handler.diff == "moved":
            name.stylize("yellow")
            name.append(f" (order {handler.was_order:g} {self.sym['arrow']} {handler.callback.order:g})", style="yellow")
        via = via_note(handler, verbose=False)
        if via:
            name.append(f"({via})", style="dim")
        if handler.disabled:
            name.stylize("dim strike")
            name.append(f"({status_note(handler)})", style="dim")
        return name

    def handler(self, handler: Handler) -> Text:
        """Verbose: class, order, flags, source, then the docstring dimmed below."""
        text = self.callback_name(handler)
        text.append(f"  order {handler.callback.order:g}", style="dim")
        if handler.timing:
            text.append(f"  {handler.timing.short()}", style="magenta")
        if not shows_doc(handler):
            text.append(f"  {status_note(handler)}", style="yellow")
            return text
        via = via_note(handler, verbose=True)
        if via and handler.via != "call":
            text.append(f"  {via}", style="dim")
        if handler.source:
            text.append(f"  {handler.source.short()}", style="dim")
        changes = changes_note(handler)
        if changes:
            text.append(f"\n{changes}", style="yellow")
        said = handler_doc(handler)
        if said:
            text.append("\n")
            text.append(said, style="dim italic" if handler.doc_source == "none" and not handler.code else "dim")
        return text

    def work(self, parent: Tree, work: Work) -> None:
        """Verbose: work done between events."""
        label = Text.assemble((f"{self.sym['work']} {work.name}", "green"), ("  ", ""), (work.code, "dim"))
        if work.condition:
            label.append(f"  ({work.condition})", style="dim italic")
        if work.timing:
            label.append(f"  {work.timing.short()}", style="magenta")
        node = parent.add(label)
        if work.data_loop is not None:  # the loader's own loop, nested under the work that draws a batch
            from loopviz.renderers.dataloop import data_loop_branch

            data_loop_branch(node, work.data_loop)

    def legend(self) -> Text:
        """Which colour is which callback, in call order, and what the symbols mean."""
        legend = Text("Callbacks in call order: ", style="bold")
        for i, info in enumerate(self.spec.callbacks):
            if i:
                legend.append("  ")
            legend.append_text(Text.assemble(self.chip(info.cls), f" {info.label} ({info.order:g})"))
        sym = self.sym
        legend.append(
            f"\n{sym['loop']} repeats   {sym['cancel']} cancel path: exception {sym['arrow']} "
            f"after_cancel event {sym['arrow']} where the loop resumes",
            style="dim",
        )
        if self.verbose:
            legend.append(f"   {sym['work']} work between events", style="dim")
            for label, doc in class_docs(self.spec):  # each class's docstring once; under each handler, what it does
                legend.append(f"\n{label}: ", style="bold")
                legend.append(doc, style="dim")
        return legend


class RichLoop(JupyterMixin):
    """A `LoopSpec` as a rich renderable: the tree, then a legend. Print it with a rich Console."""

    def __init__(self, spec: LoopSpec, verbose: bool = False):
        check_spec("spec", spec)
        self.spec = spec
        self.verbose = verbose

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        builder = _TreeBuilder(self.spec, self.verbose, options.ascii_only)
        yield Group(builder.tree(), Text(""), builder.legend())


def rich_tree(spec: LoopSpec, verbose: bool = False, ascii_only: bool = False) -> Tree:
    """The bare `rich.tree.Tree` of a loop (without the legend), for embedding in your own layout."""
    check_spec("spec", spec)
    return _TreeBuilder(spec, verbose, ascii_only).tree()


def render_rich_text(spec: LoopSpec, verbose: bool = False, width: int = 120) -> str:
    """The rich view as plain text (box-drawing guides, no colour), for files."""
    out = io.StringIO()
    # force_jupyter=False: in a notebook kernel rich would also send what it prints to the notebook
    Console(file=out, width=width, color_system=None, legacy_windows=False, force_jupyter=False).print(
        RichLoop(spec, verbose=verbose))
    return out.getvalue().rstrip("\n")
