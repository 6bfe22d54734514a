"""How low any in-process Python tracer of Lightning's dispatch can go: whole fits (callgrind) under two stand-ins
that are not loopviz, beside loopviz's tracer.

The fit is `instructions_lightning.py`'s (a tiny linear model, batches of 4, one torch thread: Lightning's own dispatch
dominates). Lightning dispatches every hook through four functions of `lightning.pytorch.trainer.call`; the stand-ins
replace them as loopviz does, with:

- `pass-through`: a wrapper that only calls the original (`*args, **kwargs` in, the same out);
- `leanest rows`: the least a tracer that keeps loopviz's rows can do: per dispatch, a join of the pending firing
  if it is of the same hook, else the pending one's row closed and a row opened (the clock, the epoch and batch index
  read from the fit loop's progress, the parent, an event id from a dict), the thread's dispatch stack pushed and
  popped, the clock read at the end. No handler timing, caps, packing, loops, modes, plans or error handling: it
  records less than loopviz must, so its ratio is a floor, not a design.

    .venv/bin/python benchmarks/lightning_floor.py [--steps 100]

Needs valgrind (Debian: apt-get install valgrind).
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
from callgrind import counted, run_under_callgrind  # noqa: E402

DISPATCH = ("_call_callback_hooks", "_call_lightning_module_hook", "_call_strategy_hook",
            "_call_lightning_datamodule_hook")
KINDS = ("plain", "pass-through", "leanest rows", "loopviz")


def pass_through(original: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper that only calls `original`."""
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)
    return dispatch


class _Inside(threading.local):
    """Per thread, the stand-ins whose dispatch the thread is inside."""

    def __init__(self) -> None:
        self.inside: list[Any] = []


class LeanestRows:
    """The stand-in that keeps a row per firing (see the module's doc); `wrap(original)` makes its wrapper."""

    def __init__(self) -> None:
        self.values: list[Any] = []  # nine values per row, as loopviz's recorder keeps them before packing
        self.ids: dict[str, int] = {}
        self.pending: list[Any] = [None, -1, 0]  # the pending firing's hook, where its row starts, its end
        self.cur = [-1]  # the innermost open firing's row
        self.stack = _Inside()

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """A dispatch wrapper recording into this stand-in."""
        values, ids, pending, cur, local = self.values, self.ids, self.pending, self.cur, self.stack
        extend, now = values.extend, perf_counter_ns

        def dispatch(*args: Any, **kwargs: Any) -> Any:
            trainer, hook = args[0], args[1]
            if pending[0] == hook:
                pending[0] = None
                at = pending[1]
            else:
                if pending[0] is not None:
                    closing = pending[1]
                    values[closing + 8] = pending[2] - values[closing]
                    cur[0] = values[closing + 4]
                    pending[0] = None
                eid = ids.get(hook)
                if eid is None:
                    eid = ids[hook] = len(ids)
                at = len(values)
                fit_loop = trainer.fit_loop
                extend((now(), fit_loop.epoch_progress.current.completed,
                        fit_loop.epoch_loop.batch_progress.current.ready - 1, 0, cur[0], eid, 1, 0, None))
                cur[0] = at
            inside = local.inside
            inside.append(self)
            result = original(*args, **kwargs)
            inside.pop()
            if pending[0] is not None:  # a nested firing, pending still, ends first
                closing = pending[1]
                values[closing + 8] = pending[2] - values[closing]
                cur[0] = values[closing + 4]
            pending[0], pending[1], pending[2] = hook, at, now()
            return result

        return dispatch


def measure(steps: int) -> None:
    """Inside callgrind: a warm-up fit of each kind, then each counted on a fresh trainer."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch
    from lightning.pytorch.trainer import call

    import instructions_lightning as bench
    from loopviz.adapters import lightning as lv

    torch.set_num_threads(1)
    originals = {name: getattr(call, name) for name in DISPATCH}

    def fit(kind: str) -> Callable[[], None]:
        trainer, module = bench._trainer(steps, False)
        if kind == "loopviz":
            return lambda: _traced_fit(lv, trainer, module)
        return lambda: _wrapped_fit(kind, call, originals, trainer, module)

    for kind in KINDS:
        fit(kind)()
    for kind in KINDS:
        counted(kind.replace(" ", "-"), fit(kind), collect=True)


def _traced_fit(lv: Any, trainer: Any, module: Any) -> None:
    with lv.trace(trainer):
        trainer.fit(module)


def _wrapped_fit(kind: str, call: Any, originals: dict[str, Any], trainer: Any, module: Any) -> None:
    """Fit with the stand-in `kind` in Lightning's dispatch functions (plain: none), then put them back."""
    make = {"plain": None, "pass-through": pass_through, "leanest rows": LeanestRows().wrap}[kind]
    if make is not None:
        for name in DISPATCH:
            setattr(call, name, make(originals[name]))
    try:
        trainer.fit(module)
    finally:
        for name in DISPATCH:
            setattr(call, name, originals[name])


def main() -> None:
    """Count the fits under callgrind and print each ratio to the plain fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps of each fit")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args.steps)
        return
    totals = run_under_callgrind(__file__, ["--steps", str(args.steps), "--inside"])
    plain = totals["plain"]
    print(f"Lightning trainer.fit ({args.steps} steps of 4, one torch thread), callgrind: {plain:,} instructions plain")
    for kind in KINDS[1:]:
        print(f"  {kind:14s} {totals[kind.replace(' ', '-')] / plain:.4f}")


if __name__ == "__main__":
    main()
