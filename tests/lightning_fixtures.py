"""A tiny LightningModule, trainers for it, and an independent spy of Lightning's hook dispatch (no loopviz).

The spy wraps the dispatch functions of `lightning.pytorch.trainer.call` itself and, for each hook firing
(consecutive dispatches of one hook at one nesting depth, as Lightning calls callbacks then the module), records
its name and the callbacks and module Lightning's own `is_overridden` says handle it, in call order.
`SpyCallback` overrides every callback hook and records each call it really gets.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
from lightning.pytorch.trainer import call
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, TensorDataset

DIRECT = {"_call_callbacks_state_dict": "state_dict", "_call_callbacks_on_save_checkpoint": "on_save_checkpoint",
          "_call_callbacks_on_load_checkpoint": "on_load_checkpoint", "_call_callbacks_load_state_dict": "load_state_dict"}
STEP_HOOKS = {"training_step", "validation_step", "test_step", "predict_step", "backward"}
CALLBACK_HOOKS = sorted(n for n in vars(Callback) if (n.startswith("on_") or n in ("setup", "teardown"))
                        and n not in ("on_save_checkpoint", "on_load_checkpoint"))


def quiet_lightning() -> None:
    """Lightning's info messages and warnings about tiny data off."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class TinyModule(pl.LightningModule):
    """Two linear layers on random tensors; overrides a few hooks besides the steps."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        self.seen: list[str] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_epoch_end(self) -> None:
        self.seen.append("on_train_epoch_end")

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self.seen.append("on_before_backward")

    def on_validation_epoch_end(self) -> None:
        self.seen.append("on_validation_epoch_end")

    def train_dataloader(self) -> DataLoader:
        return loader()


class ManualModule(TinyModule):
    """Optimizes in training_step itself (automatic_optimization=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(super().training_step(batch, batch_idx))
        opt.step()


class ScheduledModule(TinyModule):
    """With an LR scheduler stepped after every optimizer step."""

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1),
                                                   "interval": "step"}}


class TrainBackModule(TinyModule):
    """Overrides on_validation_model_train (Lightning calls it only then)."""

    def on_validation_model_train(self) -> None:
        super().on_validation_model_train()


class PlateauModule(TinyModule):
    """With a ReduceLROnPlateau on the validation loss, stepped every epoch."""

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "interval": "epoch", "monitor": "val_loss"}}


class TinyData(pl.LightningDataModule):
    """The tests' data as a datamodule, with its own setup and device transfer."""

    def setup(self, stage: str) -> None:
        self.stage = stage

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        return loader()

    def val_dataloader(self) -> DataLoader:
        return loader()

    def test_dataloader(self) -> DataLoader:
        return loader()


class PlainData(pl.LightningDataModule):
    """A datamodule with its dataloaders only (no transfer hooks)."""

    def train_dataloader(self) -> DataLoader:
        return loader()

    def val_dataloader(self) -> DataLoader:
        return loader()


class TransferModule(TinyModule):
    """Moves its batches itself, as TinyData does too (Lightning then calls the datamodule's)."""

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return super().transfer_batch_to_device(batch, device, dataloader_idx)


class StatefulData(TinyData):
    """A datamodule with a state of its own (saved in checkpoints) and a transfer hook the module does not have."""

    def state_dict(self) -> dict[str, Any]:
        return {"batches": 8}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restored = state

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch


class CheckpointModule(TinyModule):
    """Adds to and reads its checkpoints; has a transfer hook of its own."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tiny"] = 1

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restored = checkpoint.get("tiny")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch


class LoaderModule(TinyModule):
    """Gives its own validation and test dataloaders too (fit and test are then given none)."""

    def val_dataloader(self) -> DataLoader:
        return loader()

    def test_dataloader(self) -> DataLoader:
        return loader()


class TwoLoaderModule(TinyModule):
    """A test_step for several test dataloaders."""

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))


class StatefulCallback(Callback):
    """Keeps a count in checkpoints and sees them saved and loaded."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self.count += 1

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self.loaded = True


