"""`data=True` on torch loaders, for the Hugging Face Trainer and Lightning: the dataset's items and the collate
function timed in the process that ran them (workers too, persistent ones across passes), each batch's fetch in the
main process, checked against spies written without loopviz (a dataset and a collate function that append the
process id of each call to a file), with the same batches reaching the model and the loaders left as they were."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data.dataloader import _DatasetKind

pytest.importorskip("transformers")
pytest.importorskip("lightning")

from loopviz.adapters import lightning as lv_lightning  # noqa: E402
from loopviz.adapters import transformers as lv_hf  # noqa: E402
from loopviz.adapters.loader_timer import timed_loaders  # noqa: E402
from tests.hf_fixtures import TokenData, tiny_trainer  # noqa: E402
from tests.lightning_fixtures import TinyModule, quiet_lightning, trainer as lightning_trainer  # noqa: E402
from loopviz.trace import instrument  # noqa: E402
from loopviz.trace.datatiming import data_df  # noqa: E402

quiet_lightning()


class Logged(Dataset):
    """`n` regression pairs; each `__getitem__` appends its process id to a file."""

    def __init__(self, n: int, log: Path):
        gen = torch.Generator().manual_seed(0)
        self.x, self.y, self.log = torch.randn(n, 4, generator=gen), torch.randn(n, 1, generator=gen), str(log)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with open(self.log, "a") as f:
            f.write(f"item {os.getpid()}\n")
        return self.x[i], self.y[i]


class LoggedCollate:
    """default_collate, appending its process id to a file."""

    def __init__(self, log: Path):
        self.log = str(log)

    def __call__(self, items: list[Any]) -> Any:
        with open(self.log, "a") as f:
            f.write(f"collate {os.getpid()}\n")
        return default_collate(items)


def spied(log: Path) -> dict[str, list[int]]:
    """Process ids of the spy's item and collate calls."""
    out: dict[str, list[int]] = {"item": [], "collate": []}
    if log.exists():
        for line in log.read_text().splitlines():
            kind, pid = line.split()
            out[kind].append(int(pid))
    return out


def loader(log: Path, n: int, workers: int, persistent: bool = False) -> DataLoader:
    return DataLoader(Logged(n, log), batch_size=4, num_workers=workers, collate_fn=LoggedCollate(log),
                      persistent_workers=persistent and workers > 0)


