"""The data loop model: what a loader does between two batches of the training loop, stage by stage.

A loader is a loop of its own: per item it makes the item and transforms it, per batch it collates the items and
transforms the batch, some of it in worker processes, the rest in the main process. Adapters build a `DataLoop`
(`loopviz.adapters.fastai.dataloop`); renderers only read it. Nothing in this module knows about fastai.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from loopviz.model import SourceRef

__all__ = ["DataStep", "DataStage", "DataLoop", "Per", "Split"]

Per = Literal["item", "batch"]
Split = Literal["both", "train only", "valid only"]


@dataclass(frozen=True)
class DataStep:
    """One transform or function a stage applies, in the order it applies them."""

    name: str  # its class (or function) name
    doc: str = ""
    order: Optional[int] = None  # a fastai Transform's `order` (the pipeline sorts by it)
    split: Split = "both"  # the split it runs on (a fastai Transform's `split_idx`)
    runs: bool = True  # whether it runs in this loader
    source: Optional[SourceRef] = None
    note: str = ""  # why it does not run (another split's, or nothing to run), or what else to know


@dataclass(frozen=True)
class DataStage:
    """One stage of the loader's loop: its steps, how often it runs and where."""

    name: str  # the loader's name for it: create_item, after_item, before_batch, create_batch...
    per: Per
    where: str  # 'worker processes' or 'main process'
    description: str
    steps: tuple[DataStep, ...] = ()
    device: str = "cpu"  # where its tensors are (after the move to the device: the loader's device)


@dataclass(frozen=True)
class DataLoop:
    """A loader's loop: its settings and its stages in the order they run for each batch."""

    name: str  # 'train', 'valid'...
    loader: str  # the loader's class name
    framework: str
    stages: tuple[DataStage, ...]
    settings: dict[str, object] = field(default_factory=dict)  # bs, num_workers, persistent_workers, pin_memory...
    notes: tuple[str, ...] = ()
    # from a trace with data=True (`loopviz.annotate`): (stage, step, ms per batch, % of the loader's work) per stage
    # (step '') and per step timed
    timing: tuple[tuple[str, str, float, float], ...] = ()

    def timed(self, stage: str, step: str = "") -> Optional[tuple[float, float]]:
        """(ms per batch, % of the loader's work) of a stage (or one of its steps) in the trace, if timed."""
        return next(((ms, pct) for name, part, ms, pct in self.timing if name == stage and part == step), None)

    def steps(self) -> list[tuple[str, DataStep]]:
        """Every step, with its stage's name, in the order the loop applies them."""
        return [(stage.name, step) for stage in self.stages for step in stage.steps]
