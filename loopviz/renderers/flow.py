"""The walk that every flowchart view shares: steps chained in firing order, loop-back edges, cancel paths.

A flowchart renderer subclasses `FlowWriter` and says how to draw a node, an edge and a phase; the
order of nodes and which edges join them are decided here, once.
"""
from __future__ import annotations

from typing import Literal

from loopviz.model import Event, Phase, Work

__all__ = ["FlowWriter", "EdgeKind"]

EdgeKind = Literal["flow", "loop", "cancel"]


class FlowWriter:
    """Walks a loop's phases and calls the drawing hooks that subclasses implement."""

    def write_phases(self, phases: list[Phase]) -> None:
        """Draw the top-level phases, chained one after another."""
        previous: str | None = None
        for phase in phases:
            first, last = self.phase(phase, 0)
            if previous and first:
                self.edge(previous, first, "flow")
            previous = last or previous

    def phase(self, phase: Phase, depth: int) -> tuple[str | None, str | None]:
        """Draw a phase; return the ids of its first and last nodes in firing order (None if it drew none)."""
        self.open_phase(phase, depth)
        first: str | None = None
        last: str | None = None
        by_name: dict[str, str] = {}
        cancel_event: Event | None = None
        for step in phase.steps:
            if isinstance(step, Event) and step.role == "cancel":
                cancel_event = step  # off the normal path: drawn with the cancel path below
                continue
            if isinstance(step, Phase):
                entry, exit_ = self.phase(step, depth + 1)
            else:
                entry = exit_ = self.event_node(step, depth + 1) if isinstance(step, Event) else self.work_node(step, depth + 1)
            if entry is None:
                continue
            if isinstance(step, Event):
                by_name[step.name] = entry
            if last is not None:
                self.edge(last, entry, "flow")
            first = first or entry
            last = exit_
        if phase.cancel:
            self.cancel_path(phase, cancel_event, by_name.get(phase.cancel.resumes_at), depth + 1)
        self.close_phase(phase, depth)
        if phase.repeat and first and last and first != last:
            self.edge(last, first, "loop", label=f"next: {phase.repeat}")
        return first, last

    def cancel_path(self, phase: Phase, event: Event | None, resume: str | None, depth: int) -> list[str]:
        """Exception node, to the after_cancel event, to the event where the loop resumes; the ids of the path's
        nodes in that order ([] when none was drawn)."""
        handler = self.event_node(event, depth) if event is not None else None
        if handler is None and resume is None:
            return []  # both ends were filtered out (hide_empty/focus): the exception would point nowhere
        raised = self.raise_node(phase, depth)
        if handler:
            self.edge(raised, handler, "cancel")
        if resume:
            self.edge(handler or raised, resume, "cancel")
        return [node for node in (raised, handler, resume) if node]

    # -- drawing hooks ------------------------------------------------------------------------

    def open_phase(self, phase: Phase, depth: int) -> None:
        """Start drawing a phase (a cluster or subgraph)."""
        raise NotImplementedError

    def close_phase(self, phase: Phase, depth: int) -> None:
        """Finish drawing a phase."""
        raise NotImplementedError

    def event_node(self, event: Event, depth: int) -> str:
        """Draw an event; return its node id."""
        raise NotImplementedError

    def work_node(self, work: Work, depth: int) -> str:
        """Draw a piece of work between events; return its node id."""
        raise NotImplementedError

    def raise_node(self, phase: Phase, depth: int) -> str:
        """Draw the node standing for the phase's cancel exception; return its id."""
        raise NotImplementedError

    def edge(self, tail: str, head: str, kind: EdgeKind, label: str | None = None) -> None:
        """Draw an edge of the given kind."""
        raise NotImplementedError