class SeenModule(TinyModule):
    """Remembers what each training step got, and the attributes its trainer holds then."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []
        self.trainer_attributes: set[str] = set()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.trainer_attributes |= set(vars(self.trainer))
        self.batches.append(batch[0].clone())
        return super().training_step(batch, batch_idx)


def fit_lightning(tmp_path: Path, workers: int, data: bool, persistent: bool = False):
    log = tmp_path / f"spy-{data}.log"
    torch.manual_seed(0)
    module = SeenModule()
    train, val = loader(log, 32, workers, persistent), loader(log, 8, workers, persistent)
    trainer = lightning_trainer(tmp_path)
    if not data:
        trainer.fit(module, train, val)
        return module, None, log, (train, val)
    with lv_lightning.trace(trainer, data=True) as t:
        trainer.fit(module, train, val)
    return module, t, log, (train, val)


@pytest.mark.parametrize("workers", [0, 2])
def test_lightning_items_and_collate_are_timed_where_they_ran_and_the_model_gets_the_same_batches(
        tmp_path: Path, workers: int) -> None:
    plain, _, _, _ = fit_lightning(tmp_path, workers, data=False)
    module, t, log, loaders = fit_lightning(tmp_path, workers, data=True)
    assert len(plain.batches) == len(module.batches) == 8
    assert module.trainer_attributes == plain.trainer_attributes  # the trace put nothing on the trainer
    assert all(torch.equal(a, b) for a, b in zip(plain.batches, module.batches))
    calls = spied(log)
    summary = t.data_summary()
    items = summary[summary["stage"] == "create_item"]
    collates = summary[summary["stage"] == "create_batch"]
    assert int(items["calls"].sum()) == len(calls["item"])  # every item the workers (or main) made, prefetch included
    assert int(collates["calls"].sum()) == len(calls["collate"])
    main = os.getpid()
    expected = {"main"} if workers == 0 else {"workers"}
    assert set(items["where"]) == set(collates["where"]) == expected
    assert all((pid == main) == (workers == 0) for pid in calls["item"] + calls["collate"])
    timing = {lt.loader: lt for lt in t.loader_timing()}
    assert timing["train"].passes == 2 and timing["train"].batches == 8 and timing["val"].passes == 3
    assert timing["train"].workers == workers
    for dl in loaders:  # the loaders and torch are left as they were
        assert "collate_fn" not in vars(dl) or isinstance(vars(dl)["collate_fn"], LoggedCollate)
        assert "_get_iterator" not in vars(dl)
        assert not any(getattr(v, "__loopviz_wrapper__", False) for v in vars(dl.dataset).values())
    assert not getattr(_DatasetKind.create_fetcher, "__loopviz_wrapper__", False)
    assert not instrument.installed() and timed_loaders() == 0


def test_lightning_persistent_workers_are_timed_in_each_pass(tmp_path: Path) -> None:
    _, t, log, _ = fit_lightning(tmp_path, 2, data=True, persistent=True)
    df = data_df(t.data)
    made = df[(df["stage"] == "batch") & (df["loader"] == "train")]
    assert sorted(set(made["pass"])) == [0, 1] and made["pid"].nunique() == 2  # the same two workers, both passes
    for _, one in made.groupby("pass"):
        assert set(one["worker"]) == {0, 1} and all(one["batch"] % 2 == one["worker"])
    timing = {lt.loader: lt for lt in t.loader_timing()}["train"]
    assert len(timing.first_batch_ms) == 2 and timing.first_batch_ms[1] < timing.first_batch_ms[0]  # started once
    items = df[(df["stage"] == "create_item") & (df["step"] == "")]
    assert len(spied(log)["item"]) == int(items["count"].sum())  # train's and validation's, every pass


class LoggedTokens(Dataset):
    """The Trainer's token data, logging each item's process."""

    def __init__(self, n: int, log: Path, seed: int = 0):
        self.data, self.log = TokenData(n, seed), str(log)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with open(self.log, "a") as f:
            f.write(f"item {os.getpid()}\n")
        return self.data[i]


@pytest.mark.parametrize("workers", [0, 2])
def test_the_trainers_loaders_are_timed_train_and_each_evaluation(tmp_path: Path, workers: int) -> None:
    log = tmp_path / "spy.log"
    trainer = tiny_trainer(tmp_path / "out", n_train=16, dataloader_num_workers=workers, num_train_epochs=2,
                           eval_strategy="epoch")
    trainer.train_dataset, trainer.eval_dataset = LoggedTokens(16, log), LoggedTokens(8, log, seed=1)
    with lv_hf.trace(trainer, data=True) as t:
        trainer.train()
    calls = spied(log)
    summary = t.data_summary()
    items = summary[summary["stage"] == "create_item"]
    assert int(items["calls"].sum()) == len(calls["item"])
    assert set(items["loader"]) == {"train", "eval", "eval 2"}  # a new evaluation loader every evaluate
    assert set(items["where"]) == ({"main"} if workers == 0 else {"workers"})
    timing = {lt.loader: lt for lt in t.loader_timing()}
    assert timing["train"].batches == 8 and timing["train"].passes == 2 and timing["eval"].batches == 2
    assert "get_train_dataloader" not in vars(trainer) and not instrument.installed()


def test_an_iterable_datasets_batches_are_timed_by_their_collate_and_other_objects_are_said() -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([(torch.zeros(4), torch.zeros(1))] * 8)

    from loopviz.adapters.torch_timer import TorchTiming

    timing = TorchTiming()
    stream = DataLoader(Stream(), batch_size=4)
    timing.watch(stream, "stream")
    assert timing.watch([1, 2], "list") is None and timing.skipped == ["list: a list, not a torch DataLoader"]
    batches = [b[0].shape for b in stream]
    steps, rows = timing.stop()
    assert batches == [torch.Size([4, 4])] * 2 and not instrument.installed()
    names = [step[1] for step in steps]
    from loopviz.trace.datawork import D_STEP, ND

    timed = [names[rows[i]] for i in range(0, len(rows), ND)]
    assert timed.count("create_batch") == 2 and timed.count("fetch") == 2 and "create_item" not in timed
