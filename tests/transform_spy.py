"""An independent record of which fastai transforms ran, and in which process, written without loopviz: a wrapper
of fasttransform's `Transform._do_call` (which runs only when a transform applies) appending a line per transform to
a file, so that the loader's worker processes report too. The outermost call only: a transform of a tuple runs once
per element inside one call."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from fastai.data.all import Transform

TRANSFORM = type(Transform(lambda x: x))  # fastai's Transform class (from fasttransform)


def display_name(tfm: Any) -> str:
    """A transform as fastai names it (its `name`: a function's name for `Transform(f)`)."""
    return getattr(tfm, "name", type(tfm).__name__)


class TransformSpy:
    """`with TransformSpy(path) as spy: ...`, then `spy.ran()`: every transform that ran, in order, as (name, process
    id); `named` says what to call each transform (fastai's name by default)."""

    def __init__(self, path: Path, named: Callable[[Any], str] = display_name):
        self.path, self.named, self.depth = path, named, threading.local()

    def __enter__(self) -> TransformSpy:
        original, spy = TRANSFORM._do_call, self

        def _do_call(tfm: Any, nm: str, *args: Any, **kwargs: Any) -> Any:
            depth = getattr(spy.depth, "n", 0)
            if depth == 0 and nm == "encodes":
                with open(spy.path, "a") as f:
                    f.write(f"{spy.named(tfm)}\t{os.getpid()}\n")
            spy.depth.n = depth + 1
            try:
                return original(tfm, nm, *args, **kwargs)
            finally:
                spy.depth.n = depth

        self.original = original
        TRANSFORM._do_call = _do_call
        return self

    def __exit__(self, *exc: Any) -> None:
        TRANSFORM._do_call = self.original

    def ran(self) -> list[tuple[str, int]]:
        """(name, process id) of each transform that ran, in order."""
        if not self.path.exists():
            return []
        return [(name, int(pid)) for name, pid in (line.split("\t") for line in self.path.read_text().splitlines())]
