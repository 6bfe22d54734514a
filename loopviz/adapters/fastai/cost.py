"""What `learn.trace()` adds per firing and per handler call on this machine (`loopviz.trace.cost`).

The stand-in is a learner of its own (a one-weight model, no loaders' items drawn, no default callbacks) that
dispatches a training batch's events through fastai's own `Learner.__call__`, each batch followed by a small model's
forward and backward (`loopviz.trace.cost.batch_work`), traced and untraced: with no callback, then with callbacks
whose handlers do nothing. Measured once per process for each set of options.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from fastai.callback.core import Callback
from fastai.learner import Learner

from loopviz.trace.cost import measure, on_test_clock, unmeasured

__all__ = ["cost_measure"]

# one training batch's events, as fastai fires them
BATCH_EVENTS = ("before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
                "after_step", "after_batch")
_HANDLERS = 2  # callbacks with a handler for every event in the stand-in with handlers


class _Handles(Callback):
    """A handler that does nothing for every event of a batch."""

    def before_batch(self) -> None: pass
    def after_pred(self) -> None: pass
    def after_loss(self) -> None: pass
    def before_backward(self) -> None: pass
    def after_backward(self) -> None: pass
    def before_step(self) -> None: pass
    def after_step(self) -> None: pass
    def after_batch(self) -> None: pass


def _stand_in(callbacks: int) -> Learner:
    """A learner of a one-weight model with `callbacks` callbacks handling every batch event, and no others."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from torch import nn

    loaders = DataLoaders(DataLoader([0.0], bs=1), DataLoader([0.0], bs=1))
    return Learner(loaders, nn.Linear(1, 1), loss_func=nn.MSELoss(), default_cbs=False,
                   cbs=[_Handles() for _ in range(callbacks)])


@functools.lru_cache(maxsize=16)
def _measured(changes: bool, ranges: bool, clock: str) -> tuple[tuple[str, float], ...]:
    """The stand-in's figures for one set of options (measured on the first call of each)."""
    from loopviz.adapters.fastai.tracer import TraceSession

    learners = {0: _stand_in(0), _HANDLERS: _stand_in(_HANDLERS)}

    def events(handlers: int) -> list[Callable[[], Any]]:
        return [functools.partial(learners[handlers], name) for name in BATCH_EVENTS]

    def tracing(handlers: int) -> TraceSession:
        session = TraceSession(learners[handlers], clock=clock, changes=changes, ranges=ranges)
        session.trace._measure_cost = None  # its own trace is never measured (nor read)
        return session

    return tuple(measure(events, tracing, handlers=_HANDLERS).items())


def cost_measure(changes: bool, tensors: bool, ranges: bool, waits: bool, clock: str,
                 test_clock: bool) -> Callable[[], dict[str, Any]]:
    """What a trace with these options calls, when first read, to learn what its recording cost."""
    if test_clock:
        return on_test_clock
    if tensors:
        return lambda: unmeasured("with tensors=True the cost grows with the model's tensors; not estimated")
    if waits:
        return lambda: unmeasured("with waits=True the cost depends on the GPU work waited for; not estimated")
    return lambda: dict(_measured(changes, ranges, clock))
