"""Is the cost every view states ("tracing added about X ms") near what tracing really added? Against reality.

For each framework, one small fit is run many times, alternately untraced and traced; each run's CPU time is taken
inside the `with` block (entering and leaving the trace are not part of the run the views speak of). What tracing
really added is the fastest traced run minus the fastest untraced one (the minimum is the run least disturbed by the
rest of the machine; a single fit here varies by 30 %). Beside it, the estimate of the last traced run
(`t.tracing_cost()`: its firings and handler calls at the per-firing and per-call costs its adapter measured on a
stand-in loop). The ratio estimate/real is printed; 1.0 would be exact.

    .venv/bin/python benchmarks/tracing_cost.py [--runs 25] [--frameworks fastai,transformers,lightning]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))


def fastai_fit(batches: int) -> tuple[Callable[[], None], Callable[[], Any], Callable[[], None]]:
    """A fastai synthetic learner's one-epoch fit (five callbacks, two with step handlers), and how to trace it."""
    from instructions import make_learner

    learn = make_learner(batches)
    return (lambda: learn.fit(1)), learn.trace, lambda: None


def transformers_fit(batches: int) -> tuple[Callable[[], None], Callable[[], Any], Callable[[], None]]:
    """A Hugging Face Trainer of a tiny linear model, and how to trace it."""
    from instructions_transformers import _trainer
    from transformers.utils import logging as hf_logging

    from loopviz.adapters import transformers as hf

    hf_logging.set_verbosity_error()
    trainer = _trainer(tempfile.mkdtemp(prefix="loopviz-cost-"), batches)
    return trainer.train, lambda: hf.trace_trainer(trainer), lambda: None


def lightning_fit(batches: int) -> tuple[Callable[[], None], Callable[[], Any], Callable[[], None]]:
    """A Lightning fit of a tiny model (a fresh trainer and module each time, made before the run is timed), and
    how to trace it."""
    from instructions_lightning import _trainer

    from loopviz.adapters.lightning import trace as lightning_trace

    made: list[Any] = []

    def fresh() -> None:
        made[:] = _trainer(batches, False)

    def fit() -> None:
        trainer, module = made
        trainer.fit(module)

    def traced() -> Any:
        return lightning_trace(made[0])

    return fit, traced, fresh


FITS = {"fastai": fastai_fit, "transformers": transformers_fit, "lightning": lightning_fit}


def timed(fit: Callable[[], None], trace: Callable[[], Any] | None, fresh: Callable[[], None]) -> tuple[int, Any]:
    """CPU ns of one fit inside the trace's `with` block (or untraced), and the trace; `fresh` first, untimed."""
    fresh()
    if trace is None:
        start = time.process_time_ns()
        fit()
        return time.process_time_ns() - start, None
    with trace() as t:
        start = time.process_time_ns()
        fit()
        spent = time.process_time_ns() - start
    return spent, t


def compare(name: str, runs: int, batches: int) -> dict[str, float]:
    """The fastest untraced and traced runs of one framework's fit, and the last trace's estimate."""
    fit, trace, fresh = FITS[name](batches)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        timed(fit, None, fresh), timed(fit, trace, fresh)  # warm-up: first calls of torch and of the framework
        plain, traced, last = [], [], None
        for _ in range(runs):
            plain.append(timed(fit, None, fresh)[0])
            spent, last = timed(fit, trace, fresh)
            traced.append(spent)
    found = last.tracing_cost()
    if found is None:
        raise SystemExit(f"{name}: the trace measured no cost: {last.meta.get('tracing_cost')}")
    real_ms = (min(traced) - min(plain)) / 1e6
    return {"untraced_ms": min(plain) / 1e6, "traced_ms": min(traced) / 1e6, "real_ms": real_ms,
            "estimate_ms": found.added_ms, "firings": found.firings, "calls": found.calls,
            "per_firing_us": found.per_firing_us, "per_call_us": found.per_call_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="untraced and traced runs of each fit, alternating")
    parser.add_argument("--batches", type=int, default=100, help="training batches of each fit")
    parser.add_argument("--frameworks", default="fastai,transformers,lightning")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    import loopviz  # noqa: F401  (Learner.trace)

    torch.set_num_threads(1)
    print(f"{'framework':<13} {'untraced':>9} {'traced':>9} {'real added':>17} {'estimated':>17} {'est/real':>8}  "
          f"per firing, per call (firings, calls)")
    for name in args.frameworks.split(","):
        r = compare(name, args.runs, args.batches)
        real_pct, est_pct = 100 * r["real_ms"] / r["untraced_ms"], 100 * r["estimate_ms"] / r["untraced_ms"]
        ratio = r["estimate_ms"] / r["real_ms"] if r["real_ms"] > 0 else float("nan")
        print(f"{name:<13} {r['untraced_ms']:7.1f}ms {r['traced_ms']:7.1f}ms {r['real_ms']:7.2f}ms ({real_pct:4.1f} %) "
              f"{r['estimate_ms']:7.2f}ms ({est_pct:4.1f} %) {ratio:8.2f}  {r['per_firing_us']:.1f} µs, "
              f"{r['per_call_us']:.1f} µs ({r['firings']}, {r['calls']})", flush=True)


if __name__ == "__main__":
    main()
