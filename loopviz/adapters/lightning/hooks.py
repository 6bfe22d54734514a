"""Lightning's hooks: who each is dispatched to, in which order, and which objects handle it."""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
from lightning.pytorch.utilities.model_helpers import is_overridden

__all__ = ["ADVICE", "LOOPS", "FRAMEWORK", "WORK_NAMES", "RUN_HOOKS", "STRATEGY_EVENTS", "LOADERS", "BOTH", "MODULE", "CALLBACKS",
           "EPOCH_END", "CHECKPOINT_HOOKS", "DIRECT_CALLS", "hook_owners", "overrides", "handler_objects", "owner_base"]

LOOPS = ("fit", "validate", "test", "predict")
FRAMEWORK = f"Lightning {pl.__version__}"

# Who a hook is dispatched to, in call order (lightning/pytorch/trainer/call.py and the loops).
BOTH, MODULE, CALLBACKS, EPOCH_END = "callbacks, then the module", "the module", "the callbacks", "epoch end"
_MODULE_ONLY = frozenset({
    "configure_callbacks", "prepare_data", "configure_model", "configure_optimizers", "on_before_batch_transfer",
    "transfer_batch_to_device", "on_after_batch_transfer", "optimizer_step", "optimizer_zero_grad",
    "configure_gradient_clipping", "lr_scheduler_step", "training_step", "validation_step", "test_step",
    "predict_step", "backward", "train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader",
    "on_validation_model_zero_grad", "on_validation_model_eval",
    "on_validation_model_train", "on_test_model_eval", "on_test_model_train", "on_predict_model_eval",
})
_TRANSFER = frozenset({"on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"})
_DATAMODULE_FIRST = frozenset({"prepare_data", "setup", "teardown"})
_CALLBACKS_ONLY = frozenset({"on_sanity_check_start", "on_sanity_check_end", "on_exception"})
# the hooks of saving and restoring a checkpoint: who handles each, in call order (lightning/pytorch/trainer/connectors/
# checkpoint_connector.py: dump_checkpoint, _restore_modules_and_callbacks); Lightning calls the callbacks' directly,
# each loop over trainer.callbacks in a function of its own in lightning.pytorch.trainer.call (DIRECT_CALLS)
CHECKPOINT_HOOKS = {"state_dict": "the callbacks, then the datamodule",
                    "on_save_checkpoint": "the callbacks, then the module",
                    "on_load_checkpoint": "the module, then the callbacks",
                    "load_state_dict": "the datamodule, then the callbacks"}
DIRECT_CALLS = {"_call_callbacks_state_dict": "state_dict", "_call_callbacks_on_save_checkpoint": "on_save_checkpoint",
                "_call_callbacks_on_load_checkpoint": "on_load_checkpoint",
                "_call_callbacks_load_state_dict": "load_state_dict"}
# strategy hooks that are the module's own hooks (the strategy's other hooks are its own bookkeeping)
STRATEGY_EVENTS = frozenset({"training_step", "validation_step", "test_step", "predict_step", "backward"})
# hooks of the whole run, not of training or evaluation (mode 0 in a trace, no mode in a spec)
RUN_HOOKS = frozenset({"configure_callbacks", "prepare_data", "setup", "configure_model", "configure_optimizers",
                        "on_fit_start", "on_fit_end", "teardown", "on_sanity_check_start", "on_sanity_check_end",
                        "on_exception", "on_load_checkpoint", "load_state_dict"})
_FETCH = {"on_train_epoch_start", "on_train_batch_end", "on_validation_epoch_start", "on_validation_batch_end",
          "on_test_epoch_start", "on_test_batch_end", "on_predict_epoch_start", "on_predict_batch_end"}
LOADERS = {"fit": ("train_dataloader", "val_dataloader"), "validate": ("val_dataloader",),
            "test": ("test_dataloader",), "predict": ("predict_dataloader",)}
