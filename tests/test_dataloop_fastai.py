"""`learn.data_loop()` against what a real pass of the loader runs: an independent spy of fastai's transforms (a
wrapper of `Transform._do_call`, which runs only when a transform applies, written without loopviz) records each
transform that ran, in order, and the process it ran in."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fastai.data.all import DataBlock, DataLoaders, RandomSplitter, Transform, TransformBlock, tensor
from fastai.learner import Learner
from torch import nn

from loopviz.adapters.fastai.dataloop import data_loop
from loopviz.errors import LoopvizError
from loopviz.renderers.dataloop import data_loop_text
from tests.transform_spy import TransformSpy



class TrainNoise(Transform):
    "Adds a little noise, in training only"
    split_idx = 0
    order = 3

    def encodes(self, x: torch.Tensor):
        return x + 0.01


class Scale(Transform):
    "Halves each number"
    order = 1

    def encodes(self, x: torch.Tensor):
        return x / 2


def as_number(x):
    "One number as a float tensor"
    return tensor([float(x)])


def block_loaders(workers: int = 0):
    block = DataBlock(blocks=(TransformBlock(type_tfms=[as_number]), TransformBlock()),
                      get_items=lambda _: list(range(40)), get_y=lambda o: float(o % 2),
                      splitter=RandomSplitter(seed=0), batch_tfms=[TrainNoise(), Scale()])
    return block.dataloaders(None, bs=4, num_workers=workers)



def expected(loop, items: int) -> list[str]:
    """The transforms the loop says run for one batch of `items` items, in order."""
    per_item = [step.name.split(" (element")[0] for stage in loop.stages if stage.per == "item"
                for step in stage.steps if step.runs]
    per_batch = [step.name for stage in loop.stages if stage.per == "batch" and stage.name != "create_batch"
                 for step in stage.steps if step.runs]
    return per_item * items + per_batch


@pytest.mark.parametrize("which, split", [("train", 0), ("valid", 1)])
def test_the_loop_says_what_one_batch_runs_in_order(tmp_path: Path, which: str, split: int) -> None:
    dls = block_loaders()
    dl = getattr(dls, which)
    loop = data_loop(dl, which)
    with TransformSpy(tmp_path / "ran.tsv") as spy:
        next(iter(dl))
    assert [name for name, _ in spy.ran()] == expected(loop, 4)
    after_batch = {stage.name: stage for stage in loop.stages}["after_batch"]
    assert [(s.name, s.order, s.split, s.runs) for s in after_batch.steps] == [
        ("Scale", 1, "both", True), ("TrainNoise", 3, "train only", split == 0)]  # sorted by order, as fastai does
    assert [s.name for s in loop.stages] == ["create_item", "after_item", "before_batch", "create_batch", "retain",
                                             "to_device", "after_batch"]


def test_with_workers_the_items_are_made_in_worker_processes_and_the_batch_transformed_in_the_main_one(
        tmp_path: Path) -> None:
    dl = block_loaders(workers=2).train
    loop = data_loop(dl)
    with TransformSpy(tmp_path / "ran.tsv") as spy:
        for _ in dl:
            pass
    main = os.getpid()
    ran_in = {name: pid == main for name, pid in spy.ran()}  # name -> ran in the main process
    where = {step.name.split(" (element")[0]: stage.where for stage in loop.stages for step in stage.steps
             if step.runs and stage.name != "create_batch"}
    assert set(ran_in) == set(where)
    for name, in_main in ran_in.items():
        assert (where[name] == "main process") == in_main, name
    assert loop.settings["num_workers"] == 2 and "starts its worker processes again" in loop.notes[0]


def test_a_torch_loader_is_its_datasets_getitem_and_collate(tmp_path: Path) -> None:
    seen: list[str] = []

    class Items(torch.utils.data.Dataset):
        "Eight random pairs"

        def __len__(self):
            return 8

        def __getitem__(self, i):
            seen.append("item")
            return torch.randn(2), torch.randn(1)

    def collate(batch):
        "Stacks the pairs"
        seen.append("collate")
        return torch.utils.data.default_collate(batch)

    dl = torch.utils.data.DataLoader(Items(), batch_size=4, collate_fn=collate)
    loop = data_loop(dl)
    next(iter(dl))
    assert seen == ["item"] * 4 + ["collate"]
    assert [(stage.name, stage.per, [s.name for s in stage.steps]) for stage in loop.stages] == [
        ("create_item", "item", ["Items.__getitem__"]), ("create_batch", "batch", ["collate"])]
    assert loop.stages[0].steps[0].doc == "Eight random pairs" or loop.stages[0].steps[0].source is not None
    assert loop.settings == {"bs": 4, "num_workers": 0, "persistent_workers": False, "pin_memory": False,
                             "drop_last": False}


def test_the_learner_shows_it_and_names_from_user_code_are_escaped() -> None:
    dls = block_loaders()
    learn = Learner(dls, nn.Linear(1, 1), loss_func=nn.MSELoss())
    text = str(learn.show_data_loop())
    lines = text.splitlines()
    assert lines[0] == "draw: the train loader's loop (TfmdDL, fastai)"
    assert any("Scale  (order 1)  Halves each number" in line for line in lines)
    assert any("TrainNoise  (order 3, train only)  Adds a little noise, in training only" in line for line in lines)
    assert "train only, does not run: for the other split's loader only" in str(learn.show_data_loop("valid"))
    assert "ToTensor  (order 5, does not run: no encodes registered" in text  # (fastai.vision registers its encodes)
    class Evil(Transform):
        def encodes(self, x: torch.Tensor):
            return x

    Evil.__name__, Evil.__qualname__, Evil.__doc__ = "Evil\x1b[31m", "Evil\x1b[31m", "bad\x07doc"
    dls.train.after_batch.add(Evil())
    shown = data_loop_text(learn.data_loop())
    assert "\x1b" not in shown and "\x07" not in shown and "Evil\\x1b[31m" in shown
    with pytest.raises(LoopvizError, match="'train' or 'valid'|one of"):
        learn.data_loop("test")
    with pytest.raises(LoopvizError, match="not a fastai or torch DataLoader"):
        data_loop([1, 2, 3])


def test_a_function_given_for_a_stage_is_its_step_and_the_loaders_own_noop_is_none() -> None:
    from fastai.data.load import DataLoader

    def halve(batch):
        "Halves the batch"
        return [b / 2 for b in batch]

    dl = DataLoader(list(range(8)), bs=4, after_batch=halve)
    loop = data_loop(dl)
    stages = {stage.name: [step.name for step in stage.steps] for stage in loop.stages}
    assert stages["after_batch"] == ["halve"] and stages["after_item"] == [] and stages["before_batch"] == []
    assert next(iter(dl))[0] == 0 and loop.stages[-1].steps[0].doc == "Halves the batch"


def test_a_tabular_loader_reads_rows_per_batch_and_its_procs_ran_once(tmp_path: Path, monkeypatch) -> None:
    import pandas as pd
    from fastai.tabular.core import Categorify, FillMissing, Normalize, TabDataLoader, TabularPandas

    df = pd.DataFrame({"a": [1.0, 2.0, None, 4.0] * 8, "c": ["x", "y"] * 16, "y": [0.0, 1.0] * 16})
    to = TabularPandas(df, procs=[Categorify, FillMissing, Normalize], cat_names=["c"], cont_names=["a"],
                       y_names="y", splits=(list(range(24)), list(range(24, 32))))
    dl = to.dataloaders(bs=8).train
    loop = data_loop(dl)
    called: list[str] = []
    for method in ("do_item", "create_item", "create_batch"):  # the spy: which of the loader's methods ran
        original = getattr(TabDataLoader, method)
        monkeypatch.setattr(TabDataLoader, method,
                            lambda self, x, _m=method, _o=original: called.append(_m) or _o(self, x))
    with TransformSpy(tmp_path / "ran.tsv") as spy:
        next(iter(dl))
    assert set(called) == {"do_item", "create_batch"} and called.count("create_batch") == 1  # never create_item
    stages = {stage.name: [step.name for step in stage.steps] for stage in loop.stages}
    assert list(stages) == ["do_item", "before_batch", "create_batch", "retain", "to_device", "after_batch"]
    assert stages["do_item"] == ["TabDataLoader.do_item"] and stages["create_batch"] == ["TabDataLoader.create_batch"]
    assert [name for name, _ in spy.ran()] == [s for s in stages["after_batch"]
                                               if next(t for t in loop.stages[-1].steps if t.name == s).runs]
    assert "ReadTabBatch" in stages["after_batch"]
    assert loop.notes[-1].endswith("procs ran once, when the data was made, not per batch: FillMissing, "
                                  "RegressionSetup, Categorify, Normalize")  # (in the order fastai ran them)



def test_the_loop_views_show_each_draw_with_the_loop_of_its_loader() -> None:
    dls = block_loaders()
    learn = Learner(dls, nn.Linear(1, 1), loss_func=nn.MSELoss())
    draws = []
    learn.loop_spec().map(work=lambda w, phase: draws.append((phase.mode, w.data_loop)) or w)
    found = {mode: loop for mode, loop in draws if loop is not None}
    assert found["train"] == data_loop(dls.train, "train") and found["valid"] == data_loop(dls.valid, "valid")
    lines = str(learn.show_training_loop(verbose=True)).splitlines()
    head = next(i for i, line in enumerate(lines) if "the train loader's loop (TfmdDL, num_workers=0):" in line)
    depth = len(lines[head]) - len(lines[head].lstrip())
    nested = [line.strip() for line in lines[head + 1:head + 14]]
    assert nested[0] == "create_item  per item, in the main process"  # the stages, nested under draw, in order
    assert nested[1].startswith("noop (element 0)  (order 0)") and nested[2].startswith("as_number (element 0)")
    assert all(len(line) - len(line.lstrip()) > depth for line in lines[head + 1:head + 14])
    text = " ".join(" ".join(lines).split())  # (lines wrapped at the view's width)
    assert "TrainNoise (order 3, train only) Adds a little noise, in training only" in text
    assert "TrainNoise (order 3, train only, does not run: for the other split's loader only)" in text  # valid's
    dot = learn.show_training_loop(verbose=True, fmt="graphviz").source
    assert "loop (TfmdDL, num_workers=0)" in dot and "<S>TrainNoise</S>" in dot
