"""What every adapter notes about a run's set-up as its trace starts or ends (the trace's meta), for a diagnosis:
the model's precision in Lightning's words, a torch loader's settings, the machine's CPU cores."""
from __future__ import annotations

import os
from typing import Any

__all__ = ["weights_precision", "torch_loader_facts", "cpu_facts"]

_NAMES = {"torch.float64": "64", "torch.float16": "16-true", "torch.bfloat16": "bf16-true"}


def weights_precision(model: Any) -> str:
    """'32', '64', '16-true' or 'bf16-true' from the model's first parameter ('32' for a model without any)."""
    try:
        dtype = str(next(model.parameters()).dtype)
    except (StopIteration, AttributeError, TypeError):
        return "32"
    return _NAMES.get(dtype, "32")


def torch_loader_facts(loader: Any) -> dict[str, Any]:
    """A torch DataLoader's settings a diagnosis names (`meta['loaders'][name]`): bs, num_workers,
    persistent_workers, pin_memory; only those it has, as non-negative ints and bools."""
    facts = {"bs": getattr(loader, "batch_size", None), "num_workers": getattr(loader, "num_workers", None),
             "persistent_workers": getattr(loader, "persistent_workers", None),
             "pin_memory": getattr(loader, "pin_memory", None), "restarts_workers": False}
    return {key: value for key, value in facts.items()
            if (type(value) is int and value >= 0) or type(value) is bool}


def cpu_facts() -> dict[str, int]:
    """The machine's CPU cores (`meta['cpus']`), when Python knows them."""
    cpus = os.cpu_count()
    return {"cpus": cpus} if cpus else {}
