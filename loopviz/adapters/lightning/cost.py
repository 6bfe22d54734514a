"""What tracing a Lightning trainer adds per firing and per handler call on this machine (`loopviz.trace.cost`).

The stand-in is a pair of small trainers of their own (no logger, progress bar, model summary or checkpointing; a
module of Lightning's base class, attached without a fit), built once per process, set to the training stage: a
training batch's hooks are dispatched as Lightning's loops dispatch them, `_call_callback_hooks` then
`_call_lightning_module_hook` (looked up in `lightning.pytorch.trainer.call` at each run: the tracer's wrappers while
it traces), traced by a `LightningTracer` and untraced. One trainer has no callback; the other has two whose handlers
of every hook do nothing (the module handles none). Each hook is followed by another, so each dispatch pair is one
firing in the tracer's sense, as in a fit. Measured once per process for each clock.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import warnings
from typing import Any, Callable

import lightning.pytorch as pl

from loopviz.trace.cost import measure, on_test_clock, unmeasured

__all__ = ["cost_measure", "BATCH_HOOKS"]

# one training batch's hooks dispatched to the callbacks then the module, as Lightning's loops do, with their arguments
# after (trainer, module); each differs from the one before, so each is a new firing (a hook dispatched again at once
# would join the pending firing of that hook)
BATCH_HOOKS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("on_train_batch_start", (None, 0)),
    ("on_before_backward", (None,)),
    ("on_after_backward", ()),
    ("on_before_optimizer_step", (None,)),
    ("on_before_zero_grad", (None,)),
    ("on_train_batch_end", (None, None, 0)),
)
_HANDLERS = 2  # callbacks with a handler for every hook in the stand-in with handlers
# A Lightning dispatch pair costs some 11 us untraced (on the machine it was written on), four times what tracing adds
# to it: more rounds of shorter runs than `loopviz.trace.cost`'s defaults, so that each configuration's fastest is a
# quiet one (some 0.15 s in all)
_ROUNDS, _BATCHES = 15, 20
_TRIES = 3  # measured again when a figure comes out 0 (the noise swamped it: tracing costs something)
_MEASURED: dict[str, dict[str, float]] = {}  # clock name -> its figures, once measured in this process


class _Handles(pl.Callback):
    """A handler that does nothing for every hook of the stand-in's batch."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None: pass
    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None: pass
    def on_after_backward(self, trainer: Any, pl_module: Any) -> None: pass
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None: pass
    def on_before_zero_grad(self, trainer: Any, pl_module: Any, optimizer: Any) -> None: pass
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None: pass


@contextlib.contextmanager
def _silent() -> Any:
    """Lightning's messages (all logged) and warnings off while a stand-in trainer is built."""
    logs = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


@functools.lru_cache(maxsize=1)
def _stand_ins() -> dict[int, pl.Trainer]:
    """The stand-in trainers by how many handlers each hook has (0 or 2), built once per process: on the CPU, quiet,
    writing nothing (their root, a temporary directory, is deleted at once), a module attached without a fit and set to
    the training stage, as a fit's batches run."""
    from lightning.pytorch.trainer.states import RunningStage

    trainers = {}
    with _silent(), tempfile.TemporaryDirectory(prefix="loopviz-lightning-cost-") as root:
        for handlers in (0, _HANDLERS):
            trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=root,
                                 callbacks=[_Handles() for _ in range(handlers)])
            trainer.strategy.connect(pl.LightningModule())
            trainer.state.stage = RunningStage.TRAINING
            trainers[handlers] = trainer
    return trainers


def _stand_in(clock: str) -> tuple[Callable[[int], list[Callable[[], Any]]], Callable[[int], Any]]:
    """The stand-in's events and tracing (`loopviz.trace.cost.measure`) for traces on `clock`."""
    from lightning.pytorch.trainer import call as pl_call

    from loopviz.adapters.lightning.tracer import LightningTracer
    from loopviz.trace.clock import make_clock

    trainers = _stand_ins()

    def events(handlers: int) -> list[Callable[[], Any]]:
        trainer = trainers[handlers]
        callbacks, module_hook = pl_call._call_callback_hooks, pl_call._call_lightning_module_hook  # traced or not

        def firing(hook: str, args: tuple[Any, ...]) -> Callable[[], Any]:
            def fire() -> None:
                callbacks(trainer, hook, *args)
                module_hook(trainer, hook, *args)
            return fire

        return [firing(hook, args) for hook, args in BATCH_HOOKS]

    def tracing(handlers: int) -> LightningTracer:
        tracer = LightningTracer(trainers[handlers], clock=make_clock(clock))
        tracer.trace._measure_cost = None  # its own trace is never measured (nor read)
        return tracer

    return events, tracing


def _measured(clock: str) -> dict[str, Any]:
    """The stand-in's figures for traces on `clock`, measured on the first call for each clock in this process."""
    from loopviz.adapters.lightning import tracer

    found = _MEASURED.get(clock)
    if found is None:
        if tracer._ACTIVE:  # its wrappers would be in the untraced runs, and the traced runs on their slow path
            return unmeasured("another Lightning trace was recording when this one was first read; the stand-in "
                              "loop cannot be measured alone then")
        events, tracing = _stand_in(clock)
        found = measure(events, tracing, handlers=_HANDLERS, rounds=_ROUNDS, batches=_BATCHES)
        for _ in range(_TRIES - 1):
            if found["per_firing_ns"] > 0 and found["per_call_ns"] > 0:
                break
            found = measure(events, tracing, handlers=_HANDLERS, rounds=_ROUNDS, batches=_BATCHES)
        _MEASURED[clock] = found
    return dict(found)


def cost_measure(clock: str, test_clock: bool) -> Callable[[], dict[str, Any]]:
    """What a trace on `clock` (a clock kind's name) calls, when first read, to learn what its recording cost;
    `test_clock`: the trace ran on a `now` given by the caller. (Lightning traces record no changes nor waits:
    `loopviz.adapters.lightning.trace` refuses both.)"""
    if test_clock:
        return on_test_clock
    return functools.partial(_measured, clock)
