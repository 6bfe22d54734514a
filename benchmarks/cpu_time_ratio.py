"""Tracing cost as the minimum of interleaved CPU-time fits: traced / untraced on one learner.

Minimums of many interleaved `time.process_time` runs are steady on a noisy machine, where medians of a few
wall-clock fits are not. Run: `python benchmarks/cpu_time_ratio.py [--runs 9] [--batches 125]`.
"""
from __future__ import annotations

import argparse
import time

import torch
from fastai.callback.progress import ProgressCallback
from fastai.test_utils import synth_learner

import loopviz  # noqa: F401  (patches Learner.trace)


def fit_seconds(learn, traced: bool) -> float:
    """CPU seconds of one `fit(1)`, traced or not."""
    start = time.process_time()
    if traced:
        with learn.trace():
            learn.fit(1)
    else:
        learn.fit(1)
    return time.process_time() - start


def main() -> None:
    """Print the minimum CPU time of each and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="interleaved pairs of fits")
    parser.add_argument("--batches", type=int, default=125, help="training batches per fit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    learn = synth_learner(n_trn=args.batches, n_val=max(args.batches // 10, 1))
    learn.remove_cb(ProgressCallback)
    with learn.no_logging():
        fit_seconds(learn, False), fit_seconds(learn, True)  # warm-up
        plain, traced = [], []
        for _ in range(args.runs):
            plain.append(fit_seconds(learn, False))
            traced.append(fit_seconds(learn, True))
    print(f"untraced min {min(plain) * 1e3:.1f} ms, traced min {min(traced) * 1e3:.1f} ms, "
          f"traced/untraced {min(traced) / min(plain):.3f} (min of {args.runs} interleaved CPU-time fits)")


if __name__ == "__main__":
    main()
