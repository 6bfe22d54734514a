"""A model's precision as a trace notes it (`meta['precision']`), in Lightning's words, for every adapter."""
from __future__ import annotations

from typing import Any

__all__ = ["weights_precision"]

_NAMES = {"torch.float64": "64", "torch.float16": "16-true", "torch.bfloat16": "bf16-true"}


def weights_precision(model: Any) -> str:
    """'32', '64', '16-true' or 'bf16-true' from the model's first parameter ('32' for a model without any)."""
    try:
        dtype = str(next(model.parameters()).dtype)
    except (StopIteration, AttributeError, TypeError):
        return "32"
    return _NAMES.get(dtype, "32")
