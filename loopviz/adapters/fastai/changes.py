"""What a fastai callback's call changed (`learn.trace(changes=True)`): learner attributes rebound, added or deleted, the
optimizer's hyper-parameters, and with `tensors=True` tensors modified in place."""
from __future__ import annotations

from typing import Any

import torch
from fastcore.foundation import L

__all__ = ["Snapshot", "state_snapshot", "changed_state", "MISSING_VALUE"]

MISSING_VALUE = object()


# What a tracked call changed: the learner attributes it rebound, added or deleted are seen as they are written (the
# wrapped Learner.__setattr__/__delattr__ note each one's value before the call's first write); the optimizer's
# hyper-parameters, which are plain dicts written in place, and tensor version counters are compared before and after.
Snapshot = tuple[Any, list[dict[str, Any]], dict[str, Any]]


def state_snapshot(attrs: dict[str, Any], tensors: bool) -> Snapshot:
    """What a tracked call's outcome is compared with, from the learner's `__dict__`: the optimizer, its
    hyper-parameters (copied) and, with `tensors`, the tensor version counters (cheap fingerprints of in-place changes)."""
    opt = attrs.get("opt")
    return opt, list(map(dict, _hyper_dicts(opt))), _tensor_versions(attrs) if tensors else {}


def _hyper_dicts(opt: Any) -> list[dict[str, Any]]:
    """The optimizer's hyper-parameter dicts (one per parameter group), as the list that holds them (fastai keeps
    them in an `L`, whose own iteration is Python code)."""
    hypers = getattr(opt, "hypers", None) if opt is not None else None
    return hypers.items if isinstance(hypers, L) else list(hypers or ())


def changed_state(attrs: dict[str, Any], written: dict[str, Any], before: Snapshot, tensors: bool) -> list[str]:
    """Names of what changed, from the learner's `__dict__`: learn.<attr> rebound, added or deleted (by identity:
    written back as it was is no change); learn.opt.hypers.<name> (by value); with `tensors`, '<name> (in place)'
    for tensors modified in place."""
    names = [f"learn.{k}" for k, old in written.items() if attrs.get(k, MISSING_VALUE) is not old] if written else []
    opt_before, hypers_before, versions_before = before
    opt = attrs.get("opt")
    if opt is not None and opt is opt_before and hypers_before:
        hypers = _hyper_dicts(opt)
        if hypers != hypers_before:  # most calls change no hyper-parameter: one comparison of the lists, in C
            keys: list[str] = []
            for old, new in zip(hypers_before, hypers):
                keys += [k for k, v in new.items() if k not in keys and old.get(k, MISSING_VALUE) != v]
            names += [f"learn.opt.hypers.{k}" for k in keys]
    if tensors:
        versions = _tensor_versions(attrs)
        names += [f"{k} (in place)" for k, v in versions.items()
                  if k in versions_before and versions_before[k] != v and f"learn.{k.split('.')[1]}" not in names]
    return names


def _tensor_versions(attrs: dict[str, Any]) -> dict[str, Any]:
    """Version counters (bumped by every in-place op) of the learner's tensors and of the model's gradients."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, torch.Tensor):
            out[f"learn.{key}"] = value._version
        elif isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            out[f"learn.{key}"] = tuple(v._version for v in value)
    model = attrs.get("model")
    if model is not None:
        out["learn.model.grads"] = tuple(-1 if p.grad is None else p.grad._version for p in model.parameters())
        out["learn.model.parameters"] = tuple(p._version for p in model.parameters())
    return out
