"""The Lightning adapter: the loops `Trainer.fit`, `validate`, `test` and `predict` run, and traces of them.

Targets: a `Trainer` or a `LightningModule`. The spec needs both, so each finds the other: a module uses the
trainer it is attached to (else the callbacks a default `Trainer()` would have), a trainer uses the module it
last ran (else only Lightning's own hooks are listed, with no module handlers).

    loopviz.show(model)                                   # or loopviz.show(trainer, loop="validate")
    spec = lightning_spec(trainer, model, loop="fit", cbs=[MyCallback()])
    with loopviz.tracing(trainer) as t:                   # or loopviz.tracing(model): any trainer running it
        trainer.fit(model, train_dl, val_dl)

Lightning dispatches every hook through the functions of `lightning.pytorch.trainer.call`: callbacks (in
`trainer.callbacks` order), then the module, for most hooks; the module alone for its own (configure_optimizers,
optimizer_step, training_step through the strategy...). A traced hook is one event however many of these calls
it takes; its handlers are the callbacks and the module when they override Lightning's base (no-op) hook.

`hooks` holds who each hook is dispatched to, `spec` the static loops, `tracer` the tracing.
"""
from __future__ import annotations

import importlib
import tempfile
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from loopviz.adapters.lightning.hooks import FRAMEWORK, LOOPS, handler_objects, hook_owners, overrides
from loopviz.adapters.lightning.spec import default_trainer, lightning_spec, quiet
from loopviz.adapters.lightning.tracer import LightningTracer
from loopviz.adapters.torch_loader import first_loader, torch_data_loop
from loopviz.dataloop import DataLoop
from loopviz.errors import LoopvizError
from loopviz.model import LoopSpec
from loopviz.trace.trace import Trace

__all__ = ["LOOPS", "FRAMEWORK", "lightning_spec", "LightningTracer", "loop_spec", "trace", "fit", "callback",
           "hook_owners", "handler_objects", "overrides", "default_trainer"]


def _pair(obj: Any) -> tuple[pl.Trainer | None, Any]:
    """(trainer, module) for a Trainer or a LightningModule target: each with the other when attached."""
    if isinstance(obj, pl.LightningModule):
        return obj._trainer, obj
    if isinstance(obj, pl.Trainer):
        return obj, obj.lightning_module
    raise LoopvizError(f"expected a Lightning Trainer or LightningModule, not a {type(obj).__name__}.")


def loop_spec(obj: Any, loop: str = "fit", cbs: Sequence[Any] = (), model: Any = None) -> LoopSpec:
    """The loop a Trainer or LightningModule runs (fit, validate, test, predict), with `cbs` previewed; `model`: the
    module a trainer will run (a trainer knows its module only once it has run one)."""
    trainer, module = _pair(obj)
    if model is not None:
        if not isinstance(obj, pl.Trainer):
            raise LoopvizError("model= goes with a Trainer: loopviz.show(trainer, model=module) shows the loop that "
                               "trainer runs on that module.")
        if not isinstance(model, pl.LightningModule):
            raise LoopvizError(f"model must be a LightningModule, not a {type(model).__name__}.")
        module = model
    return lightning_spec(trainer, module, loop, cbs)


def trace(obj: Any, clock: str = "auto", changes: bool = False, waits: bool = False, **options: Any) -> Trace:
    """The `Trace` of the hooks a Trainer (or any trainer running a LightningModule) calls inside `with` it (or between
    its start() and stop()); `data=True` also times its loaders' loops (the dataset's items and the collate function,
    in the worker processes too)."""
    from loopviz.trace.clock import make_clock

    if changes:
        raise LoopvizError("state changes are recorded for fastai learners only; trace without changes.")
    if waits:
        raise LoopvizError("waits for the GPU are recorded for fastai learners only; trace without waits.")
    _pair(obj)
    return LightningTracer(obj, clock=make_clock(clock), **options).trace


def data_loop(trainer: pl.Trainer, which: str = "train") -> DataLoop:
    """The loop the trainer's `which` loader ('train' or 'val') runs for each batch, once a fit made it: the
    dataset's `__getitem__` and the loader's `collate_fn`, where its settings say (the first loader of several)."""
    from loopviz.checks import check_choice

    check_choice("which", which, ["train", "val"])
    if not isinstance(trainer, pl.Trainer):
        raise LoopvizError(f"{type(trainer).__name__} is not a Lightning Trainer: pass the trainer a fit ran with.")
    loaders = trainer.train_dataloader if which == "train" else trainer.val_dataloaders
    loader, several = first_loader(loaders)
    if loader is None:
        raise LoopvizError(f"this trainer has no {which} loader yet: Lightning makes its loaders when a fit starts; "
                           f"ask after trainer.fit(...).")
    notes = ("Lightning moves each batch to the device after the loader (transfer_batch_to_device and its hooks)",
             *(("several loaders: the first shown",) if several else ()))
    return torch_data_loop(loader, which, FRAMEWORK, notes)


def fit(obj: Any, epochs: int, cbs: Sequence[Any] = ()) -> None:
    """Fit a trainer's attached module (or a module with its own dataloaders) for `epochs` epochs, with `cbs` added."""
    trainer, module = _pair(obj)
    if module is None:
        raise LoopvizError("this Trainer has no LightningModule attached; give the module (whose train_dataloader "
                           "gives the data) as the target instead.")
    if trainer is None or isinstance(obj, pl.LightningModule):
        if not overrides(module, "train_dataloader"):
            raise LoopvizError(f"{type(module).__name__} defines no train_dataloader, so it cannot be fitted alone; "
                               "define one, or give a trainer that ran it.")
        with tempfile.TemporaryDirectory(prefix="loopviz-") as root:
            with quiet():
                trainer = pl.Trainer(max_epochs=epochs, callbacks=list(cbs), logger=False, enable_checkpointing=False,
                                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
            trainer.fit(module)
        return
    if trainer.datamodule is None and not overrides(module, "train_dataloader"):
        raise LoopvizError(f"{type(module).__name__} defines no train_dataloader and the trainer has no datamodule, "
                           "so there is no data to fit on.")
    trainer.callbacks.extend(cbs)
    trainer.fit_loop.max_epochs = trainer.current_epoch + epochs
    trainer.fit(module, datamodule=trainer.datamodule)


def callback(name: str) -> Callback:
    """A Lightning callback from `module:Class` or the name of one in lightning.pytorch.callbacks."""
    module_name, _, cls_name = name.rpartition(":")
    module = importlib.import_module(module_name or "lightning.pytorch.callbacks")
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        raise LoopvizError(f"--cbs {name}: {module.__name__} has no Lightning Callback class {cls_name}.")
    return cls()
