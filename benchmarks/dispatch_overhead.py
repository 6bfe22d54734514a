"""What tracing adds to one fastai event dispatch, in µs: a steadier figure than whole-fit ratios on a noisy VM.

Dispatches one event many times through `learn(event)` (fastai calls every callback; here none of
them has a handler, so this is fastai's bare dispatch), untraced and traced in alternation, and
reports the best round of each (timeit's convention: the least disturbed run).

    .venv/bin/python benchmarks/dispatch_overhead.py [--calls 5000] [--rounds 15]
"""
from __future__ import annotations

import argparse
import timeit
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    import fastai.callback.all  # noqa: F401
    from fastai.test_utils import synth_learner

    import loopviz  # noqa: F401

    learn = synth_learner()
    event = "after_cancel_step"
    n_cbs = len(learn.cbs)

    def one_round(**trace_kwargs) -> float:
        if trace_kwargs is None:
            return timeit.timeit(lambda: learn(event), number=args.calls) / args.calls
        with learn.trace(**trace_kwargs):
            return timeit.timeit(lambda: learn(event), number=args.calls) / args.calls

    best = {"untraced": [], "traced": [], "aggregates only": []}
    for _ in range(args.rounds):
        best["untraced"].append(timeit.timeit(lambda: learn(event), number=args.calls) / args.calls)
        best["traced"].append(one_round(max_calls=10**8, max_firings=10**8))
        best["aggregates only"].append(one_round(max_calls=0, max_firings=0))
    plain = min(best["untraced"])
    print(f"fastai dispatch of `{event}` to {n_cbs} callbacks, none with a handler "
          f"({args.calls:,} calls a round, best of {args.rounds} alternating rounds):")
    for name, values in best.items():
        value = min(values)
        extra = "" if name == "untraced" else (
            f"   +{(value - plain) * 1e6:.2f} µs per event = +{(value - plain) / (n_cbs + 1) * 1e9:.0f} ns per record "
            f"(1 firing + {n_cbs} calls)")
        print(f"  {name:16s} {value * 1e6:7.2f} µs{extra}")


if __name__ == "__main__":
    main()
