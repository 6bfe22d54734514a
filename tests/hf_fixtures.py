"""Tiny Hugging Face Trainers for the transformers adapter's tests: a one-layer BERT built from a config (nothing is
downloaded) on a few random token sequences, and a spy of the Trainer's dispatch written without loopviz."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()  # no warnings about tiny models or unused options in the test output


class TokenData(torch.utils.data.Dataset):
    """`n` random sequences of 8 token ids with binary labels, as dicts of tensors."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 8), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def tiny_trainer(out: Path | str, callbacks: list[Any] | None = None, n_train: int = 16, n_eval: int = 8,
                 **args: Any) -> Trainer:
    """A Trainer of a one-layer BERT on `n_train` examples (batches of 4), CPU only, no reports, no tqdm."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    defaults = dict(output_dir=str(out), report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                    per_device_train_batch_size=4, per_device_eval_batch_size=4, num_train_epochs=1,
                    logging_strategy="no", dataloader_num_workers=0)
    training_args = TrainingArguments(**{**defaults, **args})
    return Trainer(model=BertForSequenceClassification(config), args=training_args, train_dataset=TokenData(n_train),
                   eval_dataset=TokenData(n_eval, seed=1), callbacks=callbacks)


def overrides(cb: Any, name: str) -> bool:
    """True when the callback's class defines its own `name`, not TrainerCallback's no-op."""
    return getattr(type(cb), name, None) is not getattr(TrainerCallback, name, None)


class Spy:
    """Records, by wrapping the handler's `call_event` on the instance, every event dispatched and the callbacks
    whose own (overridden) method the dispatch called."""

    def __init__(self, trainer: Trainer):
        self.handler = trainer.callback_handler
        self.events: list[str] = []
        self.calls: list[tuple[str, str]] = []  # (event, callback class)

    def __enter__(self) -> Spy:
        self.before = vars(self.handler).get("call_event")  # a tracer's wrapper, when the spy runs inside a trace
        original = self.handler.call_event

        def call_event(event: str, *args: Any, **kwargs: Any) -> Any:
            self.events.append(event)
            self.calls += [(event, type(cb).__name__) for cb in self.handler.callbacks if overrides(cb, event)]
            return original(event, *args, **kwargs)

        self.handler.call_event = call_event
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.before is None:
            del self.handler.call_event
        else:
            self.handler.call_event = self.before


class StopAt(TrainerCallback):
    """Stops training at the end of global step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


class SaveEvery(TrainerCallback):
    """Asks for a checkpoint every `every` global steps itself (whatever save_strategy says)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step % self.every == 0:
            control.should_save = True
        return control


class Boom(TrainerCallback):
    """Raises at the end of global step 2."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2:
            raise RuntimeError("boom")


class LogCounter(TrainerCallback):
    """Counts the logs it is sent."""

    def __init__(self) -> None:
        self.logs = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs += 1


def cli_trainer() -> Trainer:
    """A tiny Trainer (logging every step) for `loopviz show/trace tests.hf_fixtures:cli_trainer`."""
    import tempfile

    return tiny_trainer(tempfile.mkdtemp(prefix="loopviz-hf-"), logging_strategy="steps", logging_steps=1)
