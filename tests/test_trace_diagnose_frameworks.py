"""`t.diagnose()` on Hugging Face and Lightning fits with a known culprit: a callback that sleeps at every step is
named, and its fix is in the framework's words (the adapter's advice, kept in the trace)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import loopviz


def test_a_trainer_callback_sleeping_every_step_is_named_with_the_trainers_fix(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import TrainerCallback

    from loopviz.adapters import transformers as hf
    from tests.hf_fixtures import tiny_trainer

    class Flush(TrainerCallback):
        """Flushes a log at every step."""

        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.01)

    trainer = tiny_trainer(tmp_path, callbacks=[Flush()])
    with hf.trace_trainer(trainer) as t:
        trainer.train()
    top = t.diagnose().top
    assert top is not None and top.kind == "slow_callback" and top.culprit == "Flush.on_step_end"
    assert "state.global_step % 10" in top.fix and top.figures["calls"] == 4
    assert t.meta["advice"]["fixes"]["batch_size"].startswith("TrainingArguments(")


def test_a_lightning_callback_sleeping_every_batch_is_named_with_lightnings_fix(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from lightning.pytorch import Callback

    from tests.lightning_fixtures import TinyModule, quiet_lightning, trainer

    quiet_lightning()

    class Flush(Callback):
        """Flushes a log after every training batch."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            time.sleep(0.01)

    fit = trainer(tmp_path, callbacks=[Flush()])
    with loopviz.tracing(fit) as t:
        fit.fit(TinyModule())
    d = t.diagnose()
    top = d.top
    assert top is not None and top.kind == "slow_callback" and top.culprit == "Flush.on_train_batch_end"
    assert "batch_idx % 10" in top.fix and top.figures["calls"] == 8
    assert "dispatch" not in {f.kind for f in d} and "dispatch_per_compute" not in d.checked  # no compute work given
    plain = trainer(tmp_path / "plain")
    with loopviz.tracing(plain) as t:
        plain.fit(TinyModule())
    named = {f.culprit for f in t.diagnose()}
    assert not any("training_step" in culprit for culprit in named)  # the model's own step is no callback's culprit


def test_trainer_items_slow_to_make_are_found_with_the_trainers_loader_setting(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from loopviz.adapters import transformers as hf
    from tests.hf_fixtures import TokenData, tiny_trainer

    class SlowTokens(TokenData):
        """Items that take 20 ms each to make (a tokenizer run per item)."""

        def __getitem__(self, i: int):
            time.sleep(0.02)
            return super().__getitem__(i)

    trainer = tiny_trainer(tmp_path)
    trainer.train_dataset = SlowTokens(16)
    with hf.trace_trainer(trainer) as t:
        trainer.train()
    top = t.diagnose().top
    assert top is not None and top.kind == "input_bound" and top.severity == "critical"
    assert "dataloader_num_workers=" in top.fix and top.fix.startswith("TrainingArguments(")


def test_lightning_validation_far_larger_than_training_is_found_with_lightnings_setting(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()

    class BigValidation(TinyModule):
        """Validates on 40 batches for every 4 it trains on."""

        def val_dataloader(self):
            return loader(n=160)

    fit = trainer(tmp_path, limit_val_batches=40, num_sanity_val_steps=0)
    with loopviz.tracing(fit) as t:
        fit.fit(BigValidation())
    found = {f.kind: f for f in t.diagnose()}
    assert "validation" in found and "check_val_every_n_epoch" in found["validation"].fix
    assert found["validation"].figures["valid_ms"] > found["validation"].figures["train_ms"]


def test_trainer_and_lightning_traces_note_device_and_precision_and_say_their_fix(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("lightning")
    import json

    from loopviz.adapters import transformers as hf
    from loopviz.trace.diagnose import advice_of
    from loopviz.trace.trace import Trace
    from tests.hf_fixtures import tiny_trainer
    from tests.lightning_fixtures import TinyModule, quiet_lightning, trainer

    hf_trainer = tiny_trainer(tmp_path / "hf")
    with hf.trace_trainer(hf_trainer) as t:
        hf_trainer.train()
    assert (t.meta["device"], t.meta["precision"]) == ("cpu", "32")
    quiet_lightning()
    fit = trainer(tmp_path / "pl")
    with loopviz.tracing(fit) as lt:
        fit.fit(TinyModule())
    assert (lt.meta["device"], lt.meta["precision"]) == ("cpu", "32-true")
    for trace, fix, model in ((t, "TrainingArguments(..., bf16=True)", ("summary", "forward+backward")),
                              (lt, "Trainer(..., precision='bf16-mixed')", ("callbacks", "training_step"))):
        data = json.loads(json.dumps(trace.to_json()))
        data["meta"]["device"] = "cuda:0"  # as if it had run on a GPU (this machine has none)
        gpu = Trace.from_json(data)
        table = gpu.summary() if model[0] == "summary" else gpu.by_callback().rename(columns={"event": "name"})
        model_ms = table[table["name"].isin(["forward+backward", "training_step", "validation_step", "backward"])]
        share = gpu.diagnose().checked["full_precision_share"]
        assert share == pytest.approx(model_ms["total_ms"].sum() / (gpu.total_ns() / 1e6)) and share > 0
        assert advice_of(gpu.data).fixes["precision"].startswith(fix)


def test_trainer_and_lightning_workers_started_every_epoch_are_found_and_persistent_ones_are_not(
        tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("lightning")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from loopviz.adapters import transformers as hf
    from tests.hf_fixtures import tiny_trainer
    from tests.lightning_fixtures import TinyModule, quiet_lightning, trainer

    def stall(trace):
        d = trace.diagnose()
        return {f.kind: f for f in d}.get("epoch_start_stall"), d.checked["epoch_stall_share"]

    for persistent in (False, True):
        hf_trainer = tiny_trainer(tmp_path / f"hf{persistent}", n_train=64, num_train_epochs=3,
                                  dataloader_num_workers=2, dataloader_persistent_workers=persistent)
        with hf.trace_trainer(hf_trainer) as t:
            hf_trainer.train()
        assert t.meta["loaders"]["train"]["persistent_workers"] is persistent
        found, share = stall(t)
        if persistent:
            assert found is None and share < 0.02
        else:
            assert found is not None and "(num_workers=2, persistent_workers=False)" in found.culprit
            assert "dataloader_persistent_workers=True" in found.fix and found.fix.startswith("TrainingArguments(")
    quiet_lightning()
    for persistent in (False, True):
        class Workers(TinyModule):
            """Trains on 16 batches a epoch from two worker processes."""

            def train_dataloader(self):
                g = torch.Generator().manual_seed(0)
                data = TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g))
                return DataLoader(data, batch_size=4, num_workers=2, persistent_workers=persistent)

        fit = trainer(tmp_path / f"pl{persistent}", max_epochs=3, limit_train_batches=16, limit_val_batches=0,
                      num_sanity_val_steps=0)
        with loopviz.tracing(fit) as lt:
            fit.fit(Workers())
        assert lt.meta["loaders"]["train"] == {"bs": 4, "num_workers": 2, "persistent_workers": persistent,
                                               "pin_memory": False, "restarts_workers": False}
        found, share = stall(lt)
        if persistent:
            assert found is None and share < 0.02
        else:
            assert found is not None and "persistent_workers=True" in found.fix and found.fix.startswith("DataLoader(")
