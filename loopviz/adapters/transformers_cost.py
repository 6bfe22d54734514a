"""What tracing a Hugging Face Trainer adds per firing and per handler call on this machine (`loopviz.trace.cost`).

The stand-in is a Trainer of its own (a one-weight model on the CPU, nothing logged, saved or shown; its output
folder a temporary one, removed) whose callback handler dispatches a training step's events through the Trainer's own
`CallbackHandler`, traced by this adapter's tracer and untraced: with no callback, then with two whose handlers do
nothing. Measured once per process for each clock.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from typing import Any, Callable

from loopviz.trace.cost import measure, on_test_clock

__all__ = ["cost_measure"]

# one training step's events, as the Trainer fires them
STEP_EVENTS = ("on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end")
_HANDLERS = 2


def _stand_in(folder: str) -> Any:
    """A Trainer of a one-weight model whose callback handler holds no callback."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Handles(TrainerCallback):
        """Handlers that do nothing for every event of a step."""

        def on_step_begin(self, args, state, control, **kwargs): pass
        def on_pre_optimizer_step(self, args, state, control, **kwargs): pass
        def on_optimizer_step(self, args, state, control, **kwargs): pass
        def on_step_end(self, args, state, control, **kwargs): pass

    args = TrainingArguments(output_dir=folder, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                             logging_strategy="no", eval_strategy="no")
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=args)
    trainer.callback_handler.callbacks = []
    trainer.loopviz_stand_in_handlers = [Handles() for _ in range(_HANDLERS)]
    return trainer


@functools.lru_cache(maxsize=4)
def _measured(clock: str) -> tuple[tuple[str, float], ...]:
    """The stand-in's figures for one clock (measured on the first call)."""
    from loopviz.adapters.transformers import trace_trainer
    from loopviz.trace.clock import make_clock

    folder = tempfile.mkdtemp(prefix="loopviz-cost-")
    try:
        trainer = _stand_in(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # (nothing is written there: the stand-in never trains nor saves)
    handler, state, control = trainer.callback_handler, trainer.state, trainer.control
    stand_in_handlers = trainer.loopviz_stand_in_handlers

    def events(count: int) -> list[Callable[[], Any]]:
        handler.callbacks = stand_in_handlers[:count]
        return [functools.partial(getattr(handler, name), trainer.args, state, control) for name in STEP_EVENTS]

    def tracing(count: int) -> Any:
        handler.callbacks = stand_in_handlers[:count]
        tracer = trace_trainer(trainer, clock=make_clock(clock))
        tracer.trace._measure_cost = None  # its own trace is never measured (nor read)
        return tracer

    return tuple(measure(events, tracing, handlers=_HANDLERS).items())


def cost_measure(clock: str, test_clock: bool) -> Callable[[], dict[str, Any]]:
    """What a Trainer's trace calls, when first read, to learn what its recording cost."""
    if test_clock:
        return on_test_clock
    return lambda: dict(_measured(clock))
