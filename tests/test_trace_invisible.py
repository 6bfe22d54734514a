"""A trace is invisible to the framework: the same fit run untraced and traced makes the same calls (same hooks, same
objects, same order), written down by a spy that knows nothing of loopviz: fastai's own dispatch (tests/spy.py), and,
for miniai, Hugging Face and Lightning, every hook of every callback, module and datamodule wrapped on its instance
with `functools.partial` + `update_wrapper`, as Lightning's own hook tests wrap them (tests_pytorch/models/
test_hooks.py). Such instance wrappers are where a tracer's own wrapper on top is most visible: Lightning's
`is_overridden` unwraps one `__wrapped__` and one partial, and must answer as it does untraced."""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import pytest
import torch
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz.adapters.miniai import trace_miniai
from tests import miniai_style as mi
from tests.spy import spy


def record_calls(obj: Any, label: str, names: Iterable[str], log: list[tuple[str, str]]) -> Any:
    """Wrap each of `names` on the instance `obj` so that each call appends (label, name) to `log`."""

    def call(hook: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        log.append((label, hook))
        return fn(*args, **kwargs)

    for name in names:
        attr = getattr(obj, name, None)
        if callable(attr):
            wrapped = functools.partial(call, name, attr)
            functools.update_wrapper(wrapped, attr)
            setattr(obj, name, wrapped)
    return obj


# -- fastai -----------------------------------------------------------------------------------------


class CallsOverride(Callback):
    """A callback class with its own __call__."""

    def __call__(self, event_name: str) -> None:
        super().__call__(event_name)


class Reads(Callback):
    """A handler of its own, and one set on the instance."""

    def after_batch(self) -> None:
        self.seen = float(self.learn.loss)


def fastai_fit(tmp_path: Any, traced: bool) -> list[tuple[Any, ...]]:
    torch.manual_seed(0)
    reads = Reads()
    reads.before_epoch = lambda: None  # a handler set on the instance: fastcore's getcallable finds it
    learn = synth_learner(n_trn=16, n_val=8, path=tmp_path, cbs=[CallsOverride(), reads])
    with spy(learn) as seen, learn.no_bar(), learn.no_logging():
        if traced:
            with learn.trace():
                learn.fit(2)
        else:
            learn.fit(2)
    return ([(f.event, f.phase, f.parent, tuple(f.ran), f.escaped) for f in seen.firings]
            + [(c.firing, c.cls, c.event, c.status, c.raised) for c in seen.calls])


def test_fastai_runs_the_same_calls_traced(tmp_path):
    assert fastai_fit(tmp_path, traced=True) == fastai_fit(tmp_path, traced=False)


# -- miniai -----------------------------------------------------------------------------------------

MINIAI_EVENTS = ("before_fit", "after_fit", "before_epoch", "after_epoch", "before_batch", "after_batch", "predict",
                 "get_loss", "backward", "step", "zero_grad", "cleanup_fit", "cleanup_epoch", "cleanup_batch")


def miniai_fit(traced: bool) -> list[tuple[str, str]]:
    log: list[tuple[str, str]] = []
    train, valid, model, loss = mi.synthetic()
    cbs = [record_calls(cb, type(cb).__name__, MINIAI_EVENTS, log)
           for cb in (mi.TrainCB(), mi.MetricsCB(), mi.StopEarlyCB(max_batches=3))]
    learn = mi.Learner(model, train, valid, loss, cbs=cbs)
    if traced:
        with trace_miniai(learn, base=mi.Callback):
            learn.fit(2)
    else:
        learn.fit(2)
    return log


def test_miniai_runs_the_same_calls_traced():
    untraced = miniai_fit(traced=False)
    assert ("TrainCB", "predict") in untraced
    assert miniai_fit(traced=True) == untraced


# -- Hugging Face -----------------------------------------------------------------------------------


def hf_fit(tmp_path: Any, traced: bool) -> list[tuple[str, str]]:
    from transformers import TrainerCallback

    from loopviz.adapters.transformers import trace_trainer
    from tests.hf_fixtures import LogCounter, StopAt, tiny_trainer

    log: list[tuple[str, str]] = []
    trainer = tiny_trainer(tmp_path / ("traced" if traced else "plain"), callbacks=[LogCounter(), StopAt(3)],
                           logging_strategy="steps", logging_steps=1, eval_strategy="steps", eval_steps=2)
    events = [name for name in vars(TrainerCallback) if name.startswith("on_")]
    for cb in trainer.callback_handler.callbacks:
        record_calls(cb, type(cb).__name__, events, log)
    if traced:
        with trace_trainer(trainer):
            trainer.train()
            trainer.evaluate()
    else:
        trainer.train()
        trainer.evaluate()
    return log


def test_hugging_face_runs_the_same_calls_traced(tmp_path):
    untraced = hf_fit(tmp_path, traced=False)
    assert ("StopAt", "on_step_end") in untraced and ("LogCounter", "on_log") in untraced
    assert hf_fit(tmp_path, traced=True) == untraced


# -- Lightning --------------------------------------------------------------------------------------


def lightning_hooks(base: type) -> list[str]:
    """Every public method the Lightning base class defines (as Lightning's hook tests take `get_members`)."""
    return sorted(name for name in dir(base) if not name.startswith("_") and callable(getattr(base, name, None))
                  and name not in ("forward", "log", "log_dict", "print", "to", "cpu", "cuda", "type", "float",
                                   "double", "half", "train", "eval", "parameters", "named_parameters", "children",
                                   "modules", "named_modules", "named_children", "state_dict", "load_state_dict",
                                   "apply", "zero_grad", "register_buffer", "register_parameter", "register_module",
                                   "add_module", "get_submodule", "get_parameter", "get_buffer", "buffers",
                                   "named_buffers", "requires_grad_", "share_memory", "extra_repr", "to_empty",
                                   "bfloat16", "ipu", "xpu", "mtia", "set_extra_state", "get_extra_state",
                                   "register_forward_hook", "register_forward_pre_hook", "register_backward_hook",
                                   "register_full_backward_hook", "register_full_backward_pre_hook",
                                   "register_state_dict_pre_hook", "register_load_state_dict_post_hook",
                                   "register_load_state_dict_pre_hook", "register_state_dict_post_hook",
                                   "save_hyperparameters", "optimizers", "lr_schedulers", "manual_backward",
                                   "toggle_optimizer", "untoggle_optimizer", "toggled_optimizer", "clip_gradients",
                                   "all_gather", "freeze", "unfreeze", "to_onnx", "to_torchscript", "compile",
                                   "load_from_checkpoint", "from_datasets", "__call__", "print", "log_dict",
                                   "call"))


def lightning_fit(tmp_path: Any, traced: bool, module_cls: type, data_cls: type | None) -> list[tuple[str, str]]:
    import lightning.pytorch as pl

    from loopviz.adapters.lightning import trace
    from tests.lightning_fixtures import SpyCallback, quiet_lightning, trainer

    quiet_lightning()
    torch.manual_seed(0)
    log: list[tuple[str, str]] = []
    module = record_calls(module_cls(), "module", lightning_hooks(pl.LightningModule), log)
    callback = record_calls(SpyCallback(), "callback", lightning_hooks(pl.Callback), log)
    data = record_calls(data_cls(), "datamodule", lightning_hooks(pl.LightningDataModule), log) if data_cls else None
    fitter = trainer(tmp_path / ("traced" if traced else "plain"), callbacks=[callback], max_epochs=1)
    if traced:
        with trace(fitter, clock="host"):
            fitter.fit(module, datamodule=data) if data is not None else fitter.fit(module)
    else:
        fitter.fit(module, datamodule=data) if data is not None else fitter.fit(module)
    return log


def _plain_data() -> type:
    import lightning.pytorch as pl

    from tests.lightning_fixtures import loader

    class PlainData(pl.LightningDataModule):
        """A datamodule with loaders only: Lightning's own batch-transfer hooks are the module's."""

        def train_dataloader(self) -> Any:
            return loader()

        def val_dataloader(self) -> Any:
            return loader()

    return PlainData


@pytest.mark.parametrize("data", ["none", "plain", "transfers"])
def test_lightning_runs_the_same_calls_traced(tmp_path, data):
    from tests.lightning_fixtures import TinyData, TinyModule

    data_cls = {"none": None, "plain": _plain_data(), "transfers": TinyData}[data]
    untraced = lightning_fit(tmp_path, False, TinyModule, data_cls)
    assert ("module", "training_step") in untraced and ("callback", "on_train_batch_end") in untraced
    transfer = ("datamodule" if data == "transfers" else "module", "transfer_batch_to_device")
    assert transfer in untraced
    assert lightning_fit(tmp_path, True, TinyModule, data_cls) == untraced


def test_lightning_times_the_batch_transfer_lightning_chose(tmp_path):
    """Module and datamodule both override transfer_batch_to_device: Lightning calls the datamodule's, and the trace
    times that one (the spy counts the calls)."""
    from loopviz.adapters.lightning import trace
    from loopviz.trace.reports import calls_df
    from tests.lightning_fixtures import TinyData, TinyModule, quiet_lightning, trainer

    class BothModule(TinyModule):
        def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)

    quiet_lightning()
    log: list[tuple[str, str]] = []
    module = record_calls(BothModule(), "module", ["transfer_batch_to_device"], log)
    data = record_calls(TinyData(), "datamodule", ["transfer_batch_to_device"], log)
    fitter = trainer(tmp_path, max_epochs=1)
    with trace(fitter, clock="host") as t:
        fitter.fit(module, datamodule=data)
    calls = calls_df(t.data)
    timed = calls[calls["event"].astype(str) == "transfer_batch_to_device"]["callback"].astype(str)
    assert set(log) == {("datamodule", "transfer_batch_to_device")}
    assert list(timed) == ["TinyData"] * len(log)
