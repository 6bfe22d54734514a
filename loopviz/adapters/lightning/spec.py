"""The static spec: the hooks Trainer.fit, validate, test and predict call, in order, with their handlers."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from os import PathLike
from typing import Any, Iterator, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint

from loopviz.adapters.lightning.hooks import (
    EPOCH_END, FRAMEWORK, LOADERS, LOOPS, RUN_HOOKS, handler_objects, hook_owners, overrides, owner_base,
)
from loopviz.errors import LoopvizError
from loopviz.generic import callback_info, cancel, handler, phase, work
from loopviz.generic import loop_spec as generic_loop_spec
from loopviz.model import CallbackInfo, CancelPath, Event, LoopSpec, Mode, Phase, Role, Step

__all__ = ["lightning_spec", "default_trainer", "quiet"]


def _ordered(callbacks: list[Any]) -> list[Any]:
    """As Lightning orders `trainer.callbacks`: checkpoint callbacks last."""
    return [cb for cb in callbacks if not isinstance(cb, Checkpoint)] + [cb for cb in callbacks if isinstance(cb, Checkpoint)]


def _with_model_callbacks(callbacks: list[Any], module: Any) -> list[Any]:
    """The callbacks after fit attaches `module.configure_callbacks()` (they replace the trainer's of their type)."""
    if module is None or not overrides(module, "configure_callbacks"):
        return callbacks
    extra = module.configure_callbacks()
    extra = [extra] if isinstance(extra, Callback) else list(extra or [])
    if any(cb in callbacks for cb in extra):
        return callbacks  # the trainer already holds them (it ran this module)
    kept = [cb for cb in callbacks if not any(isinstance(cb, type(new)) for new in extra)]
    return _ordered(kept + extra)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's informational messages off while a default Trainer is built for a spec."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def default_trainer() -> pl.Trainer:
    """A `Trainer()` as a user would make it (its default callbacks), on the CPU, without a logger."""
    with quiet():
        return pl.Trainer(logger=False, accelerator="cpu", devices=1)


@dataclass
class _Builder:
    """Builds events and phases for one trainer, module and callback list."""

    trainer: pl.Trainer
    module: Any
    datamodule: Any
    callbacks: list[Any]
    infos: dict[int, CallbackInfo]
    ckpt_path: str | None = None  # the checkpoint a run resumes from (fit(ckpt_path=...)), if any

    def ev(self, name: str, description: str, mode: Mode | None = None, role: Role = "body",
           cancel_path: CancelPath | None = None, only: type | None = None) -> Event:
        """The event `name` with its handlers, in Lightning's call order (`only`: those of this class, for a hook
        whose dispatches to the module and the callbacks are apart)."""
        found = [handler(obj, name, self.infos[id(obj)], owner_base(obj))
                 for obj in handler_objects(self.callbacks, self.module, name, self.datamodule)
                 if only is None or isinstance(obj, only)]
        owner = hook_owners(name)
        if only is not None:  # (the description says whose part of the hook this is)
            text = description
        elif owner == EPOCH_END:
            text = f"{description} Dispatched to the callbacks, then the module, then EarlyStopping and checkpoints."
        else:
            text = f"{description} Dispatched to {owner}."
        return Event(name, text, [h for h in found if h is not None], role=role, mode=None if name in RUN_HOOKS else mode,
                     cancel=cancel_path)

    def has(self, hook: str) -> bool:
        """True when the module (or, for prepare_data, the datamodule) overrides `hook`: Lightning calls it only then."""
        return (self.module is not None and overrides(self.module, hook)) or (
            hook == "prepare_data" and self.datamodule is not None and overrides(self.datamodule, hook))

    def manual(self) -> bool:
        """True when the module optimizes by hand (automatic_optimization=False): Lightning steps no scheduler."""
        return self.module is not None and not self.module.automatic_optimization

    def loader(self, stage: str, in_fit: bool = False) -> list[Step]:
        """The `{stage}_dataloader` event: the datamodule's when one that defines it is attached, the module's when
        the trainer's last run of this loop took its data from the module (it was given no dataloader)."""
        name = f"{'val' if stage == 'validation' else stage}_dataloader"
        mode: Mode = "train" if stage == "train" else "valid"
        if self.datamodule is not None and overrides(self.datamodule, name):
            return [self.ev(name, f"LightningDataModule.{name}: the loop's dataloader.", mode)]
        if self.module is not None and overrides(self.module, name) and _data_from(self.trainer, stage, in_fit) is self.module:
            return [self.ev(name, f"LightningModule.{name}: the loop's dataloader (the loop was given none).", mode)]
        return []

    def saves(self, point: str) -> list[Step]:
        """The checkpoint's hooks where the trainer's checkpoint callbacks save at `point`: 'batch' (every N training
        steps, in on_train_batch_end), 'validation' (in on_validation_end) or 'epoch' (in on_train_epoch_end)."""
        validates = _validates(self.module, self.trainer)
        if not any(point in _save_points(cb, self.trainer, validates) for cb in self.callbacks if isinstance(cb, Checkpoint)):
            return []
        where, mode = {"batch": ("on_train_batch_end", "train"), "validation": ("on_validation_end", "valid"),
                       "epoch": ("on_train_epoch_end", "train")}[point]
        when = " (on the steps its every_n_train_steps or train_time_interval says)" if point == "batch" else ""
        return [phase("save_checkpoint", "Save checkpoint", [
            self.ev("state_dict", "Each callback's state_dict (called directly, in trainer.callbacks order), then the "
                                  "datamodule's: their state in the checkpoint.", mode),
            self.ev("on_save_checkpoint", "The callbacks' (called directly), then the module's: the checkpoint before "
                                          "it is written.", mode)],
            mode=mode, note=f"inside the checkpoint callback's {where}{when}, before the module's {where}")]

    def restores(self) -> list[Step]:
        """The hooks of restoring `ckpt_path` (after setup and configure_model): the module's on_load_checkpoint,
        the datamodule's state, the callbacks' on_load_checkpoint and states, as Lightning calls them."""
        if not self.ckpt_path:
            return []
        data = self.datamodule is not None and overrides(self.datamodule, "state_dict")
        module_load = "The module's, with the loaded checkpoint, before its weights are loaded."
        callbacks_load = "Each callback's, called directly (in trainer.callbacks order), with the checkpoint."
        steps: list[Step] = []
        if data:  # the datamodule's state comes between the module's and the callbacks' on_load_checkpoint
            steps += [self.ev("on_load_checkpoint", module_load, only=pl.LightningModule),
                      self.ev("load_state_dict", "The datamodule's state from the checkpoint (when it saved one).",
                              only=pl.LightningDataModule),
                      self.ev("on_load_checkpoint", callbacks_load, only=Callback)]
        else:
            steps.append(self.ev("on_load_checkpoint", f"{module_load} Then each callback's, called directly."))
        steps.append(self.ev("load_state_dict", "Each callback whose state the checkpoint holds, called directly.",
                             only=Callback))
        return [phase("restore", "Restore checkpoint", steps,
                      note=f"ckpt_path={self.ckpt_path}: the module, datamodule and callbacks are restored after setup; "
                           "the optimizers and loops after on_fit_start. A checkpoint saved mid-epoch resumes inside "
                           "its epoch: no sanity check, and that epoch's on_train_epoch_start is not called")]

    def transfer(self, mode: Mode) -> list[Step]:
        """Moving a batch to the device (the module's data hooks)."""
        return [self.ev("on_before_batch_transfer", "The batch as the dataloader gave it.", mode),
                self.ev("transfer_batch_to_device", "Moves the batch to the device.", mode),
                self.ev("on_after_batch_transfer", "The batch on the device.", mode)]

    def evaluation(self, stage: str, label: str, repeat: str, in_fit: bool = False) -> Phase:
        """The validation, test or predict loop over its dataloader."""
        mode: Mode = "valid"
        step = f"{stage}_step"
        batch = [*self.transfer(mode), self.ev(f"on_{stage}_batch_start", "Before the step.", mode),
                 self.ev(step, f"LightningModule.{step} (through the strategy), without gradients.", mode),
                 self.ev(f"on_{stage}_batch_end", "After the step, with its output.", mode)]
        steps: list[Step] = []
        if in_fit:
            k = self.trainer.accumulate_grad_batches
            steps.append(self.ev("on_validation_model_zero_grad", "Gradients are zeroed before validating" + (
                f" (skipped when validation falls on a batch that only accumulates gradients: accumulate_grad_batches"
                f"={k})." if k > 1 else "."), mode))
        steps.append(self.ev(f"on_{stage}_model_eval", "Its default calls model.eval() (the module's train(False)).",
                             mode))
        steps += [self.ev(f"on_{stage}_start", f"The {stage} loop starts.", mode),
                  self.ev(f"on_{stage}_epoch_start", f"A pass over the {stage} dataloader.", mode),
                  phase(f"{stage}_batch", f"{stage.title()} batch", [work("data", "next(dataloader)"), *batch],
                        repeat=f"for each {stage} batch ({repeat})", mode=mode),
                  self.ev(f"on_{stage}_epoch_end", "The pass is over.", mode),
                  self.ev(f"on_{stage}_end", f"The {stage} loop ends.", mode)]
        if stage != "predict" and self.has(f"on_{stage}_model_train"):
            steps.append(self.ev(f"on_{stage}_model_train", "Back to model.train() (called only when overridden).", mode))
        return phase(stage, label, steps, mode=mode)

    def optimizer_step(self, accumulating: bool) -> list[Step]:
        """The closure's hooks (training_step, zero_grad, backward) and, on stepping batches, optimizer_step around them."""
        mode: Mode = "train"
        # Lightning's strategy backward runs on_before_backward, the module's backward (loss.backward()), then
        # on_after_backward: its own dispatch opens first, but a `backward` override runs after on_before_backward
        backward = Phase("backward", "Backward", [
            self.ev("on_before_backward", "The loss is ready.", mode),
            self.ev("backward", "LightningModule.backward(loss): loss.backward(), gradients are computed (run by the "
                                "strategy's backward between on_before_backward and on_after_backward; a trace times "
                                "the strategy's backward here, those two hooks included).", mode),
            self.ev("on_after_backward", "Gradients are ready.", mode)], mode=mode, minor=True,
            note="the strategy's backward: on_before_backward, the module's backward, on_after_backward")
        closure: list[Step] = [
            self.ev("training_step", "LightningModule.training_step (through the strategy): the loss (your forward "
                                     "runs inside it, where it calls self(...)).", mode),
            self.ev("on_before_zero_grad", "Before the gradients are zeroed.", mode),
            self.ev("optimizer_zero_grad", "optimizer.zero_grad().", mode), backward]
        if accumulating:
            return closure
        # optimizer_step fires first and the closure's hooks inside it: a phase of their own says so
        return [self.ev("optimizer_step", "LightningModule.optimizer_step: optimizer.step(closure) runs the closure "
                                          "below, then steps.", mode),
                Phase("closure", "Closure (run by optimizer.step, inside optimizer_step)", closure, mode=mode),
                self.ev("on_before_optimizer_step", "Gradients are final for this step.", mode),
                self.ev("configure_gradient_clipping",
                        f"Its default calls self.clip_gradients(optimizer, gradient_clip_val="
                        f"{self.trainer.gradient_clip_val}), which clips only when the value is set.", mode),
                work("optimizer.step()", "optimizer.step()", "The parameters are updated.")]

    def training_batch(self, validates: bool, stop: CancelPath) -> Phase:
        """One training batch: transfer, the step (or accumulation), and validation when it is due."""
        mode: Mode = "train"
        k = self.trainer.accumulate_grad_batches
        manual = self.manual()
        stepped = not manual and any(config.interval == "step" for config in self.trainer.lr_scheduler_configs)
        ends = ("Before the step. Returning -1 ends the epoch: the rest of this batch, its on_train_batch_end and this "
                "epoch's validation are skipped" + (", the 'step' LR schedulers still step (lr_scheduler_step), then "
                                                    "on_train_epoch_end." if stepped else ", on to on_train_epoch_end."))
        steps: list[Step] = [work("data", "next(dataloader)"), *self.transfer(mode),
                             self.ev("on_train_batch_start", ends, mode)]
        if manual:
            steps.append(phase("manual", "Manual optimization", [
                self.ev("training_step", "LightningModule.training_step (through the strategy), which optimizes.", mode),
                self.ev("on_before_backward", "Inside training_step, once per self.manual_backward(loss) call.", mode),
                self.ev("backward", "LightningModule.backward(loss), run by each self.manual_backward(loss) (not "
                                    "through the strategy's dispatch: a trace has no firing of it).", mode),
                self.ev("on_after_backward", "Inside training_step, once per manual_backward: gradients are ready.",
                        mode),
                self.ev("on_before_optimizer_step", "Inside training_step, once per optimizer.step() call (each "
                                                    "optimizer's).", mode)],
                mode=mode, note="automatic_optimization=False: the hooks fire inside training_step, each time it calls "
                                "self.manual_backward(loss) and an optimizer's step()"))
        elif k > 1:
            steps += [phase("accumulate", "Accumulate", self.optimizer_step(True), mode=mode,
                            note=f"accumulate_grad_batches={k}: batches that are not the last of a group of {k} only "
                                 "accumulate gradients (zero_grad on the first of each group)"),
                      phase("step", "Optimizer step", self.optimizer_step(False), mode=mode,
                            note=f"on the last batch of each group of {k} and on the epoch's last batch "
                                 "(zero_grad only where the group has one batch)")]
        else:
            steps += [Phase("step", "Optimizer step", self.optimizer_step(False), mode=mode, minor=True)]
        if stepped:
            steps.append(self.ev("lr_scheduler_step", "Steps the LR schedulers of interval 'step', after the optimizer "
                                 "step (those of interval 'epoch' step after on_train_epoch_end).", mode))
        steps += [self.ev("on_train_batch_end", "After the step, with its output.", mode), *self.saves("batch")]
        if validates:
            every = self.trainer.val_check_interval
            limit = f"limit_val_batches={self.trainer.limit_val_batches}"
            inner = self.evaluation("validation", "Validation loop", limit, True).steps
            # a checkpoint saved after validation is saved in on_validation_end, before on_validation_model_train
            back = [step for step in inner[-1:] if getattr(step, "name", "") == "on_validation_model_train"]
            inner = inner[:len(inner) - len(back)] + self.saves("validation") + back
            steps.append(phase("validation", "Validation", inner,
                               mode="valid", note=f"when due: val_check_interval={every}, check_val_every_n_epoch="
                                                  f"{self.trainer.check_val_every_n_epoch}; at the latest after the "
                                                  "epoch's last batch"))
        return phase("train_batch", "Training batch", steps, mode=mode, cancel=stop,
                     repeat=f"for each training batch (limit_train_batches={self.trainer.limit_train_batches})")


def _saves_at_epoch_end(cb: Any, trainer: pl.Trainer, validates: bool) -> bool:
    """Whether a checkpoint callback saves at on_train_epoch_end (else after validation), as ModelCheckpoint decides."""
    chosen = getattr(cb, "_save_on_train_epoch_end", None)
    if chosen is not None:
        return bool(chosen)
    if getattr(trainer, "_val_check_time_interval", None) is not None or trainer.check_val_every_n_epoch != 1:
        return False
    return not validates or trainer.val_check_interval == 1.0


def _zero_grad() -> Step:
    """The module's gradients zeroed as each loop's stage begins (Trainer._run_stage; after on_fit_start in fit)."""
    return work("zero_grad", "module.zero_grad()", "The module's gradients are zeroed before the loop runs.")


def _data_from(trainer: pl.Trainer, stage: str, in_fit: bool) -> Any:
    """Where the trainer's last run of this loop took its data (Lightning's `_data_source.instance`: the dataloaders
    it was given, the module or the datamodule); None before any run."""
    loops = {"train": ("fit_loop",), "validation": ("fit_loop", "epoch_loop", "val_loop") if in_fit else ("validate_loop",),
             "test": ("test_loop",), "predict": ("predict_loop",)}[stage]
    loop: Any = trainer
    for name in loops:
        loop = getattr(loop, name, None)
    return getattr(getattr(loop, "_data_source", None), "instance", None)


def _save_points(cb: Any, trainer: pl.Trainer, validates: bool) -> set[str]:
    """Where a checkpoint callback saves, as ModelCheckpoint decides: 'batch' (every_n_train_steps or
    train_time_interval), 'epoch' or 'validation' (every_n_epochs, 1 unless a step or time trigger is set)."""
    points = set()
    if (getattr(cb, "_every_n_train_steps", 0) or 0) >= 1 or getattr(cb, "_train_time_interval", None) is not None:
        points.add("batch")
    if (getattr(cb, "_every_n_epochs", 1) or 0) >= 1:
        points.add("epoch" if _saves_at_epoch_end(cb, trainer, validates) else "validation")
    return points


def _validates(module: Any, trainer: pl.Trainer) -> bool:
    """Fit validates when the module has a validation_step (given a val dataloader) and batches are not limited to 0."""
    return (module is None or overrides(module, "validation_step")) and trainer.limit_val_batches != 0


def _fit(b: _Builder) -> Phase:
    """Trainer.fit, in the order Lightning calls its hooks."""
    trainer, validates = b.trainer, _validates(b.module, b.trainer)
    stop = cancel("trainer.should_stop = True", "on_train_epoch_end",
                  description="set by a callback (EarlyStopping...): the epoch ends after this batch and a validation, "
                              f"then training ends (once min_epochs={trainer.min_epochs} and "
                              f"min_steps={trainer.fit_loop.min_steps} are met)")
    steps: list[Step] = [b.ev("configure_callbacks", "The module's callbacks join the trainer's.")]
    steps += [b.ev("prepare_data", "Download or prepare data (called only when overridden).")] if b.has("prepare_data") else []
    steps.append(b.ev("setup", "setup(stage='fit')."))
    steps += [b.ev("configure_model", "Build layers (called only when overridden).")] if b.has("configure_model") else []
    steps += [*b.restores(), b.ev("configure_optimizers", "The optimizers and schedulers."), b.ev("on_fit_start", "Fit starts."),
              _zero_grad()]
    if validates and trainer.num_sanity_val_steps != 0:
        sanity = b.evaluation("validation", "Validation loop", f"num_sanity_val_steps={trainer.num_sanity_val_steps}")
        steps.append(phase("sanity_check", "Sanity check", [
            b.ev("on_sanity_check_start", "A few validation batches before training."), *b.loader("validation", True), sanity,
            b.ev("on_sanity_check_end", "The sanity check is over.")],
            note=f"num_sanity_val_steps={trainer.num_sanity_val_steps} validation batches, when a val dataloader is given"))
    per_epoch = [config for config in trainer.lr_scheduler_configs if config.interval == "epoch"]
    epoch_schedulers = [b.ev("lr_scheduler_step", "Steps the LR schedulers of interval 'epoch' (ReduceLROnPlateau "
                             "reads the epoch's metrics), after every on_train_epoch_end handler, once the epoch ran "
                             "all its batches.", "train")] if per_epoch and not b.manual() else []
    epoch = phase("epoch", "Training epoch", [
        b.ev("on_train_epoch_start", "An epoch starts.", "train"), b.training_batch(validates, stop),
        b.ev("on_train_epoch_end", "The epoch is over (EarlyStopping and checkpoints may act here).", "train"),
        *b.saves("epoch"), *epoch_schedulers],
        repeat=f"for each epoch (max_epochs={trainer.max_epochs}) until trainer.should_stop", mode="train")
    if _no_batches(trainer.limit_train_batches):  # Lightning skips training whole: no loader, no training hook
        steps += [b.ev("on_fit_end", "Fit is over (limit_train_batches=0: no training).")]
    else:
        steps += [*b.loader("train", True), b.ev("on_train_start", "Training starts.", "train"), epoch,
                  b.ev("on_train_end", "Training is over.", "train"), b.ev("on_fit_end", "Fit is over.")]
    steps.append(b.ev("teardown", "teardown(stage='fit').", role="exit"))
    return phase("fit", "Trainer.fit", steps, note="an exception calls the callbacks' on_exception, then ends fit")


def _no_batches(limit: float | int) -> bool:
    """True when a limit_*_batches lets no batch run (0, or 0.0 of the batches): Lightning then skips that loop's
    hooks altogether, its dataloader hook included."""
    return limit == 0


def _evaluate(b: _Builder, stage: str) -> Phase:
    """Trainer.validate, test or predict."""
    limit = {"validation": "val", "test": "test", "predict": "predict"}[stage]
    loop = b.evaluation(stage, f"{stage.title()} loop", f"limit_{limit}_batches={getattr(b.trainer, f'limit_{limit}_batches')}")
    steps: list[Step] = [b.ev("configure_callbacks", "The module's callbacks join the trainer's.")]
    steps += [b.ev("prepare_data", "Download or prepare data (called only when overridden).")] if b.has("prepare_data") else []
    fn = "validate" if stage == "validation" else stage
    steps.append(b.ev("setup", f"setup(stage='{fn}')."))
    steps += [b.ev("configure_model", "Build layers (called only when overridden).")] if b.has("configure_model") else []
    steps += [*b.restores(), _zero_grad()]
    if not _no_batches(getattr(b.trainer, f"limit_{limit}_batches")):  # (0: Lightning skips the whole loop)
        steps += [*b.loader(stage), *loop.steps]
    steps.append(b.ev("teardown", f"teardown(stage='{fn}').", role="exit"))
    return phase(fn, f"Trainer.{fn}", steps, mode="valid")


def lightning_spec(trainer: pl.Trainer | None, module: Any = None, loop: str = "fit", cbs: Sequence[Any] = (),
                   datamodule: Any = None, ckpt_path: str | None = None) -> LoopSpec:
    """The hooks `trainer` calls in `loop` (fit, validate, test, predict) on `module` (and `datamodule`, by default the
    trainer's), with `cbs` previewed; `ckpt_path`: the checkpoint the run resumes from (by default the one the
    trainer's last run resumed from)."""
    if loop not in LOOPS:
        raise LoopvizError(f"loop={loop!r}: a Lightning Trainer runs these loops: {', '.join(LOOPS)}.")
    if module is not None and not isinstance(module, pl.LightningModule):
        raise LoopvizError(f"module must be a LightningModule, not a {type(module).__name__}.")
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise LoopvizError(f"cbs: {type(cb).__name__} is not a lightning.pytorch Callback.")
    assumed = trainer is None
    trainer = trainer if trainer is not None else default_trainer()
    callbacks = _with_model_callbacks(_ordered([*trainer.callbacks, *cbs]), module)
    datamodule = datamodule if datamodule is not None else trainer.datamodule
    owners = [*callbacks, *([module] if module is not None else []), *([datamodule] if datamodule is not None else [])]
    infos = {id(obj): callback_info(obj, order=lambda o, i=i: i, base=owner_base(obj)) for i, obj in enumerate(owners)}
    if ckpt_path is not None and not isinstance(ckpt_path, (str, PathLike)):
        raise LoopvizError(f"ckpt_path must be the path of a checkpoint (a str), not a {type(ckpt_path).__name__}.")
    resumes = str(ckpt_path) if ckpt_path is not None else getattr(trainer, "ckpt_path", None)
    b = _Builder(trainer, module, datamodule, callbacks, infos, resumes)
    body = _fit(b) if loop == "fit" else _evaluate(b, "validation" if loop == "validate" else loop)
    notes = ["Lightning calls hooks through lightning.pytorch.trainer.call: callbacks in trainer.callbacks order, "
             "then the module (on_train_epoch_end: EarlyStopping and checkpoints after the module)."]
    if loop == "fit" and not trainer.lr_scheduler_configs:
        notes.append("With LR schedulers, the module's lr_scheduler_step fires after the optimizer step; it is shown "
                     "once the trainer has run the module (its schedulers are known then).")
    if not resumes:
        notes.append(f"Resuming ({loop}(ckpt_path=...)) restores the checkpoint after setup (on_load_checkpoint, the "
                     "datamodule's and callbacks' states): lightning_spec(trainer, model, ckpt_path=...) shows where.")
    shown = {ev.name for ev in body.events()}
    loaders = [name for name in LOADERS[loop] if module is not None and overrides(module, name) and name not in shown]
    if loaders:
        notes.append(f"{' and '.join(loaders)}: the module's, called when the loop first needs its data (for fit, "
                     "train_dataloader right after on_fit_start) if no dataloader or datamodule was given; shown once "
                     "the trainer has run the loop that way.")
    if module is None:
        notes.append("No LightningModule is attached to this trainer: only the callbacks' handlers are listed; "
                     "show the module (loopviz.show(model)) to see its hooks too, or loopviz.show(trainer, "
                     "model=model) for this trainer's loop on it.")
    if assumed:
        defaults = ", ".join(type(cb).__name__ for cb in trainer.callbacks) or "none"
        notes.append(f"This module is attached to no trainer yet: a default Trainer() is assumed, with its default "
                     f"callbacks ({defaults}); loopviz.show(trainer, model=model) shows your trainer's instead.")
    spec = generic_loop_spec(loop, FRAMEWORK, [], [body], notes=notes)
    spec.callbacks = [infos[id(obj)] for obj in owners]
    return spec


