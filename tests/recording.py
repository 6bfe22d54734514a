"""Records what a real fastai fit fires, to check loopviz's static spec against reality."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pytest
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback


class EventLog(Callback):
    "Records every event as fastai dispatches it (first in call order, through __call__)"
    order = -1000

    def __init__(self):
        self.firings: list[tuple[str, bool, list[str]]] = []

    def __call__(self, event_name: str) -> None:
        self.firings.append((event_name, bool(getattr(self.learn, "training", True)), []))


@dataclass
class Recording:
    log: EventLog = field(default_factory=EventLog)

    @property
    def events(self) -> list[str]:
        return [name for name, _, _ in self.log.firings]

    def handlers_by_key(self) -> dict[tuple[str, bool | None], list[str]]:
        """Callback classes that ran, per (event, training flag for batch events): one list per key."""
        by_key: dict[tuple[str, bool | None], list[str]] = {}
        for name, training, ran in self.log.firings:
            key = (name, training if name in fastai_core._inner_loop else None)
            assert by_key.setdefault(key, ran) == ran, f"{key} ran different callbacks on different firings"
        return by_key


@contextmanager
def recording(learn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    """Attach an EventLog and note which callback handlers really run (via fastai's getcallable)."""
    rec = Recording()
    original = fastai_core.getcallable

    def spying_getcallable(obj, attr):
        if isinstance(obj, Callback) and hasattr(obj, attr) and rec.log.firings:
            rec.log.firings[-1][2].append(type(obj).__name__)
        return original(obj, attr)

    monkeypatch.setattr(fastai_core, "getcallable", spying_getcallable)
    learn.add_cb(rec.log)
    try:
        yield rec
    finally:
        learn.remove_cb(rec.log)
        monkeypatch.setattr(fastai_core, "getcallable", original)


def expected_handlers(spec, exclude: set[str]) -> dict[tuple[str, bool | None], list[str]]:
    """The spec's running callbacks per (event, training flag for batch events), cancel-only events left out."""
    out: dict[tuple[str, bool | None], list[str]] = {}
    for event in spec.events():
        if event.role == "cancel" or event.name == "after_create":
            continue
        key = (event.name, event.mode == "train" if event.name in fastai_core._inner_loop else None)
        out[key] = [h.callback.cls for h in event.running if h.callback.cls not in exclude]
    return out


def expected_sequence(spec, n_epoch: int, n_train: int, n_valid: int) -> list[str]:
    """The event sequence the spec predicts for a run with no cancel, from the model alone."""
    from loopviz.model import Event, Phase

    def expand(phase: Phase) -> list[str]:
        if phase.name == "create":
            return []
        times = {"epoch": n_epoch, "batch": n_train if "dls.train" in (phase.repeat or "") else n_valid}.get(phase.name, 1)
        if phase.repeat is None:
            times = 1
        once: list[str] = []
        for step in phase.steps:
            if isinstance(step, Event) and step.role != "cancel":
                once.append(step.name)
            elif isinstance(step, Phase):
                once.extend(expand(step))
        return once * times

    return [name for phase in spec.phases for name in expand(phase)]
