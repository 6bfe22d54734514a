"""The data loop of a fastai loader (`learn.data_loop()`): what `draw` does, stage by stage (`loopviz.dataloop`).

fastai's `DataLoader.__iter__` (fastai/data/load.py): in the worker processes when `num_workers > 0` (its
`_FakeLoader` runs `create_batches` there), else in the main process, per item `create_item` (the dataset's
`__getitem__`: a `Datasets`' or `TfmdLists`' type transforms) then `after_item`; per batch `before_batch`,
`create_batch` (`fa_collate`, or `fa_convert` without a batch size) and `retain` (types kept); then in the main
process the move to the loader's device and `after_batch`. A `Pipeline` applies its transforms sorted by `order`; a
transform whose `split_idx` is not the loader's is skipped. A torch `DataLoader` in a fastai `DataLoaders` is
described by its own stages: the dataset's `__getitem__` and `collate_fn`; the Learner moves its batches.
"""
from __future__ import annotations

from typing import Any

from fastai.data.load import DataLoader as FastaiLoader
from fastai.learner import Learner
from fastcore.basics import patch

from loopviz.adapters.torch_loader import callable_step, first_line, getitem_step, source_of, torch_data_loop
from loopviz.checks import check_choice
from loopviz.dataloop import DataLoop, DataStage, DataStep, Split
from loopviz.errors import LoopvizError

__all__ = ["data_loop", "show_data_loop", "transform_step", "overrides", "stage_of"]

_SPLITS: dict[Any, Split] = {None: "both", 0: "train only", 1: "valid only"}


_BASE_MODULES = ("fasttransform.transform", "fastcore.transform")  # where fastai's Transform class comes from


def transform_step(tfm: Any, split: Any) -> DataStep:
    """A fastai Transform as a step, with whether it runs on the loader's split. A Transform made from a function
    (`Transform(f)`, a DataBlock's getters) is described by that function."""
    wrapped = type(tfm).__name__ == "Transform" and type(tfm).__module__ in _BASE_MODULES
    # a transform made from a function by its name (a DataBlock's getters), any other by its class: `tfm.name` may be
    # a repr of its state (Normalize's, with newlines)
    name = str(getattr(tfm, "name", None) or type(tfm).__name__) if wrapped else type(tfm).__name__
    defined = getattr(getattr(tfm, "encodes", None), "_f", None) if wrapped else type(tfm)
    doc = first_line(getattr(defined, "__doc__", None)) if defined is not None else ""
    tfm_split = getattr(tfm, "split_idx", None)
    order = getattr(tfm, "order", None)
    note = ""
    if not (split is None or tfm_split is None or tfm_split == split):
        note = "for the other split's loader only"
    elif not hasattr(tfm, "encodes") and hasattr(tfm, "split_idx"):  # a Transform with nothing registered to run
        note = "no encodes registered: it passes items through unchanged"
    return DataStep(name, doc, order if isinstance(order, int) else None, _SPLITS.get(tfm_split, "both"), not note,
                    source_of(defined) if defined is not None else None, note)


def _pipeline(pipe: Any, split: Any) -> tuple[DataStep, ...]:
    """A Pipeline's transforms in the order it applies them (its `fs`, sorted by `order`); a function given in its
    place (`DataLoader(after_batch=f)`) as one step; the loader's own no-op method as none."""
    if hasattr(pipe, "fs"):
        return tuple(transform_step(tfm, split) for tfm in pipe.fs or ())
    if pipe is None or isinstance(getattr(pipe, "__self__", None), FastaiLoader):
        return ()
    return (callable_step(pipe),)


def _item_steps(dataset: Any, split: Any) -> tuple[DataStep, ...]:
    """What making an item runs: a Datasets' type transforms (per element), a TfmdLists', or `__getitem__`."""
    if hasattr(dataset, "tls"):  # Datasets: one TfmdLists per element of the tuple
        steps: list[DataStep] = []
        for index, tl in enumerate(dataset.tls):
            for step in _pipeline(getattr(tl, "tfms", None), split):
                steps.append(DataStep(f"{step.name} (element {index})", step.doc, step.order, step.split, step.runs,
                                      step.source, step.note))
        return tuple(steps)
    if hasattr(dataset, "tfms") and hasattr(dataset, "items"):  # TfmdLists
        return _pipeline(dataset.tfms, split)
    return (getitem_step(dataset),)


