"""Lightning's data loop (`loopviz.adapters.lightning.data_loop`) against what its loader really calls: a spy of the
dataset's `__getitem__` and of the loader's collate function, written without loopviz."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loopviz.errors import LoopvizError


def test_a_lightning_loader_is_its_datasets_getitem_and_collate(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, Dataset

    from loopviz.adapters import lightning as pl_adapter
    from tests.lightning_fixtures import TinyModule, quiet_lightning, trainer

    quiet_lightning()
    seen: list[str] = []

    class Pairs(Dataset):
        "Sixteen random pairs"

        def __len__(self):
            return 16

        def __getitem__(self, i):
            seen.append("item")
            return torch.randn(4), torch.randn(1)

    def stack(batch):
        "Stacks the pairs"
        seen.append("collate")
        return torch.utils.data.default_collate(batch)

    class Module(TinyModule):
        def train_dataloader(self):
            return DataLoader(Pairs(), batch_size=4, collate_fn=stack)

    fit = trainer(tmp_path, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0)
    with pytest.raises(LoopvizError, match="no train loader yet"):
        pl_adapter.data_loop(fit)
    fit.fit(Module())
    assert seen == (["item"] * 4 + ["collate"]) * 4  # 4 batches of 4
    loop = pl_adapter.data_loop(fit)
    assert [(stage.name, stage.per, [s.name for s in stage.steps]) for stage in loop.stages] == [
        ("create_item", "item", ["Pairs.__getitem__"]), ("create_batch", "batch", ["stack"])]
    assert loop.stages[1].steps[0].doc == "Stacks the pairs" and loop.settings["bs"] == 4
    assert "transfer_batch_to_device" in loop.notes[0]
    with pytest.raises(LoopvizError, match="not a Lightning Trainer"):
        pl_adapter.data_loop(Module())
