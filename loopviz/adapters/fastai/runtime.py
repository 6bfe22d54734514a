"""What some fastai callbacks do to the loop at run time, in two small tables a static spec can apply.

Checked against fastai 2.8.12 (`grep -n "self.run *=" fastai/callback/*.py`, and every callback that
calls `get_preds` or `one_batch`). Classes are named by `module.qualname` and matched through the
callback's MRO, so wandb, tensorboard and the like are recognised without being imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["Condition", "LR_FINDER", "GATHER_PREDS", "NO_GATHER_PREDS", "NOT_RANK_0", "SWITCH_OFF", "NESTED_LOOPS",
           "switch_off_reason", "nested_loop_notes"]

# Whether the learner has an attribute during the loop (`learn.lr_finder`...), and this process's rank.
Present = Callable[[str], bool]


@dataclass(frozen=True)
class Condition:
    """One test a callback's before_fit makes to set `self.run = False`, and how a view words it."""

    attr: str | None
    present: bool  # True: off when learn.<attr> exists; False: off when it does not
    reason: str

    def holds(self, has: Present, rank: int) -> bool:
        """True when this condition switches the callback off in a loop where `has(attr)` and `rank` hold."""
        if self.attr is None:
            return rank != 0
        return has(self.attr) == self.present


LR_FINDER = Condition("lr_finder", True, "learn.lr_finder exists (lr_find)")
GATHER_PREDS = Condition("gather_preds", True, "learn.gather_preds exists (get_preds, predict)")
NO_GATHER_PREDS = Condition("gather_preds", False, "learn.gather_preds does not exist (it runs only in get_preds)")
NOT_RANK_0 = Condition(None, False, "rank_distrib() != 0 (not the main process)")

# Classes whose own before_fit sets `self.run = not (...)`, with the conditions it tests, in its order.
SWITCH_OFF: dict[str, tuple[Condition, ...]] = {
    "fastai.callback.tracker.TrackerCallback": (LR_FINDER, GATHER_PREDS),  # SaveModel, EarlyStopping, ReduceLROnPlateau
    "fastai.callback.progress.ShowGraphCallback": (LR_FINDER, GATHER_PREDS),
    "fastai.callback.wandb.WandbCallback": (LR_FINDER, GATHER_PREDS, NOT_RANK_0),
    "fastai.callback.tensorboard.TensorBoardCallback": (LR_FINDER, GATHER_PREDS, NOT_RANK_0),
    "fastai.callback.tensorboard.TensorBoardProjectorCallback": (LR_FINDER, NO_GATHER_PREDS, NOT_RANK_0),
}

# Classes that start a nested loop from inside an event, with the instance flag that must be on (or None).
NESTED_LOOPS: dict[str, tuple[str | None, str]] = {
    "fastai.callback.core.FetchPredsCallback": (None, (
        "FetchPredsCallback runs a nested learn.get_preds(inner=True) inside after_validate: before_validate, "
        "the validation batch events and after_validate fire again there, without the callbacks marked "
        "remove_on_fetch (Recorder, trackers, WandbCallback, FetchPredsCallback itself) and those in its own cbs. This static view does not show that nested loop."
    )),
    "fastai.callback.wandb.WandbCallback": ("log_preds", (
        "WandbCallback(log_preds=True) adds a FetchPredsCallback in before_fit (removed in after_fit), which runs a "
        "nested learn.get_preds(inner=True) inside after_validate. This static view shows neither."
    )),
    "fastai.callback.tensorboard.TensorBoardCallback": ("log_preds", (
        "TensorBoardCallback(log_preds=True) runs learn.one_batch on a validation batch inside after_epoch: "
        "before_batch, after_pred, after_loss and after_batch fire again there. This static view does not show it."
    )),
}


def _class_key(klass: type) -> str:
    """`module.QualName`, the key of both tables."""
    return f"{klass.__module__}.{klass.__qualname__}"


def _delegates_up(function: Any) -> bool:
    """True when an overriding before_fit may run its parent's (it names `before_fit` in its code: super().before_fit())."""
    code = getattr(function, "__code__", None)
    return code is not None and "before_fit" in code.co_names


def _switching_class(cb: Any) -> str | None:
    """The `SWITCH_OFF` class whose before_fit fastai runs for `cb` (inherited, or reached through super()), or None."""
    if "before_fit" in vars(cb):  # Callback(before_fit=f) replaces the class's handler
        return None
    for klass in type(cb).__mro__:
        function = vars(klass).get("before_fit")
        if function is None:
            continue
        if _class_key(klass) in SWITCH_OFF:
            return _class_key(klass)
        if not _delegates_up(function):
            return None
    return None


def switch_off_reason(cb: Any, has: Present, rank: int) -> str | None:
    """Why `cb` sets `self.run = False` in its before_fit in a loop where `has(attr)` tells which learner
    attributes exist and `rank` is this process's rank; None when it stays on (or loopviz does not know it)."""
    key = _switching_class(cb)
    if key is None:
        return None
    for condition in SWITCH_OFF[key]:
        if condition.holds(has, rank):
            return f"switches itself off in before_fit: {condition.reason}"
    return None


def nested_loop_notes(cbs: Iterable[Any]) -> list[str]:
    """One note per known class among `cbs` that starts a nested loop from inside an event, in MRO-match order."""
    notes: dict[str, str] = {}
    for cb in cbs:
        for klass in type(cb).__mro__:
            entry = NESTED_LOOPS.get(_class_key(klass))
            if entry is None:
                continue
            flag, note = entry
            if flag is None or getattr(cb, flag, False):
                notes.setdefault(_class_key(klass), note)
            break
    return list(notes.values())
