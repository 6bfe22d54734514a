"""A `DataLoop` as a rich tree and as text: the loader's settings, then each stage in the order it runs, with where
it runs and its steps (order, split, what each does). Names from user code are escaped here, at the sink."""
from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree

from loopviz.dataloop import DataLoop, DataStage, DataStep
from loopviz.renderers.sanitise import TEXT_LIMIT, cut, one_line

__all__ = ["data_loop_renderable", "data_loop_text", "data_loop_line", "data_loop_lines", "data_loop_branch",
           "stage_where", "step_facts", "DataLoopView"]


def _name(text: str) -> str:
    return cut(one_line(text))


def _settings(loop: DataLoop) -> str:
    return ", ".join(f"{key}={value}" for key, value in loop.settings.items())


def step_facts(step: DataStep) -> list[str]:
    """A step's order, split and why it does not run, as a view shows them."""
    facts = [f"order {step.order}"] if step.order is not None else []
    if step.split != "both":
        facts.append(step.split)
    if step.note:
        facts.append(step.note if step.runs else f"does not run: {step.note}")
    return facts


def stage_where(stage: DataStage) -> str:
    """Where a stage runs: 'worker processes', 'main process, cuda:0'..."""
    return stage.where + (f", {stage.device}" if stage.device != "cpu" else "")


def _step_line(step: DataStep, loop: DataLoop | None = None, stage: str = "", source: bool = True) -> Text:
    line = Text(_name(step.name), style="bold" if step.runs else "dim strike")
    facts = step_facts(step)
    if facts:
        line.append(f"  ({', '.join(facts)})", style="dim")
    if loop is not None:
        line.append(_timed(loop, stage, step.name), style="magenta")
    if step.doc:
        line.append(f"  {cut(one_line(step.doc), TEXT_LIMIT)}")
    if source and step.source is not None:
        line.append(f"  {_name(step.source.short())}", style="dim")
    return line


def _stage(tree: Tree, stage: DataStage, loop: DataLoop | None = None, source: bool = True) -> None:
    label = Text.assemble((stage.name, "bold cyan"), f"  per {stage.per}, in the {stage_where(stage)}: ",
                          cut(one_line(stage.description), TEXT_LIMIT))
    if loop is not None:
        label.append(_timed(loop, stage.name, ""), style="magenta")
    branch = tree.add(label)
    for step in stage.steps:
        branch.add(_step_line(step, loop, stage.name, source))


def _head(loop: DataLoop) -> str:
    return (f"the {_name(loop.name)} loader's loop ({_name(loop.loader)}, "
            f"num_workers={loop.settings.get('num_workers')})")


def data_loop_branch(parent: Tree, loop: DataLoop) -> None:
    """The data loop as a branch of a loop view's tree (under its draw): each stage, then its steps, with the times
    a trace put on them (where each step is defined: `learn.show_data_loop()`)."""
    branch = parent.add(Text(_head(loop), style="dim"))
    for stage in loop.stages:
        _stage(branch, stage, loop, source=False)


def data_loop_lines(loop: DataLoop) -> list[tuple[int, str]]:
    """The data loop as lines of a text view, each with its depth (0: the loader, 1: a stage, 2: a step): a stage's
    where and time, a step's order, split, time and doc."""
    lines = [(0, _head(loop) + ":")]
    for stage in loop.stages:
        lines.append((1, f"{stage.name}  per {stage.per}, in the {stage_where(stage)}{_timed(loop, stage.name, '')}"))
        for step in stage.steps:
            facts = step_facts(step)
            text = _name(step.name) + (f"  ({', '.join(facts)})" if facts else "") + _timed(loop, stage.name, step.name)
            if step.doc:
                text += f"  {cut(one_line(step.doc), TEXT_LIMIT)}"
            lines.append((2, text))
    return lines


def data_loop_line(loop: DataLoop) -> str:
    """The data loop in one line, for a loop view's `draw`: each stage and the steps that run in it."""
    workers = loop.settings.get("num_workers")
    parts = []
    for stage in loop.stages:
        steps = [_name(s.name) + ("" if s.runs else " (does not run)") + _timed(loop, stage.name, s.name)
                 for s in stage.steps]
        name = stage.name + _timed(loop, stage.name, "")
        parts.append(f"{name} [{', '.join(steps)}]" if steps else name)
    head = f"the {_name(loop.name)} loader's loop ({_name(loop.loader)}, num_workers={workers})"
    return f"{head}: {', '.join(parts)}"


def _timed(loop: DataLoop, stage: str, step: str) -> str:
    """A stage's or step's time per batch and share of the loader's work, when a trace timed it (else '')."""
    found = loop.timed(stage, step)
    if found is None:
        return ""
    ms, pct = found
    return f": {ms:.2f} ms/batch, {pct:.0f} %" if pct == pct else f": {ms:.2f} ms/batch"


def data_loop_renderable(loop: DataLoop) -> Group:
    """The data loop as a rich renderable: a header, the stages as a tree, the notes."""
    tree = Tree(Text.assemble(("draw", "bold"), f": the {_name(loop.name)} loader's loop ",
                              (f"({_name(loop.loader)}, {_name(loop.framework)})", "dim")))
    for stage in loop.stages:
        _stage(tree, stage)
    parts: list[Any] = [tree, Text(f"settings: {_name(_settings(loop))}", style="dim")]
    parts += [Text(f"note: {cut(one_line(note), TEXT_LIMIT)}", style="dim") for note in loop.notes]
    return Group(*parts)


def data_loop_text(loop: DataLoop, width: int = 120) -> str:
    """The data loop as plain text."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False, force_jupyter=False).print(
        data_loop_renderable(loop))
    return out.getvalue().rstrip("\n")


class DataLoopView:
    """What `learn.show_data_loop()` returns: the loop, shown as a tree in a terminal and as text elsewhere."""

    def __init__(self, loop: DataLoop):
        self.loop = loop

    def __rich__(self) -> Group:
        return data_loop_renderable(self.loop)

    def __str__(self) -> str:
        return data_loop_text(self.loop)

    def __repr__(self) -> str:
        return str(self)
