"""What every adapter notes about a run's set-up as its trace starts or ends (the trace's meta), for a diagnosis:
the model's precision in Lightning's words, a torch loader's settings, the machine's CPU cores."""
from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["weights_precision", "torch_loader_facts", "cpu_facts"]

_NAMES = {"torch.float64": "64", "torch.float16": "16-true", "torch.bfloat16": "bf16-true"}


def weights_precision(model: Any) -> str:
    """'32', '64', '16-true' or 'bf16-true' from the model's first parameter ('32' for a model without any)."""
    try:
        dtype = str(next(model.parameters()).dtype)
    except (StopIteration, AttributeError, TypeError):
        return "32"
    return _NAMES.get(dtype, "32")


_NOTED = ("bs", "num_workers", "persistent_workers", "pin_memory")  # the loader settings a diagnosis names


def torch_loader_facts(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a diagnosis names of a torch loader's settings (`loopviz.adapters.torch_loader.loader_settings`, or a
    framework's own for the loader it will make), as `meta['loaders'][name]`: bs, num_workers, persistent_workers,
    pin_memory (those that are non-negative ints or bools), and that the loader keeps its workers' restarts to torch."""
    facts = {**{key: settings.get(key) for key in _NOTED}, "restarts_workers": False}
    return {key: value for key, value in facts.items()
            if (type(value) is int and value >= 0) or type(value) is bool}


def cpu_facts() -> dict[str, int]:
    """The machine's CPU cores (`meta['cpus']`), when Python knows them."""
    cpus = os.cpu_count()
    return {"cpus": cpus} if cpus else {}
