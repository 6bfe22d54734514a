"""Tracing cost on the worst-case fit as the minimum of interleaved CPU-time fits: traced / untraced.

Minimums of many interleaved `time.process_time` runs are steady on a noisy machine, where medians of a few
wall-clock fits are not. The learner is the worst case for a tracer: synth_learner, batches of 4, one torch
thread, no progress bar, so fastai's own dispatch is most of the work. With `--changes`, also a trace with
`changes=True`; with fastxtend importable (`pip install --no-deps fastxtend==0.1.7`), its SimpleProfiler as
the peer, by the same method in a process of its own (importing fastxtend patches fastai for every learner,
which would change the other figures).

    .venv/bin/python benchmarks/cpu_time_ratio.py [--runs 15] [--batches 500] [--changes]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from typing import Callable

warnings.filterwarnings("ignore")


def make_learner(batches: int):
    """The worst case: synth_learner with `batches` training batches of 4 and a tenth as many validation ones."""
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_dbunch, synth_learner

    learn = synth_learner(data=synth_dbunch(bs=4, n_train=batches, n_valid=max(batches // 10, 1)))
    learn.remove_cb(ProgressCallback)
    return learn


def cpu_seconds(fit: Callable[[], None]) -> float:
    """CPU seconds of one call of `fit`."""
    start = time.process_time()
    fit()
    return time.process_time() - start


def peer_fit(batches: int) -> tuple[Callable[[], None] | None, str]:
    """A fit under fastxtend's SimpleProfiler on a learner of its own, or None and why not."""
    try:
        from fastxtend.callback import profiler
    except Exception as e:  # fastxtend is optional: any import failure just means no peer figure
        return None, f"{type(e).__name__}: {e}"
    learn = make_learner(batches)
    learn.profile(mode=profiler.ProfileMode.Simple, show_report=False)

    def fit() -> None:
        with learn.no_logging():
            learn.fit(1)

    return fit, ""


def interleaved(configurations: dict[str, Callable[[], None]], runs: int) -> dict[str, float]:
    """The minimum CPU seconds of each configuration over `runs` rounds, one fit of each per round."""
    times: dict[str, list[float]] = {name: [] for name in configurations}
    for fit in configurations.values():  # warm-up
        cpu_seconds(fit)
    for _ in range(runs):
        for name, fit in configurations.items():
            times[name].append(cpu_seconds(fit))
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    """Print each configuration's minimum CPU time and its ratio to the untraced fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="interleaved rounds (one fit of each configuration)")
    parser.add_argument("--batches", type=int, default=500, help="training batches per fit")
    parser.add_argument("--changes", action="store_true", help="also trace with changes=True")
    parser.add_argument("--no-peer", action="store_true", help="skip fastxtend even when it is importable")
    parser.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    learn = make_learner(args.batches)

    def plain() -> None:
        learn.fit(1)

    configurations: dict[str, Callable[[], None]] = {"untraced": plain}
    if args.peer_only:
        peer, why = peer_fit(args.batches)
        if peer is None:
            print(f"  fastxtend SimpleProfiler: not measured ({why})")
            return
        configurations["fastxtend 0.1.7 SimpleProfiler"] = peer
    else:
        import loopviz  # noqa: F401  (patches Learner.trace)

        def traced(**options) -> Callable[[], None]:
            def fit() -> None:
                with learn.trace(**options):
                    learn.fit(1)
            return fit

        configurations["traced"] = traced()
        if args.changes:
            configurations["traced, changes=True"] = traced(changes=True)
    with learn.no_logging():
        best = interleaved(configurations, args.runs)
    if not args.peer_only:
        print(f"synth_learner, bs=4, {args.batches} training batches, one torch thread: minimum CPU time of "
              f"{args.runs} interleaved fits")
    for name, value in best.items():
        if not (args.peer_only and name == "untraced"):
            print(f"  {name:32s} {value * 1e3:8.1f} ms   ratio {value / best['untraced']:.3f}"
                  + ("   (in its own process, against its own untraced fits)" if args.peer_only else ""))
    if not args.peer_only and not args.no_peer:
        subprocess.run([sys.executable, __file__, "--peer-only", "--runs", str(args.runs), "--batches",
                        str(args.batches)], check=False)


if __name__ == "__main__":
    main()