def _fastai_loop(dl: FastaiLoader, name: str) -> DataLoop:
    workers = int(getattr(dl.fake_l, "num_workers", 0) or 0)
    where = "worker processes" if workers > 0 else "main process"
    split = getattr(dl, "split_idx", None)
    split = split if split in (0, 1) else None
    device = str(dl.device) if dl.device is not None else "cpu"
    collate = "fa_convert" if dl.bs is None else "fa_collate"
    if overrides(dl, "do_item"):  # (a tabular loader: an item is its index, the rows are read per batch)
        items = (DataStage("do_item", "item", where, "the loader's own do_item, in place of create_item and "
                           "after_item", (callable_step(stage_of(dl, "do_item")),)),)
    else:
        made = ((callable_step(stage_of(dl, "create_item")),) if overrides(dl, "create_item") else
                _item_steps(dl.dataset, split))
        items = (DataStage("create_item", "item", where, "the item is made: the dataset's __getitem__ or type "
                           "transforms, or the loader's own create_item", made),
                 DataStage("after_item", "item", where, "the item transforms", _pipeline(stage_of(dl, "after_item"), split)))
    batch = ((callable_step(stage_of(dl, "create_batch")),) if overrides(dl, "create_batch") else
             (DataStep(collate, "collates the items into tensors" if collate == "fa_collate" else
                       "converts a batch the dataset made"),))
    stages = (
        *items,
        DataStage("before_batch", "batch", where, "the transforms of the batch's items before collating",
                  _pipeline(stage_of(dl, "before_batch"), split)),
        DataStage("create_batch", "batch", where, "the items made into one batch", batch),
        DataStage("retain", "batch", where, "the items' types given back to the batch (retain_types)"),
        DataStage("to_device", "batch", "main process", f"the batch moved to {device}", device=device),
        DataStage("after_batch", "batch", "main process", "the batch transforms", _pipeline(stage_of(dl, "after_batch"), split),
                  device=device),
    )
    settings = {"bs": dl.bs, "num_workers": workers,
                "persistent_workers": bool(getattr(dl.fake_l, "persistent_workers", False)),
                "pin_memory": bool(dl.pin_memory), "drop_last": bool(dl.drop_last), "shuffle": bool(dl.shuffle),
                "device": device}
    notes = ("fastai's DataLoader starts its worker processes again at every pass, whatever persistent_workers "
             "says",) if workers > 0 else ()
    procs = getattr(getattr(dl.dataset, "procs", None), "fs", None)
    if procs:  # TabularPandas: processed once, when it was made, not per batch
        notes += (f"its procs ran once, when the data was made, not per batch: "
                  f"{', '.join(type(p).__name__ for p in procs)}",)
    return DataLoop(name, type(dl).__name__, "fastai", stages, settings, notes)


def stage_of(dl: Any, method: str) -> Any:
    """The loader's own stage `method` (a bound method, or the function it was given), seen through a trace's timing
    wrapper (`loopviz.adapters.fastai.datatimer`)."""
    own = getattr(dl, method, None)
    return own.original if getattr(own, "__loopviz_wrapper__", False) else own


def overrides(dl: Any, method: str) -> bool:
    """True when the loader's class replaces fastai's DataLoader method (or the loader was given a function for it)."""
    own = stage_of(dl, method)
    return getattr(own, "__func__", own) is not getattr(FastaiLoader, method)


def data_loop(dl: Any, name: str = "train") -> DataLoop:
    """The data loop of one loader: a fastai DataLoader (TfmdDL included) or a torch DataLoader."""
    import torch

    if isinstance(dl, FastaiLoader):
        return _fastai_loop(dl, name)
    if isinstance(dl, torch.utils.data.DataLoader):
        return torch_data_loop(dl, name, notes=("a torch DataLoader: the Learner moves each batch to the device in "
                                                "its training step",))
    raise LoopvizError(f"{type(dl).__name__} is not a fastai or torch DataLoader: loopviz describes those loaders' "
                       "loops only; pass learn.dls.train or learn.dls.valid.")


@patch
def data_loop(self: Learner,
              which: str = "train",  # 'train' or 'valid': which of the learner's loaders
              ) -> DataLoop:
    "The loop the learner's `which` loader runs for each batch (what `draw` does), stage by stage"
    check_choice("which", which, ["train", "valid"])
    dls = getattr(self, "dls", None)
    if dls is None:
        raise LoopvizError("this learner has no DataLoaders (learn.dls); create it with its data first.")
    return data_loop(getattr(dls, which), which)


@patch
def show_data_loop(self: Learner,
                   which: str = "train",  # 'train' or 'valid': which of the learner's loaders
                   ) -> Any:
    "Show the loop the learner's `which` loader runs for each batch (what `draw` does): its stages and transforms"
    from loopviz.renderers.dataloop import DataLoopView

    return DataLoopView(self.data_loop(which))
