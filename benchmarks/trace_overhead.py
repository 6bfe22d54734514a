"""How much tracing slows a fit: the ratio traced/untraced, in one process, medians over repeats.

The worst case on purpose: synth_learner with bs=4 and several hundred batches on CPU with one torch
thread, so there is almost no compute per batch and fastai's own dispatch dominates. Also measures
tracing with a tiny raw-record cap (aggregates only), and fastxtend's SimpleProfiler when it is
importable, as the peer figure.

    .venv/bin/python benchmarks/trace_overhead.py [--batches 500] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def make_learner(batches: int):
    from fastai.test_utils import synth_learner

    learn = synth_learner(n_trn=batches // 4, n_val=max(1, batches // 40))
    learn.dls.train.bs = learn.dls.valid.bs = 4  # 4 items per batch: n_trn*16/4 training batches
    return learn


def timed_fit(learn, trace_kwargs=None, profile=None) -> float:
    with learn.no_bar(), learn.no_logging():
        start = time.perf_counter()
        if trace_kwargs is not None:
            with learn.trace(**trace_kwargs):
                learn.fit(1)
        elif profile is not None:
            profile(learn)
        else:
            learn.fit(1)
        return time.perf_counter() - start


def fastxtend_profile():
    """fastxtend's SimpleProfiler as a fit function, or None when fastxtend cannot be imported."""
    try:
        from fastxtend.callback import profiler  # noqa: F401  (patches fastai when imported)
    except Exception as e:  # fastxtend is optional: any import failure just means no peer figure
        return None, f"{type(e).__name__}: {e}"

    def run(learn):
        learn.profile(mode=profiler.ProfileMode.Simple, show_report=False)
        learn.fit(1)

    return run, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-peer", action="store_true", help="skip fastxtend even if it is installed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import fastai.callback.all  # noqa: F401
    import loopviz  # noqa: F401

    learn = make_learner(args.batches)
    n_train = len(learn.dls.train)
    configs = {"untraced": {}, "traced": {"trace_kwargs": {}},
               "traced, aggregates only": {"trace_kwargs": {"max_calls": 0, "max_firings": 0}},
               "traced + state changes": {"trace_kwargs": {"changes": True}},
               "traced + tensor changes": {"trace_kwargs": {"changes": True, "tensors": True}}}
    times: dict[str, list[float]] = {name: [] for name in configs}
    timed_fit(learn)  # warm-up
    for _ in range(args.repeats):
        for name, kwargs in configs.items():  # interleaved, so drift hits every configuration alike
            times[name].append(timed_fit(learn, **kwargs))
    with learn.trace() as t:
        timed_fit(learn)
    base = statistics.median(times["untraced"])
    print(f"synth_learner, bs=4, {n_train} training + {len(learn.dls.valid)} validation batches, 1 torch thread, "
          f"{args.repeats} repeats (medians)")
    print(f"one traced fit: {t.n_firings:,} event firings, {t.n_calls:,} callback calls")
    for name, values in times.items():
        median = statistics.median(values)
        ratios = [v / u for v, u in zip(values, times["untraced"])]  # each against the untraced fit next to it
        print(f"  {name:26s} {median * 1000:8.1f} ms   ratio of medians {median / base:.3f}   "
              f"median of paired ratios {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    if args.no_peer:
        return
    run, why = fastxtend_profile()
    if run is None:
        print(f"  fastxtend SimpleProfiler: not measured ({why})")
        return
    peer = make_learner(args.batches)
    timed_fit(peer)
    plain, profiled = [], []
    for _ in range(args.repeats):
        plain.append(timed_fit(peer))
        profiled.append(timed_fit(peer, profile=run))
    ratios = [p / u for p, u in zip(profiled, plain)]
    print(f"  {'fastxtend SimpleProfiler':26s} {statistics.median(profiled) * 1000:8.1f} ms   ratio of medians "
          f"{statistics.median(profiled) / statistics.median(plain):.3f}   median of paired ratios "
          f"{statistics.median(ratios):.3f} (vs its own untraced runs, after fastxtend's import-time patches)")


if __name__ == "__main__":
    main()
