"""The Trainer's data loop (`loopviz.adapters.transformers.data_loop`) against what its loader really calls: a spy of
the dataset's `__getitem__` and of the data collator, written without loopviz."""
from __future__ import annotations

from pathlib import Path

import pytest

from loopviz.errors import LoopvizError


def test_a_trainers_loader_is_its_datasets_getitem_and_its_collator(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from loopviz.adapters import transformers as hf
    from tests.hf_fixtures import TokenData, tiny_trainer

    trainer = tiny_trainer(tmp_path, dataloader_pin_memory=False)
    loop = hf.data_loop(trainer)
    seen: list[str] = []
    getitem, collate = TokenData.__getitem__, trainer.data_collator
    monkeypatch.setattr(TokenData, "__getitem__", lambda self, i: seen.append("item") or getitem(self, i))
    trainer.data_collator = lambda batch: seen.append("collate") or collate(batch)
    next(iter(trainer.get_train_dataloader()))
    assert seen == (["item"] * 4 + ["collate"]) * 2  # batches of 4, the next made before the first is yielded
    assert [(stage.name, [s.name for s in stage.steps]) for stage in loop.stages] == [
        ("create_item", ["TokenData.__getitem__"]), ("create_batch", [getattr(collate, "__name__",
                                                                              type(collate).__name__)])]
    assert loop.settings == {"bs": 4, "num_workers": 0, "persistent_workers": False, "pin_memory": False,
                             "drop_last": False}
    assert "moves each batch to the device" in loop.notes[0] and "one batch ahead" in loop.notes[1]
    with pytest.raises(LoopvizError, match="no eval_dataset"):
        trainer.eval_dataset = None
        hf.data_loop(trainer, "eval")
