"""The pages docs/lightning-hooks.md and docs/transformers-events.md: the order Lightning calls its hooks and the
Hugging Face Trainer its events, drawn by loopviz for a module and callbacks that handle every one.

`python docs/hook_order.py` rewrites both pages; tests/test_docs_hook_order.py checks that they are what this
writes and that each order drawn is the order the framework really calls, recorded as its own tests record it.
"""
from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).parent
WIDTH = 100  # the text views' width on the pages

# every hook a LightningModule can override that a fit, validate, test or predict calls (the steps and
# configure_optimizers are the module's own below)
MODULE_HOOKS = (
    "prepare_data", "setup", "configure_model", "on_load_checkpoint", "on_fit_start", "on_train_start",
    "on_train_epoch_start", "on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer",
    "on_train_batch_start", "optimizer_step", "on_before_zero_grad", "optimizer_zero_grad", "on_before_backward",
    "backward", "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping", "on_train_batch_end",
    "on_validation_model_zero_grad", "on_validation_model_eval", "on_validation_start", "on_validation_epoch_start",
    "on_validation_batch_start", "on_validation_batch_end", "on_validation_epoch_end", "on_validation_end",
    "on_validation_model_train", "on_save_checkpoint", "on_train_epoch_end", "on_train_end", "on_fit_end",
    "on_test_model_eval", "on_test_start", "on_test_epoch_start", "on_test_batch_start", "on_test_batch_end",
    "on_test_epoch_end", "on_test_end", "on_test_model_train", "on_predict_model_eval", "on_predict_start",
    "on_predict_epoch_start", "on_predict_batch_start", "on_predict_batch_end", "on_predict_epoch_end",
    "on_predict_end", "teardown",
)


