"""The data loop of a torch `DataLoader`, for every adapter (`loopviz.dataloop`): per item the dataset's
`__getitem__`, per batch the `collate_fn`, in the worker processes when `num_workers > 0`; the pinned-memory copy
in a thread of the main process. Moving the batch to the device is the training loop's, which each adapter notes."""
from __future__ import annotations

import inspect
from typing import Any

from loopviz.dataloop import DataLoop, DataStage, DataStep
from loopviz.model import SourceRef

__all__ = ["torch_data_loop", "loader_settings", "first_loader", "getitem_step", "callable_step", "first_line",
           "source_of"]


def first_line(text: str | None) -> str:
    """A docstring's first line ('' for none)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def source_of(obj: Any) -> SourceRef | None:
    """Where `obj` (a function or class) is defined, when Python knows."""
    try:
        target = inspect.unwrap(obj)
        return SourceRef(inspect.getsourcefile(target) or "", inspect.getsourcelines(target)[1])
    except (TypeError, OSError):
        return None


def getitem_step(dataset: Any) -> DataStep:
    """A dataset's `__getitem__` as the step that makes an item."""
    getitem = getattr(type(dataset), "__getitem__", None)
    return DataStep(f"{type(dataset).__name__}.__getitem__", first_line(getattr(getitem, "__doc__", None)),
                    source=source_of(getitem))


def callable_step(func: Any) -> DataStep:
    """A function, a method (named with its class) or an object called as one (a data collator), as a step."""
    plain = inspect.isfunction(func) or inspect.ismethod(func)
    defined = func if plain else type(func)
    named = "__qualname__" if inspect.ismethod(func) else "__name__"  # (a method with its class: the defining one)
    name = getattr(func, named, None) if plain else type(func).__name__
    return DataStep(str(name or type(func).__name__), first_line(getattr(defined, "__doc__", None)),
                    source=source_of(defined))


def loader_settings(dl: Any) -> dict[str, object]:
    """A torch DataLoader's settings: bs, num_workers, persistent_workers, pin_memory, drop_last."""
    return {"bs": dl.batch_size, "num_workers": int(getattr(dl, "num_workers", 0) or 0),
            "persistent_workers": bool(getattr(dl, "persistent_workers", False)),
            "pin_memory": bool(getattr(dl, "pin_memory", False)), "drop_last": bool(dl.drop_last)}


def first_loader(loaders: Any) -> tuple[Any, bool]:
    """The first loader of a framework's loaders (a loader, or a list, tuple or dict of them, nested), and whether
    there were several."""
    several = False
    while isinstance(loaders, (list, tuple, dict)) and loaders:
        several = True
        loaders = next(iter(loaders.values())) if isinstance(loaders, dict) else loaders[0]
    return loaders, several


def torch_data_loop(dl: Any, name: str, framework: str = "torch", notes: tuple[str, ...] = (),
                    dataset: Any = None, collate: Any = None, settings: dict[str, object] | None = None) -> DataLoop:
    """The loop of a torch DataLoader (`dl`), or of the loader a framework will make from `dataset`, `collate` and
    `settings` (bs, num_workers, persistent_workers, pin_memory, drop_last) when `dl` is None."""
    if dl is not None:
        dataset, collate, settings = dl.dataset, dl.collate_fn, loader_settings(dl)
    settings = dict(settings or {})
    where = "worker processes" if int(settings.get("num_workers") or 0) > 0 else "main process"
    collated = callable_step(collate) if collate is not None else DataStep("default_collate")
    stages = [DataStage("create_item", "item", where, "the dataset makes the item", (getitem_step(dataset),)),
              DataStage("create_batch", "batch", where, f"{collated.name}: the items collated into one batch",
                        (collated,))]
    if settings.get("pin_memory"):
        stages.append(DataStage("pin_memory", "batch", "main process", "the batch copied to pinned memory (a thread "
                                "of the main process)"))
    return DataLoop(name, type(dl).__name__ if dl is not None else "DataLoader", framework, tuple(stages), settings,
                    notes)
