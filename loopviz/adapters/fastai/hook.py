"""Patch fastai's `Learner` when fastai is imported, without importing fastai (or torch) ourselves.

`import loopviz` must stay cheap, yet `learn.show_training_loop()` must be loopviz's whichever of
fastai and loopviz is imported first. If `fastai.learner` is already loaded, the patch is applied at
once; otherwise a finder on `sys.meta_path` waits for `fastai.learner` and applies the patch right after
that module has run (the post-import hook that `wrapt` also offers).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Sequence

__all__ = ["patch_fastai_when_imported", "FASTAI_MODULE"]

FASTAI_MODULE = "fastai.learner"
_PATCH_MODULE = "loopviz.adapters.fastai.patch"
_lock = threading.Lock()


def _apply_patch() -> None:
    """Import the module whose import patches `Learner` (show_training_loop, loop_spec, trace)."""
    importlib.import_module(_PATCH_MODULE)


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader of fastai.learner, then applies the patch; everything else goes to the real loader."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        try:
            _apply_patch()
        except Exception as e:  # never break the user's `import fastai...` because of loopviz
            warnings.warn(f"loopviz could not patch fastai's Learner ({type(e).__name__}: {e}); "
                          "`import loopviz` again after fastai to see the error.", RuntimeWarning, stacklevel=2)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename... for tracebacks and inspect
        return getattr(self.loader, name)


class _FastaiFinder(importlib.abc.MetaPathFinder):
    """Finds fastai.learner through the other finders and wraps its loader; finds nothing else."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != FASTAI_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def patch_fastai_when_imported() -> None:
    """Patch `Learner` now if fastai is loaded, else as soon as `fastai.learner` is imported (idempotent)."""
    with _lock:
        if FASTAI_MODULE in sys.modules:
            _apply_patch()
            return
        if not any(isinstance(f, _FastaiFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _FastaiFinder())