class Raises(Callback):
    """Raises in the first training batch's on_train_batch_end."""

    def on_train_batch_end(self, *args: Any) -> None:
        raise RuntimeError("a callback's own error")


def _recorder(hook: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append(hook)

    method.__name__ = hook
    return method


SpyCallback = type("SpyCallback", (Callback,), {"__init__": lambda self: setattr(self, "calls", []),
                                                **{hook: _recorder(hook) for hook in CALLBACK_HOOKS}})


class StopAfter(Callback):
    """Sets trainer.should_stop at the end of a given training batch."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.batches:
            trainer.should_stop = True


def loader(n: int = 32, batch_size: int = 4) -> DataLoader:
    """Random regression data."""
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=batch_size)


def trainer(root: Any, callbacks: list[Any] | None = None, **options: Any) -> pl.Trainer:
    """The tests' trainer: 2 epochs of 4 batches, 2 validation batches, nothing written outside `root`."""
    kw: dict[str, Any] = dict(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                              limit_predict_batches=2, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                              default_root_dir=str(root), callbacks=callbacks or [])
    kw.update(options)
    return pl.Trainer(**kw)


@dataclass
class Spy:
    """Hook firings in start order: (hook, [handler class names in call order])."""

    firings: list[tuple[str, list[str]]] = field(default_factory=list)
    active: list[tuple[str, int]] = field(default_factory=list)  # dispatches running: (hook, firing index)
    returned: tuple[str, int, int] | None = None  # the last dispatch to return: (hook, firing index, depth)

    def names(self) -> list[str]:
        """The hooks in firing order."""
        return [hook for hook, _ in self.firings]

    def counts(self) -> Counter:
        """Firings per hook."""
        return Counter(self.names())

    def calls(self) -> Counter:
        """Handler calls per (class name, hook)."""
        return Counter((owner, hook) for hook, owners in self.firings for owner in owners)

    def first_handlers(self) -> dict[str, list[str]]:
        """Each hook's handlers at its first firing."""
        found: dict[str, list[str]] = {}
        for hook, owners in self.firings:
            found.setdefault(hook, owners)
        return found

    def dispatch(self, hook: str, owners: list[str], run: Any) -> Any:
        """One dispatch call: it joins the firing that returned just before at this depth if that is the same hook."""
        depth = len(self.active)
        last = self.returned
        if last is not None and last[0] == hook and last[2] == depth:
            index = last[1]
        else:
            index = len(self.firings)
            self.firings.append((hook, []))
        self.firings[index][1].extend(owners)
        self.active.append((hook, index))
        self.returned = None
        try:
            return run()
        finally:
            self.active.pop()
            self.returned = (hook, index, len(self.active))


@contextlib.contextmanager
def spying() -> Iterator[Spy]:
    """Record every hook firing of any trainer while the block runs; Lightning's functions are put back after."""
    spy = Spy()
    saved = {name: getattr(call, name) for name in ("_call_callback_hooks", "_call_lightning_module_hook",
                                                    "_call_strategy_hook", "_call_lightning_datamodule_hook")}

    def callbacks(trainer: Any, hook: str, *args: Any, monitoring_callbacks: Any = None, **kwargs: Any) -> Any:
        cbs = [cb for cb in trainer.callbacks if monitoring_callbacks is None
               or isinstance(cb, (EarlyStopping, Checkpoint)) == monitoring_callbacks]
        owners = [type(cb).__name__ for cb in cbs if is_overridden(hook, cb, Callback)]
        return spy.dispatch(hook, owners, lambda: saved["_call_callback_hooks"](
            trainer, hook, *args, monitoring_callbacks=monitoring_callbacks, **kwargs))

    def module(trainer: Any, hook: str, *args: Any, **kwargs: Any) -> Any:
        m = kwargs.get("pl_module") or trainer.lightning_module
        owners = [type(m).__name__] if is_overridden(hook, m, pl.LightningModule) else []
        return spy.dispatch(hook, owners, lambda: saved["_call_lightning_module_hook"](trainer, hook, *args, **kwargs))

    def strategy(trainer: Any, hook: str, *args: Any, **kwargs: Any) -> Any:
        run = lambda: saved["_call_strategy_hook"](trainer, hook, *args, **kwargs)  # noqa: E731
        if hook not in STEP_HOOKS:
            return run()
        m = trainer.lightning_module
        return spy.dispatch(hook, [type(m).__name__] if is_overridden(hook, m, pl.LightningModule) else [], run)

    def datamodule(trainer: Any, hook: str, *args: Any, **kwargs: Any) -> Any:
        dm = trainer.datamodule
        owners = [type(dm).__name__] if is_overridden(hook, dm, pl.LightningDataModule) else []
        return spy.dispatch(hook, owners, lambda: saved["_call_lightning_datamodule_hook"](trainer, hook, *args, **kwargs))

    def direct(name: str, hook: str) -> Any:  # Lightning's loops that call each callback's checkpoint hook itself
        def run(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            checkpoint = args[0] if args else {}
            states = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
            owners = [type(cb).__name__ for cb in trainer.callbacks if is_overridden(hook, cb, Callback)
                      and (hook == "state_dict" or hook == "on_save_checkpoint" or states is not None)
                      and (hook != "load_state_dict" or states.get(cb.state_key))]
            return spy.dispatch(hook, owners, lambda: saved[name](trainer, *args, **kwargs))

        return run

    call._call_callback_hooks, call._call_lightning_module_hook, call._call_strategy_hook = callbacks, module, strategy
    call._call_lightning_datamodule_hook = datamodule
    for name, hook in DIRECT.items():
        saved[name] = getattr(call, name)
        setattr(call, name, direct(name, hook))
    try:
        yield spy
    finally:
        for name, fn in saved.items():
            setattr(call, name, fn)


def traced_fit(root: Any) -> tuple[pl.Trainer, Spy, Any]:
    """A TinyModule fit (two epochs, with validation and its sanity check) traced by loopviz under the spy: the
    trainer, what the spy saw and the trace."""
    import loopviz

    quiet_lightning()
    tr = trainer(root)
    with spying() as seen, loopviz.tracing(tr) as t:
        tr.fit(TinyModule(), loader(), loader())
    return tr, seen, t


# -- the hook recorder of Lightning's own tests (tests_pytorch/models/test_hooks.py), written here: every hook of a
# module and of a callback wrapped on the instance, so that Lightning's `is_overridden` still sees through it


def hook_names(base: type) -> list[str]:
    """The public functions of a Lightning base class and its mixins: its hooks (and a few helpers, recorded too
    when called), less torch.nn.Module's own methods."""
    own = {name for name, _ in inspect.getmembers(base, inspect.isfunction) if not name.startswith("_")}
    if not issubclass(base, torch.nn.Module):  # a callback's or datamodule's state_dict is a hook of its own
        return sorted(own)
    return sorted(own - {name for name, _ in inspect.getmembers(torch.nn.Module, inspect.isfunction)})


def record_hooks(obj: Any, base: type, called: list[str], prefix: str = "") -> Any:
    """Wrap each of `base`'s hooks on `obj` to append its name to `called` as the call starts (the order a loop view
    shows: when each begins; Lightning's own recorder appends as each returns)."""
    for name in hook_names(base):
        original = getattr(obj, name, None)
        if not callable(original):
            continue

        def call(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            called.append(prefix + _name)
            return _original(*args, **kwargs)

        functools.update_wrapper(call, original)
        object.__setattr__(obj, name, call)  # (past nn.Module's __setattr__)
    return obj


class HookedCallback(Callback):
    """A callback that records every callback hook Lightning calls on it; it has a state, as Lightning's own test's
    has, so that a checkpoint holds it and a resumed run loads it."""

    def __init__(self, called: list[str]) -> None:
        record_hooks(self, Callback, called, "Callback.")

    def state_dict(self) -> dict[str, Any]:
        return {"recorded": True}