def _passing_on(name: str, base: type) -> Callable[..., Any]:
    """An override of `base.name` that does what the base does: a handler that changes nothing."""
    inherited = getattr(base, name)

    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        return inherited(self, *args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    return hook


def lightning_classes() -> tuple[type, type]:
    """(EveryHookModule, EveryHookCallback): a tiny regression module and a callback overriding every hook."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    class Steps(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net(batch[0])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = type("EveryHookModule", (Steps,), {name: _passing_on(name, Steps) for name in MODULE_HOOKS})
    hooks = [name for name in vars(Callback) if name.startswith("on_") or name in ("setup", "teardown", "state_dict",
                                                                                   "load_state_dict")]
    callback = type("EveryHookCallback", (Callback,), {name: _passing_on(name, Callback) for name in hooks})
    callback.state_dict = lambda self: {"seen": True}  # a state of its own: saved, and loaded on resume
    return module, callback


def lightning_loader() -> Any:
    """32 random rows in batches of 4."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)), batch_size=4)


def lightning_trainer(root: str, callbacks: list[Any], **options: Any) -> Any:
    """The page's trainer: two epochs of 4 batches, 2 validation batches, a checkpoint after each epoch."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    kw: dict[str, Any] = dict(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2,
                              limit_predict_batches=2, logger=False, enable_progress_bar=False,
                              enable_model_summary=False, accelerator="cpu", devices=1, default_root_dir=root,
                              callbacks=[*callbacks, ModelCheckpoint(dirpath=root, filename="last")])
    return pl.Trainer(**{**kw, **options})


def _quiet() -> None:
    """Lightning's and transformers' own messages off while the pages are made."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def text_view(spec: Any) -> str:
    """loopviz's text view of a spec at the pages' width."""
    from loopviz import formats

    return formats.renderer(formats.find(formats.LOOP_FORMATS, "text"))(spec, verbose=False, width=WIDTH)


def _block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```"


def lightning_specs(root: str) -> dict[str, Any]:
    """The specs the Lightning page draws: fit, fit resumed from a checkpoint, validate, test, predict."""
    from loopviz.adapters.lightning import lightning_spec

    module, callback = lightning_classes()
    trainer = lightning_trainer(root, [callback()])
    specs = {loop: lightning_spec(trainer, module(), loop) for loop in ("fit", "validate", "test", "predict")}
    specs["resume"] = lightning_spec(trainer, module(), "fit", ckpt_path=str(Path(root) / "last.ckpt"))
    return specs


def _until(text: str, line_with: str) -> str:
    """The view's lines up to the one naming `line_with` (the rest of a resumed fit is the fit above)."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line_with in line)
    return "\n".join(lines[:end + 1] + ["   ... (the rest as in fit above)"])


def lightning_page() -> str:
    """docs/lightning-hooks.md."""
    import lightning.pytorch as pl

    from loopviz.adapters.lightning import FRAMEWORK

    with tempfile.TemporaryDirectory(prefix="loopviz-") as root:
        specs = lightning_specs(root)
        views = {name: text_view(spec) for name, spec in specs.items()}
    return f"""# The order Lightning calls its hooks

Every hook {FRAMEWORK} calls in `fit`, `validate`, `test` and `predict`, in order, with who handles each, drawn by
loopviz for a module and a callback that override every hook (`docs/hook_order.py`: `EveryHookModule` passes each
hook on to Lightning's own, `EveryHookCallback` likewise, and a `ModelCheckpoint` saves after each epoch). Each
event lists its handlers in the order Lightning calls them.

This is not a reading of Lightning's documentation: the tests run these very trainers and modules and record every
hook as it is called, the way Lightning's own test of its hook order does (`tests_pytorch/models/test_hooks.py`: each
hook of the module and the callback wrapped on the instance to record its name), and compare the order with what
is drawn here (`tests/test_docs_hook_order.py`), on top of the configurations of `tests/test_adapter_lightning.py`
(accumulation, `val_check_interval`, early stopping, manual optimization, schedulers, datamodules, resuming, loops
limited to no batches...). Regenerate this page with `python docs/hook_order.py`; draw it yourself for your own
trainer and module:

```python
loopviz.show(trainer, model=model)                      # fit; loop="validate", "test" or "predict"
loopviz.show(trainer, model=model, fmt="graphviz")      # or "rich", "mermaid"; verbose=True: what each does
from loopviz.adapters.lightning import lightning_spec
lightning_spec(trainer, model, "fit", ckpt_path="last.ckpt")  # a resumed fit
```

## fit

{_block(views["fit"])}

The training batch shows the automatic optimization of one optimizer: `optimizer_step` runs `optimizer.step(closure)`,
and the closure runs `training_step`, the gradients' zeroing and the backward pass, so their hooks fire inside
`optimizer_step`'s. Lightning also calls `module.zero_grad()` right after `on_fit_start` (a step of its own in the
verbose view).

## fit(ckpt_path=...)

Resuming restores the module, the datamodule and the callbacks after `setup` and `configure_model`, before
`configure_optimizers` (the optimizers and the loops' progress are restored after `on_fit_start`, without hooks):

{_block(_until(views["resume"], "configure_optimizers"))}

## validate

{_block(views["validate"])}

## test

{_block(views["test"])}

## predict

{_block(views["predict"])}

## Where the view simplifies

The order above is exact for the runs it was checked on. Where Lightning's sequence depends on what happens at run
time, the view draws the usual path and says the rest in the event's description (`verbose=True`) or the phase's
note, each of these checked against recorded runs too:

- **Gradient accumulation** (`accumulate_grad_batches=k`): two kinds of training batch are drawn, those that only
  accumulate (no `optimizer_step`) and those that step; `on_validation_model_zero_grad` is skipped when validation
  falls on a batch that only accumulates.
- **`on_train_batch_start` returning -1** ends the epoch: the rest of that batch, its `on_train_batch_end` and
  that epoch's validation are skipped; `lr_scheduler_step` of interval `'step'` still fires, then
  `on_train_epoch_end`.
- **Manual optimization** (`automatic_optimization=False`): `on_before_backward`, the module's `backward` and
  `on_after_backward` fire once per `self.manual_backward(loss)`, `on_before_optimizer_step` once per optimizer
  `step()`: drawn once each inside `training_step`.
- **Validation when due** (`val_check_interval`, `check_val_every_n_epoch`): drawn inside the training batch, where
  it runs when it runs; `trainer.should_stop` ends the epoch after the current batch.
- **Checkpoints** are saved where the checkpoint callback saves: after `on_train_epoch_end`, inside
  `on_validation_end` (before the module's `on_validation_model_train`) or every N training steps inside
  `on_train_batch_end`. The callbacks' `state_dict`, `on_save_checkpoint`, `on_load_checkpoint` and
  `load_state_dict` are called by Lightning directly, one callback after another, not through its dispatch; a
  trace records them all the same.
- **A checkpoint saved mid-epoch** resumes inside its epoch: no sanity check, and no `on_train_epoch_start` for
  that epoch.
- **The module's own calls**: `training_step` runs your `forward` where it calls `self(...)`;
  `on_validation_model_eval`'s default calls `model.eval()`; `configure_gradient_clipping`'s default calls
  `self.clip_gradients(...)`; these are said in the hooks' descriptions, not drawn as hooks.
- **An exception** calls the callbacks' `on_exception` and ends the run: no `on_fit_end`, no `teardown`.
- **LR schedulers** are known once the trainer has run the module: `lr_scheduler_step` is drawn after the
  optimizer step (interval `'step'`) or after `on_train_epoch_end` (interval `'epoch'`) from then on.

Checked with Lightning {pl.__version__}.
"""


def transformers_classes() -> type:
    """EveryEventCallback: a TrainerCallback overriding every event."""
    from transformers import TrainerCallback

    events = [name for name in vars(TrainerCallback) if name.startswith("on_")]
    return type("EveryEventCallback", (TrainerCallback,), {name: _passing_on(name, TrainerCallback) for name in events})


class Tokens(torch.utils.data.Dataset):
    """`n` random sequences of 8 token ids, with binary labels."""

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids, self.labels = torch.randint(1, 50, (n, 8), generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


TRAINER_ARGS = dict(report_to=[], use_cpu=True, disable_tqdm=True, num_train_epochs=1, per_device_train_batch_size=4,
                    per_device_eval_batch_size=4, gradient_accumulation_steps=2, logging_strategy="steps",
                    logging_steps=1, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                    dataloader_num_workers=0)


def hf_trainer(out: str) -> Any:
    """The page's Trainer: a one-layer BERT from a config (nothing downloaded), 16 examples in batches of 4, two
    micro-batches a step; logs every step, evaluates and saves every 2 steps."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    return Trainer(model=BertForSequenceClassification(config), args=TrainingArguments(output_dir=out, **TRAINER_ARGS),
                   train_dataset=Tokens(16), eval_dataset=Tokens(8, seed=1), callbacks=[transformers_classes()()])


def transformers_page() -> str:
    """docs/transformers-events.md."""
    import transformers

    from loopviz.adapters.transformers import trainer_spec

    with tempfile.TemporaryDirectory(prefix="loopviz-") as out:
        trainer = hf_trainer(out)
        views = {loop: text_view(trainer_spec(trainer, loop)) for loop in ("train", "evaluate", "predict")}
    settings = ", ".join(f"{key}={value!r}" for key, value in TRAINER_ARGS.items()
                         if key not in ("report_to", "use_cpu", "disable_tqdm", "dataloader_num_workers"))
    settings = textwrap.fill(f"TrainingArguments({settings})", WIDTH, subsequent_indent="                  ",
                             break_long_words=False)
    return f"""# The order the Trainer calls its events

Every event the Hugging Face Trainer (transformers {transformers.__version__}) sends its callbacks in `train()`,
`evaluate()` and `predict()`, in order, drawn by loopviz for a callback that overrides every event
(`docs/hook_order.py`: `EveryEventCallback` passes each on to `TrainerCallback`'s own) on a one-layer BERT with 16
training examples and

```python
{settings}
```

Each event lists the callbacks that handle it, in the order the Trainer calls them (`DefaultFlowCallback` and
`PrinterCallback` are the Trainer's own).

The tests run this very Trainer and record every event as it is dispatched, as the Trainer's own callback tests
record them (`tests/trainer/test_trainer_callback.py`), and compare the sequence with this view expanded for the
run's steps and strategies (`tests/test_docs_hook_order.py`), on top of the configurations of
`tests/test_adapter_transformers.py` (accumulation, strategies by steps and by epoch, early stopping, a callback
that stops training or asks for checkpoints itself, dict eval datasets). Regenerate this page with
`python docs/hook_order.py`; draw your own with `loopviz.show(trainer)` (`loop="evaluate"` or `"predict"`).

## train

{_block(views["train"])}

## evaluate

{_block(views["evaluate"])}

## predict

{_block(views["predict"])}

## Where the view simplifies

- **Log, evaluate, save** after a step or an epoch are drawn where a strategy or a callback sets their flag
  (`control.should_log`, `should_evaluate`, `should_save`): DefaultFlowCallback sets them by the strategies (and
  evaluates and saves at the last step); a callback of yours that sets one in its source (read by loopviz) draws
  that part too, its description naming the callback. Each part runs only at the steps its flag is set.
- **Micro-batches**: `on_substep_end` fires for each micro-batch of a step but the last.
- **Stopping**: `control.should_training_stop` (EarlyStoppingCallback, or yours) ends the step loop after the
  current step, then the epoch loop.
- **A dict of eval datasets** runs one evaluation per dataset, each logged on its own.
- `on_init_end` fires once, in `Trainer.__init__` (the Create phase), before any loop.
"""


def main() -> None:
    """Rewrite both pages."""
    _quiet()
    (HERE / "lightning-hooks.md").write_text(lightning_page())
    (HERE / "transformers-events.md").write_text(transformers_page())


if __name__ == "__main__":
    sys.exit(main())
