"""What the live view (`trace(live=True)`) costs a traced fit: the minimum of interleaved CPU-time fits, traced with
and without it, and the live view's own share of the run as the trace records it (its callback's row).

The learner is the worst case for a tracer and for the live view's once-a-second reading of the records: synth_learner,
batches of 4, one torch thread, so fastai's own dispatch is most of the work and firings come fastest; `--mlp` is one
with some compute (an MLP, a few ms a batch). Each fit runs
long enough (`--batches`) for several refreshes of the split (one a second) and a diagnosis (the first after three
seconds); the bar's output goes to /dev/null. `--bar` keeps fastai's progress bar (the split in its comment), else the
live view prints its lines (to /dev/null too).

    .venv/bin/python benchmarks/live_cost.py [--runs 7] [--batches 4000] [--bar] [--mlp]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(__file__))
from cpu_time_ratio import interleaved, make_learner  # noqa: E402


def make_mlp_learner(batches: int):
    """A learner with some compute: an MLP (256 -> 1024 -> 1024 -> 1) on batches of 64 in memory, SGD, no bar (a few
    ms a batch here)."""
    import torch
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from fastai.optimizer import SGD
    from torch import nn
    from torch.utils.data import TensorDataset

    from fastai.callback.progress import ProgressCallback

    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(64 * batches, 256, generator=g), torch.randn(64 * batches, 1, generator=g))
    valid = TensorDataset(torch.randn(64 * max(batches // 10, 1), 256, generator=g),
                          torch.randn(64 * max(batches // 10, 1), 1, generator=g))
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1))
    learn = Learner(DataLoaders.from_dsets(train, valid, bs=64, shuffle=False), model, loss_func=MSELossFlat(),
                    opt_func=SGD)
    if hasattr(learn, "progress"):
        learn.remove_cb(ProgressCallback)
    return learn


def main() -> None:
    """Print each configuration's minimum CPU time, the ratio, and the live view's recorded share of the run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds (one fit of each configuration)")
    parser.add_argument("--batches", type=int, default=4000, help="training batches per fit")
    parser.add_argument("--bar", action="store_true", help="keep fastai's progress bar (the split in its comment)")
    parser.add_argument("--mlp", action="store_true", help="an MLP with a few ms of compute a batch, not the worst case")
    args = parser.parse_args()
    import torch

    import loopviz  # noqa: F401  (patches Learner.trace)

    torch.set_num_threads(1)
    learn = make_mlp_learner(args.batches) if args.mlp else make_learner(args.batches)
    if args.bar:
        from fastai.callback.progress import ProgressCallback

        learn.add_cb(ProgressCallback())
    traces: dict[bool, list] = {False: [], True: []}

    def traced(live: bool) -> Callable[[], None]:
        def fit() -> None:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                with learn.trace(live=live) as t:
                    learn.fit(1)
            traces[live].append(t)
        return fit

    with learn.no_logging():
        started = time.perf_counter()
        best = interleaved({"traced": traced(False), "traced, live=True": traced(True)}, args.runs)
    print(f"{'an MLP, bs=64' if args.mlp else 'synth_learner, bs=4'}, {args.batches} training batches, one torch thread, "
          f"{'progress bar' if args.bar else 'no bar (printed lines)'}: minimum CPU time of {args.runs} interleaved "
          f"fits ({time.perf_counter() - started:.0f} s in all)")
    for name, value in best.items():
        print(f"  {name:20s} {value * 1e3:9.1f} ms   ratio to traced {value / best['traced']:.4f}")
    shares = []
    for t in traces[True]:
        table = t.by_callback()
        own = table[table["callback"] == "LoopvizLive"]
        shares.append((float(own["total_ms"].sum()), float(own["calls"].sum()), t.summary()["total_ms"].sum()))
    spent, calls, _ = min(shares)
    runs_ms = [float(t.data.loop_spans[0][1] - t.data.loop_spans[0][0]) / 1e6 for t in traces[True]]
    print(f"  the live view's own row (LoopvizLive), least of the runs: {spent:.1f} ms in {calls:.0f} calls "
          f"({1e3 * spent / calls:.1f} µs a call), {100 * spent / min(runs_ms):.2f} % of the shortest live run")


if __name__ == "__main__":
    main()