# what t.diagnose() says of a Lightning trace, in its words (loopviz.trace.diagnose.ADVICE_KEYS); no compute work:
# the strategy's hooks wrap the step's own work, so the dispatch is not Lightning's alone
ADVICE = {
    "data_work": "data",
    "per_batch_events": ["on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                         "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_end"],
    "work_events": ["training_step", "validation_step", "test_step", "predict_step", "forward", "backward",
                    "optimizer_step", "optimizer_zero_grad", "lr_scheduler_step", "configure_gradient_clipping"],
    "model_events": ["training_step", "validation_step", "backward"],
    "own_modules": ["lightning.", "pytorch_lightning."],
    "fixes": {
        "loader": "DataLoader(dataset, batch_size=..., num_workers={workers}, pin_memory=True)",
        "loader_persistent": "DataLoader(dataset, batch_size=..., num_workers={workers}, persistent_workers=True, "
                             "pin_memory=True)",
        "stall": "DataLoader(dataset, batch_size=..., num_workers={workers}, persistent_workers=True)",
        "every_n": "if batch_idx % 10: return  # first line of {callback}.{event}: its work every 10th batch",
        "rarer": "if batch_idx % 100: return  # {callback}.{event} already skips most batches: its heavy calls less "
                 "often still (or move them to on_train_epoch_end), or make them cheaper",
        "remove": "make {callback}.{event} cheaper, or leave {callback} out of Trainer(callbacks=[...])",
        "precision": "Trainer(..., precision='bf16-mixed')  # mixed precision ('16-mixed' on GPUs without bfloat16)",
        "validation": "Trainer(..., check_val_every_n_epoch=5, limit_val_batches=0.25)",
        "loader_batch": "DataLoader(dataset, batch_size=256, ...)  # larger batches: part of the loader's cost is paid "
                        "per batch",
    },
    "own_fixes": {
        "TQDMProgressBar": "Trainer(callbacks=[TQDMProgressBar(refresh_rate=50)])  # or enable_progress_bar=False",
        "ModelCheckpoint": "ModelCheckpoint(every_n_epochs=5, save_top_k=1)",
    },
}

WORK_NAMES: dict[tuple[str, str], str] = {
    **{(before, "on_before_batch_transfer"): "data" for before in _FETCH},
    ("on_before_backward", "on_after_backward"): "backward",
    ("training_step", "on_before_zero_grad"): "closure",
    ("training_step", "backward"): "closure",
}


def hook_owners(hook: str) -> str:
    """Who Lightning dispatches `hook` to, in order: BOTH, MODULE, CALLBACKS, EPOCH_END or, for a checkpoint's hooks,
    their CHECKPOINT_HOOKS entry."""
    if hook == "on_train_epoch_end":
        return EPOCH_END
    if hook in CHECKPOINT_HOOKS:
        return CHECKPOINT_HOOKS[hook]
    return MODULE if hook in _MODULE_ONLY else CALLBACKS if hook in _CALLBACKS_ONLY else BOTH


def owner_base(obj: Any) -> type:
    """The Lightning base class of a callback, module or datamodule (whose hooks do nothing)."""
    if isinstance(obj, pl.LightningModule):
        return pl.LightningModule
    return pl.LightningDataModule if isinstance(obj, pl.LightningDataModule) else Callback


_UNSET = object()


def overrides(obj: Any, hook: str) -> bool:
    """True when `obj` (a callback or a module) has its own `hook`, not Lightning's base one, and Lightning would call
    it: a hook set to None (Lightning's own way to turn one off: `model.on_validation_model_train = None`), on the
    instance or its class, is no handler, as Lightning's `is_overridden` and its dispatch (`callable(fn)`) say."""
    base = owner_base(obj)
    if obj is None or not hasattr(base, hook):
        return False
    own = vars(obj).get(hook, _UNSET) if hasattr(obj, "__dict__") else _UNSET
    if own is not _UNSET and not getattr(own, "__loopviz_wrapper__", False):
        if not callable(own):
            return False
        inner = inspect.unwrap(own)  # a wrapper of the class's own (functools.update_wrapper) is the class's
        inner = getattr(inner, "__func__", inner)
        return inner is not getattr(base, hook) or inner is own
    found = getattr(type(obj), hook, None)
    return callable(found) and found is not getattr(base, hook)


def _monitoring(cb: Any) -> bool:
    """EarlyStopping and checkpoints: Lightning calls their on_train_epoch_end after the module's."""
    return isinstance(cb, (EarlyStopping, Checkpoint))


def handler_objects(callbacks: Sequence[Any], module: Any, hook: str, datamodule: Any = None) -> list[Any]:
    """The callbacks, module and datamodule that handle `hook`, in the order Lightning calls them."""
    owners = hook_owners(hook)
    mine = [module] if module is not None and overrides(module, hook) else []
    data = [datamodule] if datamodule is not None and overrides(datamodule, hook) else []
    if hook in _TRANSFER:  # one object's, chosen as Lightning chooses: the datamodule's when it overrides the hook
        chosen = datamodule if datamodule is not None and is_overridden(hook, datamodule) else module
        return [obj for obj in (mine + data) if obj is chosen]
    if hook in _DATAMODULE_FIRST and data:
        return data + handler_objects(callbacks, module, hook)
    if hook.endswith("_dataloader"):  # a datamodule's loaders replace the module's
        return data or mine
    if hook in CHECKPOINT_HOOKS:  # (a module's state_dict and load_state_dict are torch's: no hook)
        cbs = [cb for cb in callbacks if overrides(cb, hook)]
        owned = data if hook in ("state_dict", "load_state_dict") else mine
        return owned + cbs if hook in ("on_load_checkpoint", "load_state_dict") else cbs + owned
    if owners == MODULE:
        return mine
    cbs = [cb for cb in callbacks if overrides(cb, hook)]
    if owners == CALLBACKS:
        return cbs + data  # on_exception: the callbacks, then the datamodule
    if owners == EPOCH_END:
        return [cb for cb in cbs if not _monitoring(cb)] + mine + [cb for cb in cbs if _monitoring(cb)]
    return cbs + mine


